# -*- coding: utf-8 -*-
"""The overall time limits of tls_check and recipient_tls_info, against real servers on 127.0.0.N that waste time on
purpose: tarpits that answer each read just in time (a byte or a line at a time), a TLS handshake that never ends,
a domain with 2,000 MX records, slow DNS answers.

Each test checks the documented bound (the module's formula, with some slack: the test machine is noisy) and the
verdict: a peer too slow to test is unknown (reason code timeout), never blocked.
"""

from __future__ import annotations

# pylint: disable=redefined-outer-name  # pytest fixtures arrive as arguments of the same name

import math
import time

import pytest

from ansible_collections.mailsec.sendgrid.plugins.module_utils._recipient_preview import (
    Preview, make_resolver, parse_nameserver, worst_case_seconds)
from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_endpoint import ENDPOINT_LIMIT_STEPS, Prober
from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_mx import MX_LIMIT_STEPS, MXProber
from tests.dns_server import DNSServer, MXWorld
from tests.integration.test_tls_check_servers import certs, serve  # noqa: F401 pylint: disable=unused-import
from tests.tls_servers import LOOPBACK, DripServer, server_context

TIMEOUT = 0.5
# Thread start-up and scheduling on a busy two-core machine; far below what any unbounded loop would take.
SLACK = 2.0
TLS_ONLY = dict(require_tls=True, require_valid_cert=False, version='1.2')
BIG_MX = 2000
SLOW_MX = 10
# Slow DNS answers, each well within the timeout of its test (a noisy machine must not make one late).
SLOW_DNS_TIMEOUT = 2.0
SLOW_ANSWER = 0.5
# Building and parsing a 2,000-record answer takes 0.1-0.2 s at load 2; make test runs this suite in three stages at once.
BIG_TIMEOUT = 1.5
WORST_ANSWER = 0.3
WORST_DOMAINS = 5


@pytest.fixture(scope='module')
def slow_world(certs):
    """MX servers that waste time, and the DNS of:

    drip.test, tarpit.test, stall.test, silent.test, closed.test - one MX of that kind (see MXWorld);
    big.test - 2,000 MX records (preferences shuffled), every host at the silent MX's address;
    slow.test - 10 MX hosts whose A and AAAA answers each take SLOW_ANSWER seconds, at the closed address;
    worst0.test... - MX answer and A/AAAA answers each WORST_ANSWER late, then an MX that drips its greeting.
    """
    world = MXWorld(certs, {'drip.test': 'drip', 'tarpit.test': 'tarpit', 'stall.test': 'stall',
                            'silent.test': 'silent', 'closed.test': 'closed'})
    records = dict(world.records)
    delays = {}
    # 7919 is prime to 2000: every preference 0-1999 once, in an order unlike the names'.
    records['big.test'] = [('MX', (index * 7919 % BIG_MX, 'mx%04d.big.test' % index)) for index in range(BIG_MX)]
    records.update({'mx%04d.big.test' % index: [('A', world.addresses['silent.test'])] for index in range(BIG_MX)})
    records['slow.test'] = [('MX', (10 + index, 'mx%d.slow.test' % index)) for index in range(SLOW_MX)]
    for index in range(SLOW_MX):
        records['mx%d.slow.test' % index] = [('A', world.addresses['closed.test'])]
        delays['mx%d.slow.test' % index] = SLOW_ANSWER
    for index in range(WORST_DOMAINS):
        domain, host = 'worst%d.test' % index, 'mx.worst%d.test' % index
        records[domain] = [('MX', (10, host))]
        records[host] = [('A', world.addresses['drip.test'])]
        delays[domain] = delays[host] = WORST_ANSWER
    world.dns = DNSServer(records, delays).start()
    yield world
    world.dns.stop()
    world.stop()


def preview(world, domains, concurrency=16, max_mx_hosts=5, timeout=TIMEOUT):
    """(entries by domain, seconds taken) of recipient_tls_info's preview, as the module runs it."""
    resolver = make_resolver([parse_nameserver(world.dns.nameserver)], timeout)
    prober = MXProber(port=world.port, timeout=timeout, ca_path=world.certificates.ca_file)
    started = time.monotonic()
    entries = Preview(TLS_ONLY, resolver, prober, timeout, concurrency, max_mx_hosts, allow_private=True).run(domains)
    return {entry['domain']: entry for entry in entries}, time.monotonic() - started


def assert_within(elapsed, bound):
    assert elapsed <= bound + SLACK, 'took %.1f s, the documented bound is %.1f s' % (elapsed, bound)


# --- recipient_tls_info ---------------------------------------------------------------------------

@pytest.mark.parametrize('domain', ['drip.test', 'tarpit.test'])
def test_mx_answering_just_in_time_ends_at_the_host_deadline_as_unknown(slow_world, domain):
    by_domain, elapsed = preview(slow_world, [domain])
    assert_within(elapsed, worst_case_seconds(1, TIMEOUT, 16))
    entry = by_domain[domain]
    (mx,) = entry['mx']
    assert (entry['verdict'], mx['verdict'], mx['error_code']) == ('unknown', 'unknown', 'timeout'), entry
    limit = MX_LIMIT_STEPS * TIMEOUT
    assert 'did not complete the test within %g seconds (the limit per MX host' % limit in mx['error']
    assert 'wait for the SMTP greeting' in mx['error']


def test_tls_handshake_that_never_ends_is_unknown_not_blocked(slow_world):
    by_domain, elapsed = preview(slow_world, ['stall.test'])
    assert_within(elapsed, worst_case_seconds(1, TIMEOUT, 16))
    entry = by_domain['stall.test']
    (mx,) = entry['mx']
    assert mx['starttls_offered'] is True
    assert (entry['verdict'], entry['blocked_by'], mx['error_code']) == ('unknown', [], 'timeout'), entry
    assert 'did not complete' in mx['error'] and 'TLS' in mx['error']


def test_2000_mx_records_cost_five_connections_and_eleven_queries(slow_world):
    queries_before = len(slow_world.dns.resolver.queries)
    silent = slow_world.by_domain['silent.test']
    connections_before = silent.connections
    by_domain, elapsed = preview(slow_world, ['big.test'], timeout=BIG_TIMEOUT)
    assert_within(elapsed, worst_case_seconds(1, BIG_TIMEOUT, 16))
    entry = by_domain['big.test']
    # The five most preferred (preferences 0-4), as a sending MTA would try them.
    assert [mx['preference'] for mx in entry['mx']] == [0, 1, 2, 3, 4]
    assert entry['mx_untested'] == BIG_MX - 5
    assert entry['verdict'] == 'unknown' and {mx['error_code'] for mx in entry['mx']} == {'timeout'}
    assert '1995 more MX hosts' in entry['reason']
    assert len(slow_world.dns.resolver.queries) - queries_before == 1 + 5 * 2  # MX, then A and AAAA of five hosts
    assert silent.connections - connections_before == 5


def test_slow_dns_answers_are_awaited_side_by_side(slow_world):
    by_domain, elapsed = preview(slow_world, ['slow.test'], max_mx_hosts=SLOW_MX, timeout=SLOW_DNS_TIMEOUT)
    # One after another, the 20 answers would take 20 x SLOW_ANSWER = 10 seconds; side by side about one answer's time.
    assert_within(elapsed, worst_case_seconds(1, SLOW_DNS_TIMEOUT, 16))
    assert elapsed < SLOW_MX * SLOW_ANSWER, elapsed  # half the time of one after another
    entry = by_domain['slow.test']
    assert len(entry['mx']) == SLOW_MX and entry['mx_untested'] == 0
    assert {mx['address'] for mx in entry['mx']} == {slow_world.addresses['closed.test']}
    assert {mx['error_code'] for mx in entry['mx']} == {'refused'} and entry['verdict'] == 'unknown'


def test_documented_worst_case_for_n_domains_holds(slow_world):
    # Each domain spends about all of its time: a slow MX answer, a slow address answer, then a dripping MX.
    domains = ['worst%d.test' % index for index in range(WORST_DOMAINS)]
    concurrency = 2
    by_domain, elapsed = preview(slow_world, domains, concurrency=concurrency)
    bound = worst_case_seconds(WORST_DOMAINS, TIMEOUT, concurrency)
    assert bound == math.ceil(WORST_DOMAINS / concurrency) * (6 * TIMEOUT + 0.5)
    assert_within(elapsed, bound)
    # Dripping MX hosts end in a timeout; a DNS answer that came too late on a busy machine is unknown as well.
    assert {entry['verdict'] for entry in by_domain.values()} == {'unknown'}


# --- tls_check ------------------------------------------------------------------------------------

@pytest.mark.parametrize('server', [
    dict(),  # a greeting line dripped a byte at a time
    dict(prefix=b'', unit=b'220-please wait\r\n', interval=0.2),  # endless greeting lines
], ids=['byte_drip', 'tarpit_lines'])
def test_smtp_greeting_answering_just_in_time_ends_at_the_endpoint_deadline(serve, server):
    drip = serve(DripServer(**server))
    started = time.monotonic()
    result = Prober(timeout=TIMEOUT).probe(LOOPBACK, drip.port, 'smtp_starttls')
    assert_within(time.monotonic() - started, ENDPOINT_LIMIT_STEPS * TIMEOUT)
    assert (result['supported'], result['reason_code']) == (False, 'timeout'), result
    assert 'did not complete the test within %g seconds (the limit per endpoint' % (ENDPOINT_LIMIT_STEPS * TIMEOUT) in (
        result['reason'])
    assert 'wait for the SMTP greeting' in result['reason']


def test_dripped_https_answer_ends_at_the_deadline_and_the_handshake_still_counts(certs, serve):
    drip = serve(DripServer(prefix=b'HTTP/1.1 200 OK\r\nX-Slow: ', context=server_context(certs.good)))
    started = time.monotonic()
    # A step of 1 s: the handshake must complete within one step, even on a busy machine.
    result = Prober(ca_path=certs.ca_file, timeout=1.0).probe(LOOPBACK, drip.port, 'https')
    assert_within(time.monotonic() - started, ENDPOINT_LIMIT_STEPS * 1.0)
    assert (result['supported'], result['protocol'], result['http_status']) == (True, 'TLSv1.3', None), result


def test_probe_many_holds_its_documented_worst_case(serve):
    drips = [serve(DripServer()) for _index in range(10)]
    endpoints = [dict(host=LOOPBACK, port=drip.port, mode='smtp_starttls') for drip in drips]
    started = time.monotonic()
    results = Prober(timeout=TIMEOUT).probe_many(endpoints, concurrency=8)
    assert_within(time.monotonic() - started, math.ceil(10 / 8) * ENDPOINT_LIMIT_STEPS * TIMEOUT)
    assert {result['reason_code'] for result in results} == {'timeout'}
