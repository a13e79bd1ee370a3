# -*- coding: utf-8 -*-
"""At SendGrid's rate limit: the client paces itself from X-RateLimit-* and waits out a 429's Reset without failing.

Through SendGridClient (waits recorded, not slept) for the retry arithmetic, then real ansible-playbook runs of
mailsec.sendgrid.enforce against a simulator that enforces a small fixed window, in the per-subuser mode (forked
workers sharing the pace through the run's directory) and in batch mode with Reset sent as seconds.
"""

from __future__ import annotations

import time

import pytest

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import SendGridAPIError, SendGridClient
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import read
from ansible_collections.mailsec.sendgrid.plugins.module_utils._pacing import RATE_LIMIT_WAITS
from tests.conftest import API_KEY
from tests.reliability.helpers import COMPLIANT, write_fleet_inventory

DEFAULTS = dict(require_tls=False, require_valid_cert=False, version='1.1')


def client_for(url, sleeps, **options):
    return SendGridClient(api_key=API_KEY, api_url=url, sleep=sleeps.append, **options)


def statuses(sim):
    return [entry['status'] for entry in sim.requests]


# --- one client -------------------------------------------------------------------------------------------------------

def test_429s_that_carry_a_reset_do_not_spend_max_retries(sim):
    # max_retries 0: any retry budget spent would fail the read.
    # An epoch in whole seconds: 2 to 3 s ahead, so that the waits are over 0.9 s even on a slow machine.
    sim.inject(429, 3, ratelimit_reset=int(time.time()) + 3)
    sleeps = []
    assert read(client_for(sim.url, sleeps, max_retries=0)) == DEFAULTS
    assert statuses(sim) == [429, 429, 429, 200]
    assert len(sleeps) == 3 and all(0.9 < wait <= 3.0 for wait in sleeps), sleeps


def test_reset_sent_as_seconds_is_waited_for(sim):
    sim.inject(429, 1, ratelimit_reset=3)  # "3": seconds until the reset, not an epoch in 1970
    sleeps = []
    assert read(client_for(sim.url, sleeps)) == DEFAULTS
    assert len(sleeps) == 1 and 2.5 <= sleeps[0] <= 3.0, sleeps


def test_waits_for_the_reset_are_bounded_then_429s_spend_retries(sim):
    sim.inject(429, RATE_LIMIT_WAITS + 10, ratelimit_reset=1)
    sleeps = []
    with pytest.raises(SendGridAPIError) as info:
        read(client_for(sim.url, sleeps, max_retries=2))
    assert statuses(sim) == [429] * (RATE_LIMIT_WAITS + 3)
    assert 'HTTP 429' in str(info.value) and 'rate limit still exceeded after 2 retries' in str(info.value)


def test_a_429_with_retry_after_only_still_spends_a_retry(sim):
    # Not SendGrid's rate limit (a proxy's?): nothing says when it ends, so max_retries bounds it as before.
    sim.inject(429, 5, retry_after=1)
    with pytest.raises(SendGridAPIError):
        read(client_for(sim.url, [], max_retries=1))
    assert statuses(sim) == [429, 429]


# --- the role against a fixed window -----------------------------------------------------------------------------------

SUBUSERS = 40
LIMIT, WINDOW = 10, 2.0
# Before pacing, dozens; a worker descheduled between taking a slot and sending may spill into the next window.
MAX_429 = 6


@pytest.mark.parametrize('batch, reset_style', [(False, 'epoch'), (True, 'seconds')], ids=['per-subuser', 'batch-reset-seconds'])
def test_a_fleet_at_the_rate_limit_converges_without_a_429_storm(sim, run_playbook, tmp_path, batch, reset_style):
    names = sim.populate_subusers(SUBUSERS)  # all on the defaults: every one needs a PATCH
    inventory = write_fleet_inventory(tmp_path / 'inventory', sim.url)
    sim.set_rate_limit(LIMIT, WINDOW, reset_style)
    args = ['--forks', '10'] + (['-e', 'enforced_tls_policy_batch=true'] if batch else [])
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=dict(SENDGRID_API_KEY=API_KEY), args=args)
    summary = sim.log_summary()
    assert run.rc == 0, run.output[-3000:]
    assert [name for name in names if sim.settings(name) != COMPLIANT] == []
    # Before pacing, the forked workers each learnt of the limit from their own 429 and retried together at the reset.
    assert summary['by_status'].get('429', 0) <= MAX_429, summary
