# -*- coding: utf-8 -*-
"""Where a per-subuser run's time goes: each task of the enforce playbook and of Ansible's floor, per host.

bench.py gives default / floor for whole runs; this splits them by task. For each task over the subusers it prints the
task's wall time and the median time of one host's run of it (from the worker's start to its result, callback
tests/bench/callback_plugins/host_task_times.py), for the floor's debug task and for the role's converge task on a
first apply (every subuser drifted: a GET and a PATCH each) and an unchanged apply (a GET each). The converge task's
per-host time, less the floor's debug task's, less the simulator's latency times the requests a host makes, is what the
role's own work costs a host; forks (5) hosts are in flight at once, so a task's wall time is about hosts x per-host
time / forks.

Not a test: the machine is shared and noisy (compare the figures of one run). Each figure is the fastest of --repeat.
Usage: python tests/bench/host_tasks.py [--subusers 300] [--latency-ms 20] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.bench import POLICY, SimulatorProcess, run, write_floor, write_inventory  # noqa: E402  pylint: disable=wrong-import-position

HERE = Path(__file__).resolve().parent
# (label, playbook, the task timed, PATCH requests a host makes): every subuser drifted at the start, so the first
# apply PATCHes each one and the second none; each makes one GET in the role (none in the floor).
RUNS = (('floor', 'floor', 'Floor: one debug task', 0), ('first apply', 'default', 'Converge Enforced TLS', 1),
        ('unchanged apply', 'default', 'Converge Enforced TLS', 0))


def measure(subusers, latency_ms):
    """{run label: (task wall s, median per-host ms)} for one fresh simulator (floor, first apply, unchanged apply)."""
    out = {}
    with tempfile.TemporaryDirectory() as workdir:
        sim = SimulatorProcess(subusers, latency_ms, workdir)
        try:
            inventory = write_inventory(workdir, sim.url)
            play = ['mailsec.sendgrid.enforce', '-i', str(inventory), '-e', json.dumps(POLICY)]
            playbooks = dict(floor=[write_floor(workdir), *play[1:]], default=play)
            times = Path(workdir) / 'times.jsonl'
            os.environ.update(HOST_TASK_TIMES=str(times), ANSIBLE_CALLBACK_PLUGINS=str(HERE / 'callback_plugins'),
                              ANSIBLE_CALLBACKS_ENABLED='host_task_times')
            for label, which, task, patches in RUNS:
                times.write_text('')
                dummy, gets, sent = run(playbooks[which], sim, workdir)
                # The network column assumes these counts: a run that did otherwise would mislabel its figures.
                if sent != patches * subusers or (which == 'default' and gets < subusers):
                    raise RuntimeError('%s: %d GET / %d PATCH, expected %d PATCH and a GET a subuser'
                                       % (label, gets, sent, patches * subusers))
                rows = [json.loads(line) for line in times.read_text().splitlines()]
                row = next(r for r in rows if r['task'].endswith(task) and len(r['durations']) == subusers)
                out[label] = (row['wall'], statistics.median(row['durations']) * 1000)
        finally:
            sim.stop()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--subusers', type=int, default=300)
    parser.add_argument('--latency-ms', type=int, default=20)
    parser.add_argument('--repeat', type=int, default=2)
    options = parser.parse_args()
    best = {}
    for dummy in range(options.repeat):
        for label, figures in measure(options.subusers, options.latency_ms).items():
            best[label] = min(best.get(label, figures), figures)
    floor_ms = best['floor'][1]
    print('%d subusers, simulator latency %d ms a request, default forks (5); fastest of %d.\n'
          % (options.subusers, options.latency_ms, options.repeat))
    print('| run | task | task wall (s) | per host (ms, median) | requests a host x latency (ms) | the rest, over the floor\'s task (ms) |')
    print('| --- | --- | --- | --- | --- | --- |')
    for label, which, task, patches in RUNS:
        wall, per_host = best[label]
        network = (0 if which == 'floor' else 1 + patches) * options.latency_ms
        rest = '—' if which == 'floor' else '%.1f' % (per_host - floor_ms - network)
        print('| %s | %s | %.2f | %.1f | %d | %s |' % (label, task, wall, per_host, network, rest))


if __name__ == '__main__':
    main()
