# -*- coding: utf-8 -*-
"""recipient_tls_info's pure parts: option parsing, per-MX and per-domain verdicts, name matching."""

from __future__ import annotations

import pytest

from ansible_collections.mailsec.sendgrid.plugins.module_utils.tls_probe import name_matches
from ansible_collections.mailsec.sendgrid.plugins.modules.recipient_tls_info import (
    domain_verdict, mx_verdict, parse_nameserver, summarize, wanted_domains)

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
