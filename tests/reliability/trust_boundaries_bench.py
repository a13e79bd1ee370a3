# -*- coding: utf-8 -*-
"""Wall time and peak memory of runs against the hostile endpoints of test_trust_boundaries.py (measured, not asserted there).

Usage: .venv/bin/python tests/reliability/trust_boundaries_bench.py [--timeout 5] [--only endless,drip_body,...]

For each endpoint of tests/reliability/hostile.py: one real ``ansible-playbook`` run of mailsec.sendgrid.enforced_tls_info
(``timeout``, ``max_retries: 0``) and, for never-ending pages, one ``ansible-inventory --list`` of the subusers plugin.
The peak RSS is that of the whole process tree (ansible-playbook, its workers and the module's Python), sampled from
/proc every 20 ms. Prints one line per run and exits non-zero when a run takes 60 s or more, or exceeds 400 MB
(ansible-playbook) / 1 GB (ansible-inventory).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = os.sysconf('SC_PAGE_SIZE')


def _children():
    """{parent pid: [child pids]} of every process now."""
    tree = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as stat:
                fields = stat.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def _rss(pid):
    try:
        with open('/proc/%d/statm' % pid) as statm:
            return int(statm.read().split()[1]) * PAGE
    except OSError:
        return 0


def tree_rss(root):
    tree = _children()
    pids, total = [root], 0
    while pids:
        pid = pids.pop()
        total += _rss(pid)
        pids.extend(tree.get(pid, ()))
    return total


def measure(cmd, env, cwd):
    """(wall seconds, peak RSS bytes of the tree, completed process)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], tree_rss(proc.pid))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate(timeout=600)
    elapsed = time.monotonic() - started
    done.set()
    sampler.join()
    return elapsed, peak[0], proc.returncode, stdout + stderr


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--timeout', type=float, default=5)
    parser.add_argument('--only', default='', help='comma-separated endpoint names')
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import yaml  # pylint: disable=import-outside-toplevel
    from tests.conftest import API_KEY, BIN, ansible_env  # pylint: disable=import-outside-toplevel
    from tests.reliability import hostile  # pylint: disable=import-outside-toplevel
    from tests.reliability.raw_server import RawServer  # pylint: disable=import-outside-toplevel

    playbook_endpoints = dict(endless=hostile.endless_chunked, drip_body=hostile.DRIP_BODY, drip_head=hostile.DRIP_HEAD,
                              huge=hostile.huge_body(True), huge_unannounced=hostile.huge_body(False), echo=hostile.echo,
                              escaping=hostile.escaping_errors)
    only = set(filter(None, args.only.split(',')))
    problems = []
    env = ansible_env(SENDGRID_API_KEY=API_KEY)
    with tempfile.TemporaryDirectory() as workdir:
        for name, behaviour in playbook_endpoints.items():
            if only and name not in only:
                continue
            with RawServer(behaviour, lifetime=300, io_timeout=10) as server:
                playbook = Path(workdir) / ('%s.yml' % name)
                playbook.write_text(yaml.safe_dump([dict(hosts='localhost', gather_facts=False, tasks=[{
                    'mailsec.sendgrid.enforced_tls_info': dict(api_url=server.url, timeout=args.timeout, max_retries=0)}])]))
                elapsed, peak, rc, output = measure([str(BIN / 'ansible-playbook'), str(playbook), '-i', 'localhost,', '-c', 'local'],
                                                    env, workdir)
            message = next((line for line in output.splitlines() if '"msg"' in line), '(no message)')
            print('ansible-playbook  %-17s %5.1f s  peak RSS %4d MB  rc=%d  %s' % (name, elapsed, peak // 2 ** 20, rc, message[:160]))
            if elapsed >= 60 or peak >= 400 * 10 ** 6 or rc == 0:
                problems.append(name)
        for name, behaviour in (('endless_pages', hostile.endless_pages), ('same_page', hostile.same_page),
                                ('fat_pages', hostile.fat_pages(8000))):
            if only and name not in only:
                continue
            with RawServer(behaviour, lifetime=300, max_connections=100000) as server:
                source = Path(workdir) / ('%s.sendgrid.yml' % name)
                source.write_text(yaml.safe_dump(dict(plugin='mailsec.sendgrid.subusers', api_url=server.url, timeout=args.timeout,
                                                      max_retries=0)))
                elapsed, peak, rc, output = measure([str(BIN / 'ansible-inventory'), '-i', str(source), '--list'],
                                                    dict(env, ANSIBLE_INVENTORY_UNPARSED_FAILED='true'), workdir)
                requests = len(server.requests)
            message = next((line for line in output.splitlines() if 'GET /v3/subusers' in line), '(no message)')
            print('ansible-inventory %-17s %5.1f s  peak RSS %4d MB  rc=%d  %d requests  %s' % (
                name, elapsed, peak // 2 ** 20, rc, requests, message.strip()[:160]))
            if elapsed >= 60 or peak >= 10 ** 9 or rc == 0:
                problems.append(name)
    for problem in problems:
        print('PROBLEM: ' + problem)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
