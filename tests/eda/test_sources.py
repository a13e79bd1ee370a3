# -*- coding: utf-8 -*-
"""The event sources enforced_tls_drift and tls_blocks, each with a mock queue against the real simulator."""

from __future__ import annotations

import asyncio
import importlib
import time

import pytest

from tests.conftest import API_KEY
from tests.simulator.sendgrid_sim import COMPLIANT_SETTINGS, DEFAULT_SETTINGS, ENFORCED_TLS_PATH, TLS_BLOCK_REASON

PACKAGE = 'ansible_collections.mailsec.sendgrid.extensions.eda.plugins.'
drift_source = importlib.import_module(PACKAGE + 'event_source.enforced_tls_drift')
blocks_source = importlib.import_module(PACKAGE + 'event_source.tls_blocks')
watch_module = importlib.import_module(PACKAGE + 'module_utils._watch')
POLICY = dict(require_tls=True, require_valid_cert=True, version='1.2')


class MockQueue:
    """What a source sees of ansible-rulebook's queue: put()."""

    def __init__(self):
        self.events = []

    async def put(self, event):
        self.events.append(event)

    def of(self, kind):
        return [event['sendgrid'] for event in self.events if event['sendgrid']['type'] == kind]


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    for name in ('SENDGRID_API_KEY', 'SENDGRID_REGION', 'SENDGRID_API_URL'):
        monkeypatch.delenv(name, raising=False)


def drift_watch(sim, **args):
    """A drift watch and its poll, as main() builds them, for rounds driven one at a time."""
    own = dict(drift_source.POLICY_ARGUMENT_SPEC, repeat_drift_after=dict(type='float', default=3600.0))
    options = watch_module.check_options(drift_source.NAME, dict(dict(api_key=API_KEY, api_url=sim.url, **POLICY), **args), own)
    options['desired'] = drift_source.desired_state(options)
    watch = watch_module.Watch(drift_source.NAME, options)
    return watch, drift_source._make_poll(options, watch)


def blocks_watch(sim, started, **args):
    own = dict(page_size=dict(type='int', default=500), max_pages=dict(type='int', default=200))
    options = watch_module.check_options(blocks_source.NAME, dict(dict(api_key=API_KEY, api_url=sim.url), **args), own)
    watch = watch_module.Watch(blocks_source.NAME, options)
    return watch, blocks_source._make_poll(options, watch, started=started)


def rounds(watch, poll, count, queue=None):
    queue = queue or MockQueue()

    async def run():
        for _round in range(count):
            await watch.poll_once(queue, poll)
    asyncio.run(run())
    return queue


def test_drift_once_and_compliant_once(sim):
    sim.add_subuser('ok', settings=dict(COMPLIANT_SETTINGS))
    sim.add_subuser('off', settings=dict(DEFAULT_SETTINGS))
    watch, poll = drift_watch(sim)
    queue = rounds(watch, poll, 3)
    # Three rounds over two subusers: one request per subuser per round (plus the one listing), one drift event.
    assert sim.count('GET', ENFORCED_TLS_PATH) == 6 and sim.count('GET', '/v3/subusers') == 1
    assert queue.events == [{
        'sendgrid': {'type': 'drift', 'subuser': 'off', 'desired': {'require_tls': True, 'require_valid_cert': True, 'version': '1.2'},
                     'current': {'require_tls': False, 'require_valid_cert': False, 'version': '1.1'},
                     'differences': {'require_tls': {'current': False, 'desired': True},
                                     'require_valid_cert': {'current': False, 'desired': True},
                                     'version': {'current': '1.1', 'desired': '1.2'}}},
        'meta': {'hosts': 'off'}}]
    sim.set_settings('off', dict(COMPLIANT_SETTINGS))
    rounds(watch, poll, 3, queue)
    assert [event['sendgrid']['type'] for event in queue.events] == ['drift', 'compliant']
    assert queue.of('compliant')[0]['subuser'] == 'off' and queue.events[1]['meta'] == {'hosts': 'off'}
    assert sim.count('PATCH') == 0


def test_drift_only_on_watched_fields_and_again_when_it_changes(sim):
    sim.add_subuser('a', settings=dict(COMPLIANT_SETTINGS, require_valid_cert=False))
    watch, poll = drift_watch(sim, require_valid_cert=None, subusers=['a'])
    queue = rounds(watch, poll, 2)
    assert queue.events == [] and sim.count('GET', '/v3/subusers') == 0
    sim.set_settings('a', dict(COMPLIANT_SETTINGS, version=1.1))
    rounds(watch, poll, 2, queue)
    sim.set_settings('a', dict(DEFAULT_SETTINGS))
    rounds(watch, poll, 2, queue)
    assert [event['differences'] for event in queue.of('drift')] == [
        {'version': {'current': '1.1', 'desired': '1.2'}},
        {'require_tls': {'current': False, 'desired': True}, 'version': {'current': '1.1', 'desired': '1.2'}}]


def test_drift_announced_again_after_repeat_drift_after(sim):
    sim.add_subuser('a')
    watch, poll = drift_watch(sim, repeat_drift_after=0.3)
    queue = rounds(watch, poll, 1)
    time.sleep(0.4)
    rounds(watch, poll, 1, queue)
    assert len(queue.of('drift')) == 2


def test_listing_leaves_out_disabled_and_names_that_are_not_plain(sim):
    sim.add_subuser('plain.user-1')
    sim.add_subuser('gone', disabled=True)
    # A name a host pattern reads as every host: never a run's limit.
    sim.add_subuser('sub*')
    watch, poll = drift_watch(sim)
    queue = rounds(watch, poll, 1)
    assert [event['subuser'] for event in queue.of('drift')] == ['plain.user-1']
    assert {entry['on_behalf_of'] for entry in sim.requests if entry['path'] == ENFORCED_TLS_PATH} == {'plain.user-1'}


def test_tls_blocks_once_each_since_the_start(sim):
    sim.add_subuser('a')
    sim.add_subuser('b')
    started = int(time.time())
    sim.add_blocks('a', [dict(email='old@legacy.example', reason=TLS_BLOCK_REASON, created=started - 10)])
    watch, poll = blocks_watch(sim, started, page_size=2)
    queue = rounds(watch, poll, 1)
    assert queue.events == []
    sim.add_blocks('a', [dict(email='x%d@legacy.example' % n, reason=TLS_BLOCK_REASON, created=started + n) for n in range(5)]
                   + [dict(email='full@other.example', reason='550 mailbox full', created=started + 1)])
    sim.add_blocks('b', [dict(email='ops@Cert.Example', reason='certificate verify failed', created=started + 2)])
    rounds(watch, poll, 3, queue)
    # Pages of 2: every block found, each once, oldest first within a subuser (subusers are read in parallel, so their
    # events interleave in any order); the mailbox-full block is not a TLS one.
    found = [(event['subuser'], event['email']) for event in queue.of('tls_block')]
    assert sorted(found, key=lambda item: item[0]) == [('a', 'x%d@legacy.example' % n) for n in range(5)] + [('b', 'ops@Cert.Example')]
    [event_b] = [event for event in queue.events if event.get('meta') == {'hosts': 'b'}]
    assert event_b == {'sendgrid': {'type': 'tls_block', 'subuser': 'b', 'email': 'ops@Cert.Example', 'domain': 'cert.example',
                                    'reason': 'certificate verify failed', 'created': started + 2}, 'meta': {'hosts': 'b'}}
    # The same address blocked again later is a new block.
    sim.add_blocks('a', [dict(email='x0@legacy.example', reason=TLS_BLOCK_REASON, created=started + 30)])
    rounds(watch, poll, 2, queue)
    assert len(queue.of('tls_block')) == 7 and queue.of('tls_block')[-1]['created'] == started + 30
    # Each round asks only from the newest block seen, less the lookback, never before the start.
    starts = [int(entry['query']['start_time']) for entry in sim.requests if entry['on_behalf_of'] == 'a']
    assert min(starts) == started


def test_failures_are_reported_once_and_retried(sim):
    sim.add_subuser('a')
    sim.add_subuser('b', settings=dict(COMPLIANT_SETTINGS))
    sim.inject(500, count=2, account='a', body={'errors': [{'message': 'broken for key %s' % API_KEY}]})
    watch, poll = drift_watch(sim, max_retries=0)
    queue = rounds(watch, poll, 2)
    errors = queue.of('error')
    assert len(errors) == 1 and errors[0]['subuser'] == 'a', queue.events
    assert 'HTTP 500' in errors[0]['message'] and 'GET /v3/user/settings/enforced_tls' in errors[0]['message']
    assert API_KEY not in repr(queue.events)
    # The fault is gone: the drift of a is seen on the next round, the other subuser was read every round.
    rounds(watch, poll, 1, queue)
    assert [event['subuser'] for event in queue.of('drift')] == ['a']
    assert sum(1 for entry in sim.requests if entry['on_behalf_of'] == 'b') == 3


def test_a_failing_listing_is_an_error_event_then_retried(sim, caplog):
    sim.add_subuser('a')
    sim.inject(401, count=3, path='/v3/subusers')
    watch, poll = drift_watch(sim, max_retries=0)
    queue = rounds(watch, poll, 3)
    assert [(event['type'], event['subuser']) for event in queue.of('error') + queue.of('drift')] == [('error', None)]
    assert 'HTTP 401' in queue.events[0]['sendgrid']['message']
    assert caplog.text.count('HTTP 401') == 3
    rounds(watch, poll, 1, queue)
    assert queue.of('drift')[0]['subuser'] == 'a'


def test_main_runs_until_cancelled_and_backs_off(sim, monkeypatch):
    """main() itself: options, the loop, and a failing listing waited on with growing pauses, never a busy loop."""
    sim.add_subuser('a')
    sim.inject(503, count=100, path='/v3/subusers')
    pauses = []
    real_sleep = asyncio.sleep

    async def sleep(seconds):
        # The pacing's own waits (1/8 s apart) are not the loop's pauses.
        if seconds >= 1:
            pauses.append(seconds)
        await real_sleep(0)
    monkeypatch.setattr(watch_module.asyncio, 'sleep', sleep)
    queue = MockQueue()

    async def run():
        task = asyncio.create_task(drift_source.main(queue, dict(api_key=API_KEY, api_url=sim.url, max_retries=0, interval=60, **POLICY)))
        while len(pauses) < 6:
            await real_sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(run())
    assert pauses[:6] == [5, 10, 20, 40, 60, 60]
    assert len(queue.of('error')) == 1


def test_event_loop_never_waits_on_the_api(sim):
    """Reads run in worker threads: a task of the rulebook keeps running while slow reads are in flight."""
    for number in range(8):
        sim.add_subuser('s%d' % number)
    sim.latency = 0.5
    watch, poll = drift_watch(sim, concurrency=4, requests_per_second=100)
    ticks = []

    async def run():
        async def ticker():
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)
        task = asyncio.create_task(ticker())
        started = time.monotonic()
        await watch.poll_once(MockQueue(), poll)
        task.cancel()
        return time.monotonic() - started
    elapsed = asyncio.run(run())
    # 9 requests of 0.5 s, four at a time (about 1.5 s): far from the 4.5 s one after the other. The ticker ran all
    # along: a loop that waited on a read would show a gap of 0.5 s at least (bounds loose for a busy CI machine).
    assert elapsed < 3.5
    assert len(ticks) >= 10 and max(b - a for a, b in zip(ticks, ticks[1:])) < 0.4


def test_reads_are_paced(sim):
    for number in range(10):
        sim.add_subuser('s%d' % number)
    watch, poll = drift_watch(sim, subusers=['s%d' % n for n in range(10)], requests_per_second=20, concurrency=8)
    started = time.monotonic()
    rounds(watch, poll, 1)
    assert time.monotonic() - started >= 9 / 20 - 0.01
    times = sorted(entry['time'] for entry in sim.requests)
    assert times[-1] - times[0] >= 9 / 20 - 0.05


def test_an_unbudgeted_watch_stays_within_the_rate_limit(sim):
    """Without requests_per_second, the client's pacing from X-RateLimit-* keeps a round within the account's window:
    every subuser read once, (almost) no 429, and the round takes about as long as the window allows."""
    names = ['s%d' % n for n in range(60)]
    for name in names:
        sim.add_subuser(name)
    sim.set_rate_limit(20, 2.0)
    watch, poll = drift_watch(sim, subusers=names, concurrency=8)
    started = time.monotonic()
    queue = rounds(watch, poll, 1)
    elapsed = time.monotonic() - started
    summary = sim.log_summary()
    # Unpaced, 40 of the 60 are refused; a worker descheduled between taking a slot and sending may spill into the
    # next window on a busy machine, hence a few (5 %) allowed.
    assert summary['by_status'].get('200') == 60 and summary.get('rate_limited', 0) <= 3, summary
    assert not queue.of('error')
    # 60 requests at 20 per 2 s: at least two windows must pass (the first 20 go at once), at most about four.
    assert 3.0 <= elapsed < 12.0, elapsed


@pytest.mark.parametrize('source, args, message', [
    (drift_source, dict(), "set at least one of require_tls, require_valid_cert, version"),
    (drift_source, dict(require_tls=True, interval=0), "interval must be a number of at least 1, got 0.0"),
    (drift_source, dict(require_tls=True, interval='soon'), "argument 'interval' is of type str"),
    (drift_source, dict(version='1.0'), 'version must be one of "1.1", "1.2", "1.3"'),
    (drift_source, dict(require_tls='maybe'), "argument 'require_tls' is of type str"),
    (drift_source, dict(require_tls=True, repeat_drift_after=-1), 'repeat_drift_after must be 0'),
    (drift_source, dict(require_tls=True, subusers=['ok', 'sub*']), 'subusers[1] is not a plain subuser name'),
    (drift_source, dict(require_tls=True, subusers=['ok', 'account-id 42']), 'subusers[1] is not a plain subuser name'),
    (drift_source, dict(require_tls=True, concurrency=0), 'concurrency must be an integer from 1 to 64'),
    (drift_source, dict(require_tls=True, requests_per_second=0), 'requests_per_second must be a number of at least 0.01'),
    (drift_source, dict(require_tls=True, api_url='http://example.com'), 'api_url'),
    (drift_source, dict(require_tls=True, region='mars'), 'region'),
    (drift_source, dict(require_tls=True, on_behalf_of='a'), 'unknown option(s) on_behalf_of'),
    (drift_source, dict(require_tls=True, api_key=None), 'api_key is required'),
    (blocks_source, dict(page_size=501), 'page_size must be an integer from 1 to 500'),
    (blocks_source, dict(max_pages=0), 'max_pages must be an integer of 1 or more'),
    (blocks_source, dict(require_tls=True), 'unknown option(s) require_tls'),
])
def test_bad_options_stop_at_start_naming_the_option(sim, source, args, message):
    sim.add_subuser('ok')
    queue = MockQueue()
    options = dict(dict(api_key=API_KEY, api_url=sim.url), **args)
    with pytest.raises(ValueError) as failure:
        asyncio.run(source.main(queue, options))
    assert message in str(failure.value) and source.NAME in str(failure.value)
    assert API_KEY not in str(failure.value)
    assert sim.requests == [] and queue.events == []


def test_connection_options_from_the_environment(sim, monkeypatch):
    sim.add_subuser('a')
    monkeypatch.setenv('SENDGRID_API_KEY', API_KEY)
    monkeypatch.setenv('SENDGRID_API_URL', sim.url)
    options = watch_module.check_options(drift_source.NAME, dict(require_tls=True, api_url=''), dict(require_tls=dict(type='bool')))
    assert options['api_key'] == API_KEY and options['api_url'] == sim.url
