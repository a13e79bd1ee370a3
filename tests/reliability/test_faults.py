# -*- coding: utf-8 -*-
"""Fault matrix: what the one HTTP client does when SendGrid, the network or a proxy misbehaves.

Each fault is played twice where it matters: through SendGridClient directly (fast: the waits are recorded
instead of slept, so exact wait lengths can be checked) and through a real ansible-playbook run of
mailsec.sendgrid.enforced_tls / enforced_tls_info (the user's view: one readable line, no traceback).
For every fault the test checks the outcome's exact message fragments and how many requests the server saw,
since "retried the right number of times" is as much a contract as "failed with a clear message".
"""

from __future__ import annotations

import email.utils
import time

import pytest

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import (
    BACKOFF_BASE, MAX_WAIT, SendGridAPIError, SendGridClient, SendGridError)
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import PATH, converge, read
from tests.conftest import API_KEY
from tests.reliability.raw_server import RawServer, http_response, reset_after, respond, send, sequence, silent

DEFAULTS = dict(require_tls=False, require_valid_cert=False, version='1.1')
HTML_502 = ('<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n'
            '<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n')


def client_for(url, sleeps, **options):
    """A client whose waits are recorded in `sleeps` instead of slept."""
    return SendGridClient(api_key=API_KEY, api_url=url, sleep=sleeps.append, **options)


def statuses(sim, account=None):
    return [entry['status'] for entry in sim.requests if account is None or entry['on_behalf_of'] == account]


def one_clean_line(exc):
    # What the user reads is str(exc): one line, our words, never a Python traceback.
    text = str(exc)
    assert '\n' not in text and 'Traceback' not in text, text
    return text


# --- rate limiting ---------------------------------------------------------------------------------------------------

def test_429_storm_honours_retry_after_then_succeeds(sim):
    sim.inject(429, 10, retry_after=1)
    sleeps = []
    assert read(client_for(sim.url, sleeps, max_retries=10)) == DEFAULTS
    assert statuses(sim) == [429] * 10 + [200]
    # Each wait is what Retry-After asked for (minus the few ms since the answer), not a backoff guess.
    assert len(sleeps) == 10 and all(0.9 < wait <= 1.0 for wait in sleeps), sleeps


def test_more_429s_than_max_retries_fail_naming_the_rate_limit(sim):
    sim.inject(429, 10, retry_after=0)
    with pytest.raises(SendGridAPIError) as info:
        read(client_for(sim.url, [], max_retries=3))
    text = one_clean_line(info.value)
    assert text.startswith('SendGrid API error: HTTP 429 Too Many Requests on GET /v3/user/settings/enforced_tls: ')
    assert 'rate limit still exceeded after 3 retries' in text
    assert info.value.status == 429 and statuses(sim) == [429] * 4


def test_ratelimit_reset_is_honoured_without_retry_after(sim):
    sim.inject(429, 1, ratelimit_reset=int(time.time()) + 3)
    sleeps = []
    assert read(client_for(sim.url, sleeps)) == DEFAULTS
    assert statuses(sim) == [429, 200]
    # X-RateLimit-Reset is an epoch second: the wait ends at that second (2 to 3 s from now), not after a backoff.
    assert len(sleeps) == 1 and 1.5 < sleeps[0] <= 3.0, sleeps


def test_retry_after_as_http_date(sim):
    sim.inject(429, 1, retry_after=email.utils.formatdate(time.time() + 3, usegmt=True))
    sleeps = []
    assert read(client_for(sim.url, sleeps)) == DEFAULTS
    assert len(sleeps) == 1 and 1.5 < sleeps[0] <= 3.0, sleeps


def test_an_hour_long_retry_after_is_capped(sim):
    # A proxy asking for an hour must not hang a playbook for an hour: each wait is capped at MAX_WAIT.
    sim.inject(429, 1, retry_after=3600)
    sleeps = []
    read(client_for(sim.url, sleeps))
    assert len(sleeps) == 1 and MAX_WAIT - 1 < sleeps[0] <= MAX_WAIT, sleeps


# --- server errors ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('status', [500, 502, 503, 504])
def test_5xx_is_retried_with_backoff_then_succeeds(sim, status):
    sim.inject(status, 2)
    sleeps = []
    assert read(client_for(sim.url, sleeps)) == DEFAULTS
    assert statuses(sim) == [status, status, 200]
    # Exponential backoff with jitter: attempt k waits between half and all of BACKOFF_BASE * 2**k.
    assert len(sleeps) == 2
    for attempt, wait in enumerate(sleeps):
        assert BACKOFF_BASE * 2 ** attempt / 2 <= wait <= BACKOFF_BASE * 2 ** attempt, sleeps


def test_mixed_5xx_then_success(sim):
    for status in (500, 502, 503, 504):
        sim.inject(status, 1)
    assert read(client_for(sim.url, [], max_retries=4)) == DEFAULTS
    assert statuses(sim) == [500, 502, 503, 504, 200]


def test_5xx_beyond_max_retries_says_how_often_it_was_tried(sim):
    sim.inject(503, 10)
    with pytest.raises(SendGridAPIError) as info:
        read(client_for(sim.url, [], max_retries=2), on_behalf_of=None)
    assert one_clean_line(info.value) == ('SendGrid API error: HTTP 503 Service Unavailable on GET /v3/user/settings/enforced_tls: '
                                          'service unavailable (after 2 retries)')
    assert statuses(sim) == [503] * 3


@pytest.mark.parametrize('status', [400, 401, 403, 404])
def test_client_errors_are_not_retried(sim, status):
    sim.inject(status, 5)
    sleeps = []
    with pytest.raises(SendGridAPIError) as info:
        read(client_for(sim.url, sleeps))
    assert info.value.status == status and 'HTTP %d' % status in one_clean_line(info.value)
    assert statuses(sim) == [status] and sleeps == []


def test_a_patch_answered_503_is_retried_and_lands_once(sim):
    sim.add_subuser('flaky')
    sim.inject(503, 1, method='PATCH')
    result = converge(client_for(sim.url, []), dict(require_tls=True, version='1.2'), on_behalf_of='flaky')
    assert result['status'] == 'changed' and sim.settings('flaky') == dict(require_tls=True, require_valid_cert=False, version=1.2)
    assert [(e['method'], e['status']) for e in sim.requests] == [('GET', 200), ('PATCH', 503), ('PATCH', 200)]


# --- broken transports and answers, on a raw socket ------------------------------------------------------------------

PARTIAL = http_response(200, b'{"require_tls": tr', content_length=100)

# name: (behaviour, client options, expected exception, message fragments, requests the server sees)
RAW_FAULTS = {
    'reset mid-response': (
        reset_after(PARTIAL), dict(max_retries=2), SendGridError,
        ['SendGrid API unreachable: connection broken while reading the answer on GET http://127.0.0.1:',
         '/v3/user/settings/enforced_tls: ', 'Connection broken', '(after 2 retries)'], 3),
    'reset before any answer': (
        reset_after(b''), dict(max_retries=2), SendGridError,
        ['SendGrid API unreachable: connection failed on GET http://127.0.0.1:', 'Connection aborted', '(after 2 retries)'], 3),
    'accepts and never answers': (
        silent, dict(max_retries=1, timeout=0.3), SendGridError,
        ['SendGrid API unreachable: timed out on GET http://127.0.0.1:', 'no complete answer within 0.3 s', '(after 1 retries)'], 2),
    'HTML 502 from a proxy': (
        respond(502, HTML_502, content_type='text/html'), dict(max_retries=2), SendGridAPIError,
        ['SendGrid API error: HTTP 502 Bad Gateway on GET /v3/user/settings/enforced_tls: non-JSON answer (text/html): '
         '<html> <head><title>502 Bad Gateway</title></head>', '(after 2 retries)'], 3),
    'truncated JSON': (
        respond(200, b'{"require_tls": tr'), {}, SendGridAPIError,
        ['SendGrid API error: HTTP 200 OK on GET /v3/user/settings/enforced_tls: answer is not valid JSON (application/json): '
         '{"require_tls": tr'], 1),
    'body shorter than Content-Length': (
        send(PARTIAL), dict(max_retries=1), SendGridError,
        ['SendGrid API unreachable: connection broken while reading the answer', 'IncompleteRead', '(after 1 retries)'], 2),
    'version of the wrong type': (
        respond(200, {'require_tls': True, 'require_valid_cert': True, 'version': 'abc'}), {}, SendGridError,
        ["GET /v3/user/settings/enforced_tls answered version 'abc' where 1.1, 1.2 or 1.3 was expected"], 1),
    'require_tls of the wrong type': (
        respond(200, {'require_tls': 'yes', 'version': 1.2}), {}, SendGridError,
        ["GET /v3/user/settings/enforced_tls answered require_tls 'yes' where a boolean was expected"], 1),
    'a list instead of an object': (
        respond(200, [{'require_tls': True}]), {}, SendGridError,
        ['GET /v3/user/settings/enforced_tls answered a JSON list where a JSON object was expected'], 1),
    'empty 200': (
        respond(200, b''), {}, SendGridAPIError,
        ['SendGrid API error: HTTP 200 OK on GET /v3/user/settings/enforced_tls: empty answer where a JSON body was expected'], 1),
}


@pytest.mark.parametrize('name', list(RAW_FAULTS))
def test_raw_fault(name):
    behaviour, options, expected, fragments, count = RAW_FAULTS[name]
    sleeps = []
    with RawServer(behaviour, lifetime=20) as server:
        with pytest.raises(expected) as info:
            read(client_for(server.url, sleeps, **options))
    text = one_clean_line(info.value)
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    assert len(server.requests) == count and server.connections == count
    # Retries waited (recorded), one wait per retry; non-retried faults did not wait at all.
    assert len(sleeps) == count - 1


def test_proxy_502_then_success_recovers():
    good = respond(200, {'require_tls': True, 'require_valid_cert': True, 'version': 1.3})
    with RawServer(sequence(respond(502, HTML_502, content_type='text/html'), good), lifetime=20) as server:
        assert read(client_for(server.url, [])) == dict(require_tls=True, require_valid_cert=True, version='1.3')
    assert len(server.requests) == 2


@pytest.mark.parametrize('status', [301, 302, 307, 308])
def test_redirect_to_another_host_is_refused_and_the_key_stays(status):
    with RawServer(respond(200, {}), lifetime=20) as target:
        location = target.url + PATH
        with RawServer(respond(status, b'', headers={'Location': location}), lifetime=20) as origin:
            with pytest.raises(SendGridAPIError) as info:
                read(client_for(origin.url, []))
    text = one_clean_line(info.value)
    assert 'HTTP %d' % status in text and 'redirect to %s refused (the API key is never sent to another location)' % location in text
    assert len(origin.requests) == 1
    # The origin did get the key (so this test would see it travel), the redirect target got nothing at all.
    assert origin.requests[0].headers['authorization'] == 'Bearer ' + API_KEY
    assert target.connections == 0 and target.requests == []


# --- the same faults through real ansible-playbook runs --------------------------------------------------------------

def test_faults_through_ansible_playbook(sim, run_playbook):
    """One playbook, one task per fault (ignore_errors), so the matrix costs one ansible-playbook start."""
    for name in ('storm', 'exhausted', 'flaky', 'broken'):
        sim.add_subuser(name)
    sim.inject(429, 3, account='storm', retry_after=1)
    sim.inject(429, 10, account='exhausted', retry_after=0)
    sim.inject(503, 1, account='flaky')
    sim.inject(502, 1, account='flaky')
    sim.inject(500, 10, account='broken')

    servers = dict(
        html=RawServer(respond(502, HTML_502, content_type='text/html'), lifetime=300),
        reset=RawServer(reset_after(PARTIAL), lifetime=300),
        silent=RawServer(silent, lifetime=300),
        truncated=RawServer(respond(200, b'{"require_tls": tr'), lifetime=300),
        types=RawServer(respond(200, {'require_tls': 'yes', 'version': 'abc'}), lifetime=300),
        empty=RawServer(respond(200, b''), lifetime=300),
        target=RawServer(respond(200, {}), lifetime=300),
    )
    servers['redirect'] = RawServer(respond(302, b'', headers={'Location': servers['target'].url + PATH}), lifetime=300)
    for server in servers.values():
        server.start()

    def sim_task(name, account, **options):
        return {'name': name, 'mailsec.sendgrid.enforced_tls': dict(api_url=sim.url, on_behalf_of=account, require_tls=True, **options),
                'register': name, 'ignore_errors': True}

    def raw_task(name, **options):
        return {'name': name, 'mailsec.sendgrid.enforced_tls_info': dict(api_url=servers[name].url, max_retries=1, **options),
                'register': name, 'ignore_errors': True}

    tasks = [
        sim_task('storm', 'storm', max_retries=5),
        sim_task('exhausted', 'exhausted', max_retries=2),
        sim_task('flaky', 'flaky'),
        sim_task('broken', 'broken', max_retries=1),
        raw_task('html'), raw_task('reset'), raw_task('silent', timeout=0.5), raw_task('truncated'), raw_task('types'),
        raw_task('empty'), raw_task('redirect'),
    ]
    names = [task['name'] for task in tasks]
    try:
        run = run_playbook(tasks=tasks, save=names, env=dict(SENDGRID_API_KEY=API_KEY), verbosity=3)
    finally:
        for server in servers.values():
            server.stop()
    results = run.results
    assert set(results) == set(names), run.output
    assert 'Traceback' not in run.output and 'MODULE FAILURE' not in run.output

    def failed_with(name, *fragments):
        result = results[name]
        assert result['failed'] is True, (name, result)
        for fragment in fragments:
            assert fragment in result['msg'], (name, fragment, result['msg'])
        return result['msg']

    # Rate limit storm: three 429s, waits of Retry-After (1 s each, really slept here), then GET and PATCH succeed.
    assert results['storm']['failed'] is False and results['storm']['changed'] is True
    storm = [e for e in sim.requests if e['on_behalf_of'] == 'storm']
    assert [(e['method'], e['status']) for e in storm] == [('GET', 429)] * 3 + [('GET', 200), ('PATCH', 200)]
    assert all(later['time'] - earlier['time'] >= 0.95 for earlier, later in zip(storm[:3], storm[1:4])), storm
    failed_with('exhausted', 'HTTP 429 Too Many Requests on GET /v3/user/settings/enforced_tls (on behalf of exhausted)',
                'rate limit still exceeded after 2 retries')
    assert statuses(sim, 'exhausted') == [429] * 3
    assert results['flaky']['changed'] is True and statuses(sim, 'flaky') == [503, 502, 200, 200]
    failed_with('broken', 'HTTP 500 Internal Server Error on GET /v3/user/settings/enforced_tls (on behalf of broken)',
                '(after 1 retries)')
    assert statuses(sim, 'broken') == [500, 500]
    assert sim.settings('exhausted')['require_tls'] is False and sim.settings('broken')['require_tls'] is False

    failed_with('html', 'HTTP 502 Bad Gateway', 'non-JSON answer (text/html)', '(after 1 retries)')
    failed_with('reset', 'connection broken while reading the answer', '(after 1 retries)')
    failed_with('silent', 'timed out', '(after 1 retries)')
    failed_with('truncated', 'answer is not valid JSON (application/json)')
    failed_with('types', "answered require_tls 'yes' where a boolean was expected")
    failed_with('empty', 'empty answer where a JSON body was expected')
    failed_with('redirect', 'HTTP 302 Found', 'refused (the API key is never sent to another location)')
    expected_requests = dict(html=2, reset=2, silent=2, truncated=1, types=1, empty=1, redirect=1, target=0)
    assert {name: len(server.requests) for name, server in servers.items()} == expected_requests
    assert servers['target'].connections == 0
