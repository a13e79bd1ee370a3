# -*- coding: utf-8 -*-
"""recipient_tls_info's pure parts: option parsing, per-MX and per-domain verdicts, name matching, which address
of an MX is tested (never a non-public one unless allowed), and the documented time bound."""

from __future__ import annotations

from concurrent.futures import Future

import dns.resolver
import pytest

from ansible_collections.mailsec.sendgrid.plugins.module_utils._recipient_preview import (
    DOMAIN_LIMIT_STEPS, Preview, domain_verdict, embedded_ipv4, mx_verdict, non_public, parse_nameserver, summarize,
    wanted_domains, worst_case_seconds)
from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_mx import name_matches
from ansible_collections.mailsec.sendgrid.plugins.module_utils._recipient_preview import option_problems

STRICT = dict(require_tls=True, require_valid_cert=True, version='1.2')
GOOD_CERT = dict(trusted=True, untrusted_reason=None, name_matches=True, expired=False, subject_alt_names=['mx.a.test'],
                 not_after='2099-01-01T00:00:00Z')


def profile(**changes):
    base = dict(host='mx.a.test', address='192.0.2.1', starttls_offered=True, tls_best='1.3',
                tls_versions={'1.0': False, '1.1': False, '1.2': True, '1.3': True}, certificate=GOOD_CERT,
                error_code=None, error=None)
    base.update(changes)
    return base


@pytest.mark.parametrize('text, expected', [
    ('192.0.2.1', ('192.0.2.1', 53)), ('127.0.0.1:5353', ('127.0.0.1', 5353)), ('[::1]:53', ('::1', 53)),
    ('2001:db8::1', ('2001:db8::1', 53)), (' [::1] ', ('::1', 53))])
def test_parse_nameserver(text, expected):
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize('text', ['dns.example', '1.2.3.4:0', '1.2.3.4:x', '[::1', '[::1]x'])
def test_parse_nameserver_refuses(text):
    with pytest.raises(ValueError):
        parse_nameserver(text)


def test_wanted_domains():
    assert wanted_domains(['A.test', 'a.test.'], ['x@b.TEST', 'weird"@"@c.test']) == (['a.test', 'b.test', 'c.test'], [])
    assert wanted_domains([''], ['nobody'])[1] == ["'' is not a domain name", 'every recipient must be an e-mail address (with "@")']


@pytest.mark.parametrize('changes, policy, expected', [
    ({}, STRICT, ('delivered', [])),
    (dict(starttls_offered=False, tls_best=None, certificate=None), dict(STRICT, require_tls=False), ('blocked', ['require_valid_cert'])),
    (dict(starttls_offered=False, tls_best=None, certificate=None), STRICT, ('blocked', ['require_tls'])),
    (dict(tls_best='1.1', tls_versions={'1.0': True, '1.1': True, '1.2': False, '1.3': False}), STRICT, ('blocked', ['version'])),
    (dict(tls_best='1.1', tls_versions={'1.0': True, '1.1': True, '1.2': False, '1.3': False}),
     dict(STRICT, version='1.1'), ('delivered', [])),
    (dict(certificate=dict(GOOD_CERT, expired=True)), STRICT, ('blocked', ['require_valid_cert'])),
    (dict(certificate=dict(GOOD_CERT, trusted=False)), dict(STRICT, require_valid_cert=False), ('delivered', [])),
    (dict(error_code='timeout', error='No answer', starttls_offered=None, tls_best=None), STRICT, ('unknown', [])),
    (dict(error_code='refused', error='refused', starttls_offered=None, tls_best=None), STRICT, ('unknown', [])),
    (dict(starttls_offered=False), dict(require_tls=False, require_valid_cert=False, version='1.3'), ('delivered', [])),
])
def test_mx_verdict(changes, policy, expected):
    verdict, reason, blocked_by = mx_verdict(profile(**changes), policy)
    assert (verdict, blocked_by) == expected, reason


def test_domain_delivered_when_one_mx_passes_unknown_beats_blocked():
    ok = dict(verdict='delivered', reason='ok', blocked_by=[])
    bad = dict(verdict='blocked', reason='old', blocked_by=['version'])
    lost = dict(verdict='unknown', reason='timeout', blocked_by=[])
    assert domain_verdict('a.test', [bad, ok])['verdict'] == 'delivered'
    assert domain_verdict('a.test', [bad, lost])['verdict'] == 'unknown'
    both = domain_verdict('a.test', [bad, dict(bad, blocked_by=['require_valid_cert'])])
    assert both['verdict'] == 'blocked' and both['blocked_by'] == ['require_valid_cert', 'version']
    assert both['reason'].startswith('every MX fails the policy')
    gone = domain_verdict('a.test', [], ('undeliverable', 'NXDOMAIN'))
    assert summarize([both, gone])['blocked_by'] == dict(require_tls=0, require_valid_cert=1, version=1)


@pytest.mark.parametrize('name, names, expected', [
    ('mx.a.test', ['mx.a.test'], True), ('MX.A.test.', ['mx.a.test'], True), ('mx.a.test', ['*.a.test'], True),
    ('a.test', ['*.a.test'], False), ('x.mx.a.test', ['*.a.test'], False), ('mx.a.test', ['other.test'], False),
    ('mx.a.test', [], False)])
def test_name_matches(name, names, expected):
    assert name_matches(name, names) is expected


# --- non-public addresses, MX limits, time bounds ---------------------------------------------------

@pytest.mark.parametrize('address, kind', [
    ('127.0.0.2', 'loopback'), ('::1', 'loopback'), ('::ffff:127.0.0.1', 'loopback'), ('10.1.2.3', 'private'),
    ('172.16.0.1', 'private'), ('192.168.1.1', 'private'), ('::ffff:10.0.0.1', 'private'), ('fc00::1', 'private'),
    ('169.254.1.1', 'link-local'), ('fe80::1', 'link-local'), ('0.0.0.0', 'unspecified'), ('::', 'unspecified'),
    ('224.0.0.1', 'multicast'), ('ff02::1', 'multicast'), ('240.0.0.1', 'reserved')])
def test_non_public_addresses_are_named(address, kind):
    assert non_public(address) == kind


@pytest.mark.parametrize('address', ['100.64.0.1', '192.0.2.1', '2001:db8::1', '198.18.0.1'])
def test_shared_and_documentation_addresses_are_not_public(address):
    assert non_public(address) is not None


@pytest.mark.parametrize('address', ['8.8.8.8', '93.184.216.34', '2001:4860:4860::8888', '::ffff:8.8.8.8'])
def test_public_addresses(address):
    assert non_public(address) is None


# Teredo (RFC 4380): 2001:0:<server>:<flags>:<port>:<client>, the client's IPv4 address stored inverted.
TEREDO_PRIVATE_CLIENT = '2001:0:4136:e378:8000:63bf:f5ff:fffe'  # server 65.54.227.120, client 10.0.0.1
TEREDO_LOOPBACK_SERVER = '2001:0:7f00:1:8000:63bf:f7f7:f7f7'  # server 127.0.0.1, client 8.8.8.8
TEREDO_PUBLIC = '2001:0:4136:e378:8000:63bf:f7f7:f7f7'  # server 65.54.227.120, client 8.8.8.8


@pytest.mark.parametrize('address, form, carried', [
    ('::ffff:10.0.0.1', 'IPv4-mapped', ['10.0.0.1']),
    ('2002:7f00:1::1', '6to4', ['127.0.0.1']),
    ('2002:801:101:ab::1', '6to4', ['8.1.1.1']),
    (TEREDO_PRIVATE_CLIENT, 'Teredo', ['65.54.227.120', '10.0.0.1']),
    ('64:ff9b::7f00:1', 'NAT64', ['127.0.0.1']),
    ('64:ff9b::8.8.8.8', 'NAT64', ['8.8.8.8']),
    ('64:ff9b:1:808:8:800::', 'NAT64 local-use', []),  # 8.8.8.8 in RFC 6052's layout for a /48
    ('::8.8.8.8', 'IPv4-compatible', ['8.8.8.8']),
    ('::', None, []), ('::1', None, []), ('2001:4860:4860::8888', None, []), ('64:ff9b:0:1::808:808', None, []),
    ('8.8.8.8', None, [])])
def test_the_ipv4_addresses_an_ipv6_address_carries(address, form, carried):
    found_form, found = embedded_ipv4(address)
    assert (found_form, [str(ipv4) for ipv4 in found]) == (form, carried)


@pytest.mark.parametrize('address, kind', [
    ('2002:7f00:1::1', '6to4 address embedding 127.0.0.1, a loopback'),
    ('2002:c0a8:101::1', '6to4 address embedding 192.168.1.1, a private'),
    ('2002:6440:1::1', '6to4 address embedding 100.64.0.1, a non-global'),
    ('2002::1', '6to4 address embedding 0.0.0.0, an unspecified'),
    (TEREDO_PRIVATE_CLIENT, 'Teredo address embedding 10.0.0.1, a private'),
    (TEREDO_LOOPBACK_SERVER, 'Teredo address embedding 127.0.0.1, a loopback'),
    ('64:ff9b::7f00:1', 'NAT64 address embedding 127.0.0.1, a loopback'),
    ('64:ff9b::a00:1', 'NAT64 address embedding 10.0.0.1, a private'),
    ('64:ff9b:1::808:808', 'NAT64 local-use (64:ff9b:1::/48)'),
    ('64:ff9b:1:808:8:800::', 'NAT64 local-use (64:ff9b:1::/48)'),
    ('::8.8.8.8', 'deprecated IPv4-compatible (::/96)'),
    ('::127.0.0.1', 'deprecated IPv4-compatible (::/96)'),
    ('::ffff:127.0.0.1', 'loopback'), ('::ffff:10.0.0.1', 'private')])
def test_an_ipv6_address_is_judged_by_the_ipv4_addresses_it_carries(address, kind):
    assert non_public(address) == kind


@pytest.mark.parametrize('address', ['2002:801:101::1', TEREDO_PUBLIC, '64:ff9b::808:808', '::ffff:8.8.8.8'])
def test_an_ipv6_address_carrying_only_public_ipv4_addresses_is_public(address):
    assert non_public(address) is None


def test_an_mx_whose_ipv6_address_leads_to_a_loopback_address_is_not_tested():
    mx = host(aaaa=['2002:7f00:1::1', '64:ff9b::7f00:1'])
    assert (mx['address'], mx['error_code']) == ('2002:7f00:1::1', 'private_address')
    assert '2002:7f00:1::1 is a 6to4 address embedding 127.0.0.1, a loopback address' in mx['error']
    assert host(a=['10.0.0.1'], aaaa=['2002:7f00:1::1', '2002:801:101::1'])['address'] == '2002:801:101::1'


def looked_up(*outcomes):
    """Finished look-up futures: a list of addresses, or an exception the look-up raised."""
    futures = []
    for outcome in outcomes:
        future = Future()
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
        futures.append(future)
    return futures


def host(allow_private=False, a=(), aaaa=()):
    resolver = prober = None  # _host() uses neither
    return Preview(STRICT, resolver, prober, 1.0, allow_private=allow_private)._host('mx.a.test', 10, *looked_up(a, aaaa))


def test_the_first_public_address_is_tested_ipv4_first():
    assert host(a=['10.0.0.1', '192.0.2.9', '93.184.216.34'], aaaa=['2001:4860::1'])['address'] == '93.184.216.34'
    assert host(a=['10.0.0.1'], aaaa=['::1', '2001:4860::1'])['address'] == '2001:4860::1'


def test_an_mx_with_only_non_public_addresses_is_not_tested_unless_allowed():
    private = host(a=['127.0.0.2', '10.0.0.1'])
    assert private['address'] == '127.0.0.2' and private['error_code'] == 'private_address'
    assert 'SendGrid cannot reach it' in private['error'] and '127.0.0.2 is a loopback address' in private['error']
    verdict, reason, blocked_by = mx_verdict(dict(profile(), **private), STRICT)
    assert (verdict, blocked_by) == ('unknown', []) and 'allow_private' in reason
    allowed = host(allow_private=True, a=['127.0.0.2'])
    assert (allowed['address'], allowed['error_code']) == ('127.0.0.2', None)


def test_an_mx_without_address_is_undeliverable_but_a_failed_look_up_is_unknown():
    none = host()
    assert none['error_code'] == 'dns' and mx_verdict(dict(profile(), **none), STRICT)[0] == 'undeliverable'
    failed = host(a=dns.resolver.LifetimeTimeout(timeout=1.0, errors=[]))
    assert failed['error_code'] == 'dns_error' and 'look-up of its address failed' in failed['error']
    assert mx_verdict(dict(profile(), **failed), STRICT)[0] == 'unknown'
    half = host(a=dns.resolver.LifetimeTimeout(timeout=1.0, errors=[]), aaaa=['2001:4860::1'])
    assert (half['address'], half['error_code']) == ('2001:4860::1', None)


def test_a_version_that_could_not_be_tested_makes_the_version_check_unknown():
    stalled = profile(tls_best='1.2', tls_versions={'1.0': False, '1.1': False, '1.2': True, '1.3': None})
    verdict, reason, blocked_by = mx_verdict(stalled, dict(STRICT, version='1.3'))
    assert (verdict, blocked_by) == ('unknown', []) and 'could not be tested' in reason
    assert mx_verdict(stalled, STRICT)[0] == 'delivered'


def test_untested_mx_hosts_are_counted_and_named_in_the_reason():
    bad = dict(verdict='blocked', reason='old', blocked_by=['version'])
    entry = domain_verdict('a.test', [bad], untested=7)
    assert entry['mx_untested'] == 7 and entry['reason'] == 'old (7 more MX hosts, of lower preference, were not tested)'
    assert domain_verdict('a.test', [dict(bad, verdict='delivered')], untested=7)['reason'] == 'old'


@pytest.mark.parametrize('changes, problem', [
    (dict(max_mx_hosts=0), 'max_mx_hosts must be 1-10, got 0'), (dict(max_mx_hosts=11), 'max_mx_hosts must be 1-10, got 11'),
    (dict(concurrency=0), 'concurrency must be 1-256, got 0'), (dict(timeout=0.0), 'timeout must be a positive number'),
    (dict(smtp_port=70000), 'smtp_port must be 1-65535, got 70000'),
    (dict(concurrency=64, max_mx_hosts=5), 'concurrency x max_mx_hosts must be at most 256 (connections open at once), got 64 x 5')])
def test_option_problems_name_the_option_and_what_it_allows(changes, problem):
    options = dict(dict(smtp_port=25, timeout=10.0, concurrency=16, max_mx_hosts=5), **changes)
    (message,) = option_problems(options)
    assert message.startswith(problem)


def test_worst_case_is_whole_rounds_of_domains():
    # 6 steps a domain: its MX look-up, its address look-ups side by side, then its MX hosts side by side (4 steps).
    assert DOMAIN_LIMIT_STEPS == 6
    assert worst_case_seconds(1, 10.0, 16) == worst_case_seconds(16, 10.0, 16) == 60.5
    assert worst_case_seconds(17, 10.0, 16) == 121.0
    assert worst_case_seconds(100, 10.0, 16) == 7 * 60.5
