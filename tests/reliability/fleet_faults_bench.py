# -*- coding: utf-8 -*-
"""The fleet-under-faults run of test_fleet_faults.py at a scale CI should not pay for every time.

Usage: .venv/bin/python tests/reliability/fleet_faults_bench.py [--subusers 1000] [--rate-429 0.05] [--rate-5xx 0.02]
       [--retry-after 1] [--seed 20240611] [--failing sub0042]

Starts the simulator in this process, builds an inventory for the subusers plugin, runs the real
mailsec.sendgrid.enforce playbook twice (apply, then re-run) and prints the figures: requests, faults
injected, subusers converged, PATCHes of the re-run (must be 0), wall time. Exits non-zero if any
subuser other than --failing did not converge or the re-run wrote anything.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--subusers', type=int, default=1000)
    parser.add_argument('--rate-429', type=float, default=0.05)
    parser.add_argument('--rate-5xx', type=float, default=0.02)
    parser.add_argument('--retry-after', type=float, default=1)
    parser.add_argument('--seed', type=int, default=20240611)
    parser.add_argument('--failing', default='sub0042', help='a subuser answered 503 on every request ("" for none)')
    parser.add_argument('--page-size', type=int, default=500)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Run as a script from anywhere: the tests package (and conftest's collection link) live under ROOT.
    sys.path.insert(0, str(ROOT))
    from tests.conftest import API_KEY, BIN, ansible_env  # pylint: disable=import-outside-toplevel
    from tests.reliability.helpers import COMPLIANT, fault_figures, write_fleet_inventory  # pylint: disable=import-outside-toplevel
    from tests.simulator.sendgrid_sim import Simulator  # pylint: disable=import-outside-toplevel

    retry_after = int(args.retry_after) if float(args.retry_after).is_integer() else args.retry_after
    with tempfile.TemporaryDirectory() as workdir, Simulator(api_keys=(API_KEY,)) as sim:
        names = sim.populate_subusers(args.subusers, drift_mixed=True)
        if args.failing:
            sim.set_settings(args.failing, dict(require_tls=False, require_valid_cert=False, version=1.1))
        inventory = write_fleet_inventory(Path(workdir) / 'inventory', sim.url, plugin_options=dict(page_size=args.page_size))
        sim.random_faults(rate_429=args.rate_429, rate_5xx=args.rate_5xx, seed=args.seed, retry_after=retry_after)
        if args.failing:
            sim.fail_account(args.failing, 503)
        print('%d subusers, 429 rate %.1f%%, 5xx rate %.1f%%, Retry-After %s, always failing: %s' % (
            args.subusers, args.rate_429 * 100, args.rate_5xx * 100, retry_after, args.failing or 'none'))
        problems = []
        for label in ('apply', 're-run'):
            sim.clear_log()
            started = time.monotonic()
            proc = subprocess.run([str(BIN / 'ansible-playbook'), 'mailsec.sendgrid.enforce', '-i', str(inventory)],
                                  env=ansible_env(SENDGRID_API_KEY=API_KEY), capture_output=True, text=True, cwd=workdir,
                                  timeout=3600, check=False)
            elapsed = time.monotonic() - started
            figures = fault_figures(sim)
            converged = sum(1 for name in names if sim.settings(name) == COMPLIANT)
            print('%-6s %6.1f s  rc=%d  %5d requests (%d GET, %d PATCH)  %4d faults injected (%d x 429, %d x 5xx)  '
                  '%d/%d subusers converged' % (label, elapsed, proc.returncode, figures['requests'], figures['gets'],
                                                figures['patches'], figures['faults'], figures['faults_429'],
                                                figures['faults_5xx'], converged, len(names)))
            if converged != len(names) - bool(args.failing):
                problems.append('%s: %d subusers converged, expected %d' % (label, converged, len(names) - bool(args.failing)))
            if label == 're-run' and figures['patches']:
                problems.append('re-run wrote %d PATCHes' % figures['patches'])
            if 'Traceback' in proc.stdout + proc.stderr:
                problems.append('%s: a traceback reached the output' % label)
    for problem in problems:
        print('PROBLEM: ' + problem)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
