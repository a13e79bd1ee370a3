# -*- coding: utf-8 -*-
"""Pacing from X-RateLimit-*: the arithmetic on a clock the test moves, the 429 pause shared by a client's threads, and
the pace shared by forked worker processes through a file (the role's per-subuser mode)."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from ansible_collections.mailsec.sendgrid.plugins.module_utils import _pacing as pacing
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._pace_shared import FileStore, shared_pace

NOW = 1_800_000_000.0


class Clock:
    """A clock that only the test's sleeps move: every wait is recorded and exact."""

    def __init__(self, now=NOW):
        self.now = now
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def headers(remaining, reset, limit=50):
    found = {'X-RateLimit-Remaining': str(remaining), 'X-RateLimit-Reset': str(reset)}
    if limit is not None:
        found['X-RateLimit-Limit'] = str(limit)
    return found


# --- reading the headers -------------------------------------------------------------------------------------------

@pytest.mark.parametrize('value, expected', [
    ('1800000030', 1800000030.0),  # an epoch second
    ('30', NOW + 30),  # seconds until the reset (some SendGrid endpoints)
    ('0', NOW),
    (' 2.5 ', NOW + 2.5),
    ('999999999', NOW + 999999999),  # below 10^9: seconds, however many
])
def test_reset_is_an_epoch_or_seconds(value, expected):
    assert pacing.parse_reset(value, NOW) == expected


@pytest.mark.parametrize('value', [None, '', 'soon', '-5', 'nan', 'inf', '1e400', 'Fri, 04 Dec 2026 22:00:00 GMT'])
def test_an_unusable_reset_is_none(value):
    assert pacing.parse_reset(value, NOW) is None


@pytest.mark.parametrize('found', [
    {}, {'X-RateLimit-Remaining': '10'}, {'X-RateLimit-Reset': '30'}, {'X-RateLimit-Remaining': 'many', 'X-RateLimit-Reset': '30'},
    {'X-RateLimit-Remaining': '-1', 'X-RateLimit-Reset': '30'},
])
def test_missing_or_garbled_headers_mean_no_pacing(found):
    assert pacing.read_headers(found, NOW) is None
    clock = Clock()
    pace = pacing.Pace(clock=clock)
    for dummy in range(100):
        assert pace.after(found, 200) is None
        assert pace.before(clock.sleep) == 0
    assert clock.sleeps == []


def test_a_missing_limit_is_none_and_garbled_limit_too():
    assert pacing.read_headers(headers(7, 30, limit=None), NOW) == (None, 7, NOW + 30)
    assert pacing.read_headers(dict(headers(7, 30), **{'X-RateLimit-Limit': 'x'}), NOW) == (None, 7, NOW + 30)


# --- pacing ---------------------------------------------------------------------------------------------------------

def test_no_wait_while_more_than_half_the_window_is_left():
    clock = Clock()
    pace = pacing.Pace(clock=clock)
    pace.after(headers(50, NOW + 10), 200)
    for dummy in range(24):
        assert pace.before(clock.sleep) == 0
    assert clock.sleeps == []


@pytest.mark.parametrize('reset', [NOW + 10, 10], ids=['epoch', 'seconds'])
def test_what_is_left_is_spread_evenly_until_the_reset(reset):
    clock = Clock()
    pace = pacing.Pace(clock=clock)
    pace.after(headers(4, reset), 200)  # 4 of 50 left, 10 s to go
    starts = []
    for dummy in range(4):
        pace.before(clock.sleep)
        starts.append(clock.now - NOW)
    # Four slots spread over the 10 s, the last one before the reset.
    assert starts[0] == 0 and all(1.5 < later - earlier < 3.0 for earlier, later in zip(starts, starts[1:])), starts
    assert starts[-1] < 10
    # Spent: the next request waits for the reset.
    pace.before(clock.sleep)
    assert clock.now - NOW == pytest.approx(10)


def test_the_server_counter_wins_over_the_local_estimate():
    # Another run on the same key spends the window too: its requests show in Remaining only.
    clock = Clock()
    pace = pacing.Pace(clock=clock)
    pace.after(headers(50, NOW + 10), 200)
    assert pace.before(clock.sleep) == 0
    pace.after(headers(2, NOW + 10), 200)  # we sent 1, the server counts 48: another run sent the others
    assert pace.before(clock.sleep) == 0  # one of the two left is ours, at once
    pace.after(headers(1, NOW + 10), 200)
    pace.before(clock.sleep)  # the last one is left to the other run: wait for the reset
    assert clock.now == pytest.approx(NOW + 10)


def test_alone_the_last_request_of_a_window_is_ours():
    clock = Clock()
    pace = pacing.Pace(clock=clock)
    pace.after(headers(3, NOW + 10), 200)
    for dummy in range(3):
        pace.before(clock.sleep)
        pace.after(headers(2 - dummy, NOW + 10), 200)
    assert clock.now < NOW + 10


def test_requests_not_answered_yet_count_against_what_is_left():
    clock = Clock()
    pace = pacing.Pace(clock=clock)
    for dummy in range(8):  # eight requests sent before any answer
        pace.before(clock.sleep)
    pace.after(headers(9, NOW + 10, limit=10), 200)  # the first answer: the other seven are still in flight
    pace.before(clock.sleep)  # 9 - 7 = 2 left: this one goes, spread
    pace.before(clock.sleep)
    assert clock.now > NOW
    assert NOW + 10 > clock.now
    pace.before(clock.sleep)  # spent: waits for the reset
    assert clock.now == pytest.approx(NOW + 10)


def test_a_new_window_spends_a_quarter_until_an_answer_says_when_it_ends():
    clock = Clock()
    pace = pacing.Pace(clock=clock)
    pace.after(headers(0, NOW + 5, limit=40), 200)
    waits = [pace.before(clock.sleep) for dummy in range(10)]
    assert waits[0] == pytest.approx(5) and waits[1:] == [0] * 9  # a quarter of 40, from the reset on
    # The eleventh waits for an answer of the new window, then goes unpaced after NEW_WINDOW_WAIT at most.
    assert 0 < pace.before(clock.sleep) <= pacing.NEW_WINDOW_WAIT + 0.05


def test_a_429_with_reset_as_seconds_pauses_until_then():
    clock = Clock()
    pace = pacing.Pace(clock=clock)
    assert pace.after(headers(0, 3), 429) == 3
    assert pace.before(clock.sleep) == pytest.approx(3)


def test_a_429_whose_reset_has_passed_still_waits_a_little():
    clock = Clock()
    pace = pacing.Pace(clock=clock)
    assert pace.after(headers(0, NOW - 2), 429) == pacing.STALE_RESET_WAIT


def test_a_wait_is_capped():
    clock = Clock()
    pace = pacing.Pace(clock=clock)
    pace.after(headers(0, NOW + 3600), 429)
    assert pace.before(clock.sleep) == pacing.MAX_PACE_WAIT


def test_a_429_pauses_every_thread_of_the_client():
    pace = pacing.Pace()
    waited = {}

    def worker(name):
        waited[name] = pace.before(time.sleep)

    pace.after(headers(0, 1, limit=10), 429)  # one worker's 429: the window resets in 1 s
    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert time.monotonic() - started >= 0.8
    assert len(waited) == 5 and all(wait >= 0.8 for wait in waited.values()), waited


def test_request_waits_excuse_a_bounded_number_of_429s():
    waits = pacing.RequestWaits()
    assert not waits.excuse(None)  # a 429 without a Reset spends a retry
    assert all(waits.excuse(1.0) for dummy in range(pacing.RATE_LIMIT_WAITS))
    assert not waits.excuse(1.0)
    patient = pacing.RequestWaits()
    patient.add(pacing.RATE_LIMIT_PATIENCE)
    assert not patient.excuse(1.0)


# --- shared by worker processes -------------------------------------------------------------------------------------

def _reserve_in_child(path, queue):
    clock = Clock(time.time())
    start = clock.now
    shared_pace(path).before(clock.sleep)
    queue.put(clock.now - start)


def _children(path, count):
    context = multiprocessing.get_context('fork')
    queue = context.Queue()
    workers = [context.Process(target=_reserve_in_child, args=(path, queue)) for dummy in range(count)]
    for worker in workers:
        worker.start()
    waits = sorted(queue.get(timeout=60) for dummy in workers)
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    return waits


def test_forked_workers_share_the_spread(tmp_path):
    path = str(tmp_path / 'pace')
    shared_pace(path).after(headers(4, 20), 200)  # 4 of 50 left, 20 s to go
    waits = _children(path, 4)
    # Each worker took its own slot (an in-process pace would let all four go at once).
    assert waits[0] < 1 and all(later - earlier > 2.5 for earlier, later in zip(waits, waits[1:])), waits
    assert waits[-1] < 20


def test_forked_workers_share_a_429_pause(tmp_path):
    path = str(tmp_path / 'pace')
    shared_pace(path).after(headers(0, 30), 429)
    assert all(29 < wait <= 30 for wait in _children(path, 3))


def test_a_garbled_or_foreign_state_file_means_no_pacing(tmp_path):
    path = tmp_path / 'pace'
    for content in ('not json', '[1, 2]', '{"left": "x", "reset": null, "pause": 1e999}', 'x' * 10000):
        path.write_text(content)
        clock = Clock()
        assert pacing.Pace(FileStore(str(path)), clock=clock).before(clock.sleep) == 0


def test_an_unusable_state_file_costs_the_pacing_not_the_request(tmp_path):
    clock = Clock()
    pace = pacing.Pace(FileStore(str(tmp_path / 'missing-directory' / 'pace')), clock=clock)
    assert pace.after(headers(0, 3), 429) == 3
    assert pace.before(clock.sleep) == 0
