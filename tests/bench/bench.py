# -*- coding: utf-8 -*-
"""make bench: the role against the naive two-uri-tasks-per-subuser playbook, on the simulator with 20 ms latency.

Prints a Markdown table (wall seconds; GET/PATCH counts from the simulator's log). Not a test: the machine is
shared and noisy, so compare the ratios of one run, not absolute figures across runs.
Usage: python tests/bench/bench.py [--sizes 100,1000] [--naive-sizes 100] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KEY = 'bench-key'
POLICY = dict(enforced_tls_policy_require_tls=True, enforced_tls_policy_require_valid_cert=True, enforced_tls_policy_version='1.2')


class SimulatorProcess:
    def __init__(self, subusers, latency_ms, workdir):
        url_file = Path(workdir) / 'url'
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, str(ROOT / 'tests/simulator/sendgrid_sim.py'), '--subusers', str(subusers), '--latency-ms', str(latency_ms),
             '--api-key', KEY, '--url-file', str(url_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not url_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError('the simulator did not start')
            time.sleep(0.05)
        self.url = url_file.read_text().strip()

    def take_counts(self):
        with urllib.request.urlopen(self.url + '/_sim/log?summary=1') as answer:
            by_method = json.load(answer)['by_method']
        urllib.request.urlopen(urllib.request.Request(self.url + '/_sim/reset-log', method='POST')).close()
        return by_method.get('GET', 0), by_method.get('PATCH', 0)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def run(args, sim, workdir):
    env = dict(os.environ, SENDGRID_API_KEY=KEY, SENDGRID_API_URL=sim.url, ANSIBLE_NOCOLOR='1',
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / '.tmp/collections'), PATH=str(BIN) + os.pathsep + os.environ['PATH'])
    sim.take_counts()
    start = time.monotonic()
    proc = subprocess.run([str(BIN / 'ansible-playbook'), *args], env=env, cwd=workdir, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError('ansible-playbook %s failed:\n%s' % (' '.join(args), proc.stdout[-3000:] + proc.stderr[-3000:]))
    gets, patches = sim.take_counts()
    return elapsed, gets, patches


def measure(mode, size, latency_ms):
    with tempfile.TemporaryDirectory() as workdir:
        sim = SimulatorProcess(size, latency_ms, workdir)
        try:
            inventory = Path(workdir) / 'bench.sendgrid.yml'
            inventory.write_text('plugin: mailsec.sendgrid.subusers\napi_url: %s\n' % sim.url)
            sim.take_counts()
            if mode == 'naive':
                play = [str(ROOT / 'tests/bench/naive.yml'), '-i', str(inventory), '--forks', '5']
                check = None
            else:
                play = ['mailsec.sendgrid.enforce', '-i', str(inventory), '-e', json.dumps(POLICY)]
                check = run(play + ['--check'], sim, workdir)
            first = run(play, sim, workdir)
            second = run(play, sim, workdir)
        finally:
            sim.stop()
    return dict(check=check, first=first, second=second)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', default='100,1000')
    parser.add_argument('--naive-sizes', default='100')
    parser.add_argument('--latency-ms', type=int, default=20)
    options = parser.parse_args()
    rows = []
    naive = {}
    for size in [int(s) for s in options.naive_sizes.split(',') if s]:
        naive[size] = measure('naive', size, options.latency_ms)
        rows.append(('naive', size, naive[size]))
    for size in [int(s) for s in options.sizes.split(',') if s]:
        rows.append(('role', size, measure('role', size, options.latency_ms)))

    print('| subusers | mode | check run (s) | first apply, all drifted (s) | second apply, unchanged (s) '
          '| GET / PATCH (first) | GET / PATCH (second) | first apply vs naive | second apply vs naive |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for mode, size, result in rows:
        check = result['check']
        base = naive.get(size)
        ratio = [('%.1f× faster' % (base[k][0] / result[k][0]) if base and mode != 'naive' else '—') for k in ('first', 'second')]
        print('| %d | %s | %s | %.1f | %.1f | %d / %d | %d / %d | %s | %s |' % (
            size, mode, '%.1f (%d / %d)' % check if check else '—', result['first'][0], result['second'][0],
            result['first'][1], result['first'][2], result['second'][1], result['second'][2], ratio[0], ratio[1]))
    print('\n(GET counts include the inventory plugin\'s GET /v3/subusers pages.)')


if __name__ == '__main__':
    main()
