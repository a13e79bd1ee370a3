# -*- coding: utf-8 -*-
"""A fleet at SendGrid's rate limit: the enforce playbook on a simulator that enforces a fixed window.

Each scenario starts a fresh simulator (--subusers drifted subusers, --latency-ms per request, a window of --rate-limit
requests per --rate-window seconds, X-RateLimit-* on every answer) and runs mailsec.sendgrid.enforce with --forks:
- default: the per-subuser mode (each host in its own worker process: the pace is shared through the run's directory);
- batch: -e enforced_tls_policy_batch=true (the task's threads share the client's pace);
- batch-seconds: batch mode with X-RateLimit-Reset sent as seconds until the reset instead of an epoch;
- two-runs: two default-mode runs at once on one key, each with --limit on half the subusers (two AWX job slices):
  they share nothing but the server's counter.
For each: subusers converged, requests, 429 answers (and their share), wall time, and the floor = requests served
(answers other than 429) / allowed rate (rate-limit / rate-window); the target is every subuser converged, at most
--max-429-percent of the requests answered 429, and wall <= --max-ratio x (floor + one window).
Then a micro-benchmark of what the pacing costs a request when the limit is far (it must cost nothing).

Not a test: the machine is shared and noisy. Exits 1 if a target is missed.
Usage: python tests/bench/ratelimit_bench.py [--subusers 300] [--rate-limit 50] [--rate-window 5] [--latency-ms 20] [--forks 50]
       [--scenarios default,batch,batch-seconds,two-runs] [--micro-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path

from bench import BIN, POLICY, ROOT, SimulatorProcess, playbook_env, write_inventory

COMPLIANT = dict(require_tls=True, require_valid_cert=True, version=1.2)
SCENARIOS = ('default', 'batch', 'batch-seconds', 'two-runs')


def get(sim, path):
    with urllib.request.urlopen(sim.url + path) as answer:
        return json.load(answer)


def scenario(name, options):
    """{converged, requests, 429, wall, failed runs}: one scenario on a fresh simulator."""
    style = 'seconds' if name == 'batch-seconds' else 'epoch'
    with tempfile.TemporaryDirectory() as workdir:
        sim = SimulatorProcess(options.subusers, options.latency_ms, workdir, [
            '--rate-limit', str(options.rate_limit), '--rate-window', str(options.rate_window), '--reset-style', style])
        try:
            inventory = write_inventory(workdir, sim.url)
            play = [str(BIN / 'ansible-playbook'), 'mailsec.sendgrid.enforce', '-i', str(inventory), '-e', json.dumps(POLICY),
                    '--forks', str(options.forks)]
            if name.startswith('batch'):
                play += ['-e', json.dumps(dict(enforced_tls_policy_batch=True))]
            half = options.subusers // 2
            runs = [play + ['--limit', 'sendgrid_subusers[0:%d]' % (half - 1)], play + ['--limit', 'sendgrid_subusers[%d:]' % half]] \
                if name == 'two-runs' else [play]
            env = playbook_env(sim, workdir)
            get(sim, '/_sim/log?summary=1')
            urllib.request.urlopen(urllib.request.Request(sim.url + '/_sim/reset-log', method='POST')).close()
            start = time.monotonic()
            procs = [subprocess.Popen(  # pylint: disable=consider-using-with
                run, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for run in runs]
            outputs = [proc.communicate()[0] for proc in procs]
            wall = time.monotonic() - start
            summary = get(sim, '/_sim/log?summary=1')
            state = get(sim, '/_sim/state')['subusers']
            failed = [output[-2000:] for proc, output in zip(procs, outputs) if proc.returncode != 0]
        finally:
            sim.stop()
    return dict(converged=sum(settings == COMPLIANT for settings in state.values()), requests=summary['total'],
                limited=summary['by_status'].get('429', 0), wall=wall, failed=failed)


def micro(count=20000):
    """Microseconds the pacing adds to one request (before + after), far from the limit and without headers."""
    sys.path.insert(0, str(ROOT / '.tmp/collections'))
    from ansible_collections.mailsec.sendgrid.plugins.module_utils._pacing import Pace
    from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._pace_shared import shared_pace
    from requests.structures import CaseInsensitiveDict

    # A window so large that the timed requests never spend half of it (each one counts in the pace's estimate).
    far = CaseInsensitiveDict({'X-RateLimit-Limit': '1000000', 'X-RateLimit-Remaining': '999999', 'X-RateLimit-Reset': str(int(time.time()) + 3600),
                               'Content-Type': 'application/json'})
    none = CaseInsensitiveDict({'Content-Type': 'application/json'})
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for label, pace, headers in (('in-process pace, no rate-limit headers (the simulator without a limit)', Pace(), none),
                                     ('in-process pace, Remaining far from 0 (batch mode, modules)', Pace(), far),
                                     ('shared pace in the run directory, Remaining far (per-subuser mode)',
                                      shared_pace(str(Path(workdir) / 'pace')), far)):
            def one(pace=pace, headers=headers):
                pace.before(time.sleep)
                pace.after(headers, 200)
            seconds = min(timeit.repeat(one, number=count // 10, repeat=3)) / (count // 10)
            rows.append((label, seconds * 1e6))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--subusers', type=int, default=300)
    parser.add_argument('--rate-limit', type=int, default=50)
    parser.add_argument('--rate-window', type=float, default=5.0)
    parser.add_argument('--latency-ms', type=float, default=20)
    parser.add_argument('--forks', type=int, default=50)
    parser.add_argument('--scenarios', default=','.join(SCENARIOS))
    parser.add_argument('--max-429-percent', type=float, default=2.0)
    parser.add_argument('--max-ratio', type=float, default=1.25)
    parser.add_argument('--micro-only', action='store_true')
    options = parser.parse_args()
    rate = options.rate_limit / options.rate_window
    missed = 0
    if not options.micro_only:
        print('%d drifted subusers, window %d requests / %g s (%.1f requests/s), latency %g ms, forks %d.\n'
              % (options.subusers, options.rate_limit, options.rate_window, rate, options.latency_ms, options.forks))
        print('| scenario | converged | requests | 429 | 429 % | wall (s) | floor (s) | wall / (floor + window) | target |')
        print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
        for name in options.scenarios.split(','):
            figures = scenario(name, options)
            floor = (figures['requests'] - figures['limited']) / rate
            share = 100.0 * figures['limited'] / max(1, figures['requests'])
            ratio = figures['wall'] / (floor + options.rate_window)
            met = (figures['converged'] == options.subusers and share <= options.max_429_percent and ratio <= options.max_ratio
                   and not figures['failed'])
            missed += not met
            print('| %s | %d / %d | %d | %d | %.1f | %.1f | %.1f | %.2f | %s |' % (
                name, figures['converged'], options.subusers, figures['requests'], figures['limited'], share, figures['wall'], floor,
                ratio, 'met' if met else 'MISSED'), flush=True)
            for output in figures['failed']:
                print('\n  a run of %s failed:\n%s\n' % (name, output))
    print('\nPacing cost per request (before + after, fastest of 3):\n')
    for label, microseconds in micro():
        print('- %s: %.1f µs' % (label, microseconds))
    return 1 if missed else 0


if __name__ == '__main__':
    sys.exit(main())
