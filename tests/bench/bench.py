# -*- coding: utf-8 -*-
"""make bench: the enforce playbook on the simulator (20 ms latency per request), against Ansible's floor and naive uri.

Why three baselines:
- Ansible's floor: the default (per-subuser) mode runs one task per host, so it cannot be faster than Ansible's own
  per-host cost. The floor is the localhost guard, then a plain play over sendgrid_subusers (same inventory plugin,
  extra vars and forks) of a role with the same meta/argument_specs.yml and one ansible.builtin.debug task, nothing
  else. default / floor is everything the role and the enforce playbook add on top of Ansible.
- Batch mode (-e enforced_tls_policy_batch=true): one run_once task for the play batch, for fleets in the thousands.
- Naive: tests/bench/naive.yml, two ansible.builtin.uri tasks per subuser, what a team writes without the collection.
Role and floor runs use Ansible's default forks (5), as users would; naive uses --forks 5. A default run and its floor
run are measured back to back on the same simulator (the floor writes nothing), so machine noise hits both alike.
Each mode at each size starts from a fresh simulator with every subuser drifted: check run, first apply, second apply.

Not a test: the machine is shared and noisy, so compare the ratios of one run, not absolute figures across runs.
Noise only ever adds time, so each figure is the fastest of --repeat measurements (each on a fresh simulator) at
100 subusers or fewer, and of --repeat-large above that.
Usage: python tests/bench/bench.py [--sizes 100,1000] [--naive-sizes 100] [--latency-ms 20] [--repeat 3] [--repeat-large 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KEY = 'bench-key'
POLICY = dict(enforced_tls_policy_require_tls=True, enforced_tls_policy_require_valid_cert=True, enforced_tls_policy_version='1.2')
RUNS = ('check', 'first', 'second')
RUN_LABELS = dict(check='check run', first='first apply (all drifted)', second='second apply (unchanged)')
TARGET_SIZE, NAIVE_SIZE = 1000, 100


class SimulatorProcess:
    def __init__(self, subusers, latency_ms, workdir, options=()):
        """options: more of the simulator's command-line options (a rate limit, say)."""
        url_file = Path(workdir) / 'url'
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, str(ROOT / 'tests/simulator/sendgrid_sim.py'), '--subusers', str(subusers), '--latency-ms', str(latency_ms),
             '--api-key', KEY, '--url-file', str(url_file), *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def write_inventory(workdir, url):
    """The subusers inventory source of the simulator at ``url``, in workdir; returns its path."""
    inventory = Path(workdir) / 'bench.sendgrid.yml'
    inventory.write_text('plugin: mailsec.sendgrid.subusers\napi_url: %s\n' % url)
    return inventory


def write_floor(workdir):
    """The floor playbook and role in workdir; returns the playbook path (the role is found through ANSIBLE_ROLES_PATH).

    The role is the plain floor: the real role's meta/argument_specs.yml (Ansible validates a role's arguments in a task of
    its own on every host) and one debug task, nothing else, so default / floor shows all the role costs on top of that.
    """
    role = Path(workdir) / 'roles/floor_policy'
    (role / 'tasks').mkdir(parents=True)
    shutil.copytree(ROOT / 'roles/enforced_tls_policy/meta', role / 'meta')
    (role / 'tasks/main.yml').write_text(yaml.safe_dump([
        {'name': 'Floor: one debug task', 'ansible.builtin.debug': {'msg': '{{ inventory_hostname }}'}}], sort_keys=False))
    playbook = Path(workdir) / 'floor.yml'
    playbook.write_text(yaml.safe_dump([
        {'name': 'Check that there are subusers to work on', 'hosts': 'localhost', 'gather_facts': False,
         'tasks': [{'name': 'Fail closed on an empty or failed inventory',
                    'ansible.builtin.import_tasks': str(ROOT / 'playbooks/tasks/require_subusers.yml')}]},
        {'name': 'Floor over the subusers', 'hosts': 'sendgrid_subusers', 'gather_facts': False, 'roles': [{'role': 'floor_policy'}]},
    ], sort_keys=False))
    return str(playbook)


def playbook_env(sim, workdir):
    """The environment of an ansible-playbook run against the simulator, with the collection of this working tree."""
    return dict(os.environ, SENDGRID_API_KEY=KEY, SENDGRID_API_URL=sim.url, ANSIBLE_NOCOLOR='1', ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false',
                ANSIBLE_COLLECTIONS_PATH=str(ROOT / '.tmp/collections'), ANSIBLE_ROLES_PATH=str(Path(workdir) / 'roles'),
                PATH=str(BIN) + os.pathsep + os.environ['PATH'])


def run(args, sim, workdir):
    """One ansible-playbook run: (wall seconds, GETs, PATCHes)."""
    env = playbook_env(sim, workdir)
    sim.take_counts()
    start = time.monotonic()
    proc = subprocess.run([str(BIN / 'ansible-playbook'), *args], env=env, cwd=workdir, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError('ansible-playbook %s failed:\n%s' % (' '.join(args), proc.stdout[-3000:] + proc.stderr[-3000:]))
    gets, patches = sim.take_counts()
    return elapsed, gets, patches


def measure(mode, size, latency_ms):
    """{run: (s, GET, PATCH)} for mode 'naive' or 'batch'; for 'default', also {'floor ' + run: ...} for each run."""
    with tempfile.TemporaryDirectory() as workdir:
        sim = SimulatorProcess(size, latency_ms, workdir)
        try:
            inventory = write_inventory(workdir, sim.url)
            if mode == 'naive':
                play = [str(ROOT / 'tests/bench/naive.yml'), '-i', str(inventory), '--forks', '5']
                return {name: run(play, sim, workdir) for name in ('first', 'second')}
            play = ['mailsec.sendgrid.enforce', '-i', str(inventory), '-e', json.dumps(POLICY)]
            if mode == 'batch':
                play += ['-e', json.dumps(dict(enforced_tls_policy_batch=True))]
            floor = [write_floor(workdir), *play[1:]] if mode == 'default' else None
            result = {}
            for name in RUNS:
                extra = ['--check'] if name == 'check' else []
                result[name] = run(play + extra, sim, workdir)
                if floor:
                    result['floor ' + name] = run(floor + extra, sim, workdir)
            return result
        finally:
            sim.stop()


def fastest(mode, size, latency_ms, repeat):
    """measure() repeated on fresh simulators; for each run the fastest measurement (its counts must not vary)."""
    best = measure(mode, size, latency_ms)
    for dummy in range(repeat - 1):
        for name, figures in measure(mode, size, latency_ms).items():
            if figures[1:] != best[name][1:]:
                raise RuntimeError('%s %s at %d: request counts differ between repeats: %s, %s' % (mode, name, size, figures, best[name]))
            best[name] = min(best[name], figures)
    return best


def counts(figures):
    return '%d / %d' % figures[1:]


def faster(naive, result, name):
    return naive[name][0] / result[name][0] if naive and name in naive else None


def show(ratio, fmt):
    return fmt % ratio if ratio is not None else '—'


def verdicts(default, batch, naive):
    """[(target, figures, met or None when not measured)]."""
    out = []
    at = default.get(TARGET_SIZE)
    ratios = {name: at[name][0] / at['floor ' + name][0] for name in RUNS} if at else {}
    out.append(('default / floor ≤ 1.3 at 1,000 (check, first, second)', ', '.join('%s %.2f' % kv for kv in ratios.items()),
                all(r <= 1.3 for r in ratios.values()) if ratios else None))
    for label, results, factor in (('default', default, 8), ('batch', batch, 20)):
        speedups = {name: faster(naive.get(NAIVE_SIZE), results.get(NAIVE_SIZE), name) for name in ('first', 'second')
                    if NAIVE_SIZE in naive and NAIVE_SIZE in results}
        out.append(('%s ≥ %d× faster than naive at 100 (first, second)' % (label, factor), ', '.join('%s %.1f×' % kv for kv in speedups.items()),
                    all(s >= factor for s in speedups.values()) if speedups else None))
    at = batch.get(TARGET_SIZE)
    for names, limit in ((('first',), 10), (('second', 'check'), 7)):
        out.append(('batch %s ≤ %d s at 1,000' % (' and '.join(names), limit), ', '.join('%s %.1f s' % (n, at[n][0]) for n in names) if at else '',
                    all(at[n][0] <= limit for n in names) if at else None))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', default='100,1000', help='subuser counts for the default and batch modes (and the floor)')
    parser.add_argument('--naive-sizes', default='100')
    parser.add_argument('--latency-ms', type=int, default=20)
    parser.add_argument('--repeat', type=int, default=3, help='measurements per figure at 100 subusers or fewer (the fastest counts)')
    parser.add_argument('--repeat-large', type=int, default=2, help='measurements per figure above 100 subusers')
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(',') if s]

    def measured(mode, size):
        return fastest(mode, size, options.latency_ms, max(1, options.repeat if size <= 100 else options.repeat_large))
    naive = {size: measured('naive', size) for size in [int(s) for s in options.naive_sizes.split(',') if s]}
    default = {size: measured('default', size) for size in sizes}
    batch = {size: measured('batch', size) for size in sizes}

    print('Simulator latency %d ms per request; role and floor at default forks (5), naive --forks 5. '
          'GET counts include the inventory plugin\'s GET /v3/subusers pages (and the preflight\'s GET). '
          'Each figure is the fastest of %d runs at 100 subusers or fewer, of %d above.\n'
          % (options.latency_ms, options.repeat, options.repeat_large))
    print('### Default mode (per subuser) against Ansible\'s floor\n')
    print('| subusers | run | default (s) | GET / PATCH | floor (s) | floor GET / PATCH | default / floor | vs naive |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- |')
    for size, result in default.items():
        for name in RUNS:
            floor = result['floor ' + name]
            print('| %d | %s | %.1f | %s | %.1f | %s | %.2f | %s |' % (
                size, RUN_LABELS[name], result[name][0], counts(result[name]), floor[0], counts(floor), result[name][0] / floor[0],
                show(faster(naive.get(size), result, name), '%.1f× faster')))

    print('\n### Batch mode (-e enforced_tls_policy_batch=true)\n')
    print('| subusers | check run (s) | GET / PATCH (check) | first apply (s) | GET / PATCH (first) | second apply (s) '
          '| GET / PATCH (second) | first vs naive | second vs naive |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for size, result in batch.items():
        print('| %d | %.1f | %s | %.1f | %s | %.1f | %s | %s | %s |' % (
            size, result['check'][0], counts(result['check']), result['first'][0], counts(result['first']), result['second'][0],
            counts(result['second']), *(show(faster(naive.get(size), result, name), '%.1f× faster') for name in ('first', 'second'))))

    print('\n### Naive (two ansible.builtin.uri tasks per subuser)\n')
    print('| subusers | first apply (s) | GET / PATCH (first) | second apply (s) | GET / PATCH (second) |')
    print('| --- | --- | --- | --- | --- |')
    for size, result in naive.items():
        print('| %d | %.1f | %s | %.1f | %s |' % (size, result['first'][0], counts(result['first']), result['second'][0], counts(result['second'])))

    print('\n### Targets\n')
    outcome = verdicts(default, batch, naive)
    for target, figures, met in outcome:
        print('- %s: %s%s' % (target, {True: 'met', False: 'MISSED', None: 'not measured'}[met], ' (%s)' % figures if figures else ''))
    met_count = sum(met is True for dummy, dummy2, met in outcome)
    partial = '' if all(met is not None for dummy, dummy2, met in outcome) else ' (some not measured with these --sizes)'
    print('\nTargets met: %d of %d%s.' % (met_count, len(outcome), partial))


if __name__ == '__main__':
    main()
