# -*- coding: utf-8 -*-
"""What one round of the EDA drift and TLS-blocks sources costs over N subusers at a given API latency.

    .venv/bin/python tests/bench/eda_watch_bench.py [--subusers 1000] [--latency-ms 20] [--requests-per-second N] [--concurrency 4]
        [--rate-limit 600 --rate-window 60]

Prints, per source, the requests of one round, the 429 answers among them and its wall time (the listing of subusers is
read once, then every refresh_interval, so it is shown apart). Without --requests-per-second the watch has no budget
of its own and the client paces from the simulator's X-RateLimit-* answers (with --rate-limit, a fixed window).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.conftest import API_KEY  # noqa: E402  (the collection on the path, the collection loader)
from tests.simulator.sendgrid_sim import Simulator  # noqa: E402

PACKAGE = 'ansible_collections.mailsec.sendgrid.extensions.eda.plugins.'


class _Queue:
    def __init__(self):
        self.events = []

    async def put(self, event):
        self.events.append(event)


def one_round(source, sim, args, own, extra=None):
    watch_module = importlib.import_module(PACKAGE + 'module_utils._watch')
    options = watch_module.check_options(source.NAME, dict(api_key=API_KEY, api_url=sim.url, **args), own)
    if extra:
        extra(options)
    watch = watch_module.Watch(source.NAME, options)
    poll = source._make_poll(options, watch)
    queue = _Queue()
    # The listing first (once an hour by default), then the round itself.
    asyncio.run(watch.subusers())
    listing = sim.clear_log()
    started = time.monotonic()
    asyncio.run(watch.poll_once(queue, poll))
    seconds = time.monotonic() - started
    limited = sim.log_summary()['by_status'].get('429', 0)
    return listing, sim.clear_log(), seconds, len(queue.events), limited


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--subusers', type=int, default=1000)
    parser.add_argument('--latency-ms', type=float, default=20.0)
    parser.add_argument('--requests-per-second', type=float, default=None)
    parser.add_argument('--rate-limit', type=int, default=None, help="the simulator's window: requests per --rate-window")
    parser.add_argument('--rate-window', type=float, default=60.0)
    parser.add_argument('--concurrency', type=int, default=4)
    args = parser.parse_args()
    sim = Simulator(api_keys=(API_KEY,), latency=args.latency_ms / 1000)
    sim.populate_subusers(args.subusers, drift_mixed=True)
    if args.rate_limit:
        sim.set_rate_limit(args.rate_limit, args.rate_window)
    sim.start()
    try:
        drift = importlib.import_module(PACKAGE + 'event_source.enforced_tls_drift')
        blocks = importlib.import_module(PACKAGE + 'event_source.tls_blocks')
        common = dict(requests_per_second=args.requests_per_second, concurrency=args.concurrency)

        def desired(options):
            options['desired'] = drift.desired_state(options)
        for source, own, extra, more in (
                (drift, dict(drift.POLICY_ARGUMENT_SPEC, repeat_drift_after=dict(type='float', default=3600.0)), desired,
                 dict(require_tls=True, require_valid_cert=True, version='1.2')),
                (blocks, dict(page_size=dict(type='int', default=500), max_pages=dict(type='int', default=200)), None, {})):
            listing, requests, seconds, events, limited = one_round(source, sim, dict(common, **more), own, extra)
            print('%s: %d subusers, latency %g ms, concurrency %d, %s requests/s, rate limit %s: listing %d requests; one '
                  'round %d requests (%d answered 429) in %.1f s (%d events)' % (
                      source.NAME, args.subusers, args.latency_ms, args.concurrency, args.requests_per_second or 'unbudgeted',
                      '%d per %g s' % (args.rate_limit, args.rate_window) if args.rate_limit else 'none', listing, requests,
                      limited, seconds, events))
    finally:
        sim.stop()


if __name__ == '__main__':
    main()
