# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""Pacing from SendGrid's rate-limit headers, shared by every worker of a client.

SendGrid answers each v3 request with ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``,
and with 429 once the window is spent. Workers that learn of the limit only from their own 429 all retry together
at the reset and collect 429s again; so every answer's headers go into one pace state, and before each request:

* while more than half the window is left, the request goes at once (no cost when the limit is far);
* below that, the requests left are spread evenly over the time left until the reset. Two runs on one key that do
  not share this state still meet in the server's own counter: each spreads what the server says is left (less its
  own requests not answered yet), a slot queued for later is given back when an answer shows that the window has
  less left than was queued, and once another run shows, the last request of a window is left to it;
* when nothing is left, or after a 429, nobody starts before the reset. A new window's end is unknown until one of
  its answers tells it: until then only a quarter of the window is spent, so that runs waking together at the reset
  do not spend it all at once.

``X-RateLimit-Reset`` is an epoch second, or (some endpoints) the seconds until the reset: a value far below the
current epoch is read as seconds. Missing or garbled headers mean no pacing, never an error.

The state is a small dict of numbers behind a store: in this process (threads of one client) by default; the role's
per-subuser mode gives the client a store in the run's private directory (plugin_utils/_pace_shared.py), shared by
the run's worker processes. Nothing here imports fcntl: modules run this on managed hosts too.
"""

from __future__ import annotations

import functools
import math
import threading
import time

# Below this, X-RateLimit-Reset is seconds until the reset, not an epoch (10^9 is September 2001).
EPOCH_THRESHOLD = 1e9
# The header counts whole seconds: two Reset values closer than this name the same window.
RESET_RESOLUTION = 1.5
# After a 429 whose Reset has passed already (clock skew, rounding), wait this long rather than retry at once.
STALE_RESET_WAIT = 1.0
# One pacing wait at most (as one retry wait at most, the client's MAX_WAIT): a Reset an hour away does not hang a run.
MAX_PACE_WAIT = 60.0
# A new window: how long a worker waits for the first answer that says when it ends, then goes unpaced.
NEW_WINDOW_WAIT = 1.0
_STEP = 0.05
_SPENT_STEP = 0.1
# What one request may wait for the rate limit (pacing and 429s that carry a Reset) without spending max_retries:
# RATE_LIMIT_WAITS such 429s and RATE_LIMIT_PATIENCE seconds in all. Past either, a 429 counts as a retry again, so a
# request waits at most RATE_LIMIT_PATIENCE + max_retries x MAX_WAIT seconds for the rate limit.
RATE_LIMIT_WAITS = 20
RATE_LIMIT_PATIENCE = 300.0


def _number(value):
    """A finite float from a header or stored value, else None (garbled, empty, inf, NaN)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, AttributeError):
        return None
    return number if math.isfinite(number) else None


def parse_reset(value, now):
    """X-RateLimit-Reset as an epoch: the value itself, or now plus the value when it is seconds; None if unusable."""
    number = _number(value)
    if number is None or number < 0:
        return None
    return now + number if number < EPOCH_THRESHOLD else number


def read_headers(headers, now):
    """(limit, remaining, reset epoch) of an answer; None when Remaining or Reset is missing or garbled."""
    remaining = _number(headers.get('X-RateLimit-Remaining'))
    reset = parse_reset(headers.get('X-RateLimit-Reset'), now)
    if remaining is None or reset is None or remaining < 0:
        return None
    limit = _number(headers.get('X-RateLimit-Limit'))
    return (int(limit) if limit is not None and limit >= 1 else None), int(remaining), reset


def _clean(state):
    """The state with anything that is not a finite number dropped: a stored state is read back from a file."""
    for name in list(state):
        value = _number(state[name])
        if value is None:
            del state[name]
        else:
            state[name] = value
    return state


def _roll_over(state, at):
    # The window has ended: its successor holds `limit` requests, ending when one of its answers says.
    state.pop('reset', None)
    state['probe'] = state['pending'] = state['mine'] = 0
    state['rolled'] = at
    if 'limit' in state:
        state['left'] = state['limit']
    else:
        state.pop('left', None)


def reserve(state, now, pace=True):
    """When the next request may start (an epoch >= now), and whether to ask again then; updates ``state``.

    ``pace`` False honours a 429's pause only (a request that has waited its RATE_LIMIT_PATIENCE)."""
    _clean(state)
    start, again = _reserve(state, now, pace)
    if not again:
        # Sent but not answered yet: the server's Remaining does not count it until its answer.
        state['pending'] = state.get('pending', 0) + 1
        state['mine'] = state.get('mine', 0) + 1
    return start, again


def _reserve(state, now, pace):
    start = max(now, state.get('pause', 0.0))
    if not pace:
        return start, False
    reset = state.get('reset')
    if reset is not None and start >= reset:
        _roll_over(state, start)
        reset = None
    left = state.get('left')
    if left is None:
        return start, False
    # Once another run on the key shows in the server's counter, the last request of a window is left to it: each run
    # knows of the other's requests only from its own next answer, so both would take it.
    if reset is not None and left <= state.get('shared', 0):
        # Spent until the reset; asked again now and then, since the Reset is rounded up to a whole second: an answer
        # of the next window (a request sent late in this one) may show that it has begun already.
        return min(reset, start + _SPENT_STEP), True
    limit = state.get('limit', left)
    if reset is None:
        # Not before the window we rolled over into begins (a 429's pause may end after the Reset it was told).
        start = max(start, state.get('rolled', start))
        if state.get('probe', 0) < max(1, limit // 4):
            state['probe'] = state.get('probe', 0) + 1
            state['left'] = left - 1
            return start, False
        if start >= state.get('rolled', start) + NEW_WINDOW_WAIT:
            # No answer has told when this window ends: stop pacing until one does.
            state.pop('left', None)
            return start, False
        return start + _STEP, True
    if left > limit // 2:
        state['left'] = left - 1
        return start, False
    # Spread what is left evenly until the reset: the slots of the requests left, the last one before the reset.
    base = max(start, state.get('slot', 0.0))
    slot = max(start, state.get('slot', 0.0) + (reset - base) / (left + 1))
    state['slot'] = slot
    state['left'] = left - 1
    return slot, False


def observe(state, now, limit, remaining, reset):
    """Take in one answer's rate-limit headers."""
    _clean(state)
    if reset <= now:
        return  # an answer of a window that has ended meanwhile
    known = state.get('reset')
    if limit is not None:
        state['limit'] = limit
    elif remaining + 1 > state.get('limit', 0):
        state['limit'] = remaining + 1
    if known is not None and now < known and reset < known - RESET_RESOLUTION:
        return  # a late answer of the window before
    if known is None and 'rolled' in state and (now < state['rolled'] or reset < state['rolled'] + RESET_RESOLUTION):
        return  # an answer of the window we have rolled over from (ahead of time when it was spent)
    # What is left for requests not sent yet: the server's count less our requests it has not answered yet.
    state['pending'] = pending = max(0, state.get('pending', 0) - 1)
    spent = state['limit'] - remaining  # by the server's count, in this window so far
    # Below 0 when requests queued for a later slot are more than the server has left (another run took the rest).
    remaining = remaining - pending
    if known is not None and now < known and reset < known + RESET_RESOLUTION:
        # The same window: its counter only goes down, and each Reset read as seconds is a little late (rounded up).
        state['reset'] = min(known, reset)
        if spent > state.get('mine', spent):
            state['shared'] = 1  # the server counts more than we sent: another run spends this key's window too
        state['left'] = min(state.get('left', remaining), remaining)
        return
    if known is None and 'rolled' in state and 'left' in state:
        # The first answer of the window we rolled over into: our probes since then count already.
        remaining = min(remaining, state['left'])
    # Ours, giving another run the benefit of the doubt: all that was spent so far, and all we have in flight.
    state.update(reset=reset, left=remaining, slot=0.0, mine=max(state.get('mine', 0), spent + pending) if 'rolled' in state else spent + pending)
    state.pop('rolled', None)


def _confirm(state):
    """At a request's slot: False (and its reservation given back) if the window has less left than was queued."""
    _clean(state)
    if state.get('left', 0) >= 0:
        return True
    for name in ('left', 'pending', 'mine'):
        state[name] = state.get(name, 0) + (1 if name == 'left' else -1)
    return False


def _paused_until(state):
    return _clean(state).get('pause', 0.0)


def pause_until(state, until):
    _clean(state)
    state['pause'] = max(state.get('pause', 0.0), until)
    return state['pause']


class MemoryStore:
    """The pace state of one process: the threads of one client share it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._state = {}

    def update(self, change):
        """``change(state)`` under the lock; returns what it returns."""
        with self._lock:
            return change(self._state)


class Pace:
    """Every request of a client passes here: ``before`` it is sent, ``after`` its answer, ``pause`` after a 429.

    Waits go through the ``sleep`` the client is given, so tests can record them instead of sleeping.
    """

    def __init__(self, store=None, clock=time.time):
        self._store = store or MemoryStore()
        self._clock = clock

    def before(self, sleep, pace=True):
        """Wait until this request may start; returns the seconds waited."""
        waited = 0.0
        now = self._clock()
        for dummy in range(int(MAX_PACE_WAIT / _STEP)):
            start, again = self._store.update(functools.partial(reserve, now=now, pace=pace))
            wait = min(start - now, MAX_PACE_WAIT - waited)
            if wait <= 0 and not again:
                break
            if wait > 0:
                sleep(wait)
                waited += wait
            # Time as this request saw it (a recording sleep in tests does not move the clock).
            now = max(self._clock(), now + max(wait, 0.0))
            if waited >= MAX_PACE_WAIT:
                break
            if not again and not self._store.update(_confirm):
                continue
            # Again for a window that may have begun, or when another worker's 429 pushed the pause while we slept.
            if not again and self._store.update(_paused_until) <= now:
                break
        return waited

    def after(self, headers, status):
        """Take in an answer's headers. For a 429 that carries a Reset: the seconds until it (else None)."""
        now = self._clock()
        try:
            found = read_headers(headers, now)
        except Exception:  # pylint: disable=broad-except  # a header object that misbehaves means no pacing, not a failure
            found = None
        if found is None:
            return None
        limit, remaining, reset = found
        if status == 429:
            # Spent, whatever Remaining says; a Reset already past (rounding, a clock ahead) still waits a little.
            wait = reset - now if reset > now else STALE_RESET_WAIT
            self._store.update(lambda state: (observe(state, now, limit, 0, now + wait), pause_until(state, now + wait)))
            return wait
        self._store.update(lambda state: observe(state, now, limit, remaining, reset))
        return None

    def pause(self, seconds):
        """Nobody of this client (or of its shared store) starts a request for ``seconds``."""
        until = self._clock() + seconds
        self._store.update(lambda state: pause_until(state, until))

    # The client's former Throttle interface.
    def wait(self, sleep):
        return self.before(sleep, pace=False)


class RequestWaits:
    """What one request has waited for the rate limit, so that its 429s with a Reset do not spend max_retries."""

    def __init__(self):
        self.seconds = 0.0
        self.excused = 0

    @property
    def patient(self):
        return self.seconds < RATE_LIMIT_PATIENCE

    def add(self, seconds):
        self.seconds += seconds

    def excuse(self, reset_wait):
        """Whether a 429 that says when its window resets (``reset_wait`` seconds) is waited out without a retry."""
        if reset_wait is None or self.excused >= RATE_LIMIT_WAITS or not self.patient:
            return False
        self.excused += 1
        return True
