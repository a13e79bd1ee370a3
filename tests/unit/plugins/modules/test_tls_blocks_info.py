# -*- coding: utf-8 -*-
"""The exact HTTP conversation of tls_blocks_info: paging, time window, on-behalf-of, regions, bad input, bad answers."""

from __future__ import annotations

import pytest

from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_blocks import TLS_REASON_PATTERNS, is_tls_block
from ansible_collections.mailsec.sendgrid.plugins.modules import tls_blocks_info
from ansible_collections.mailsec.sendgrid.tests.unit.http_conversation import answer, run_module

KEY = 'unit-key-0123456789'
URL = 'https://api.sendgrid.com/v3/suppression/blocks'
EU_URL = 'https://api.eu.sendgrid.com/v3/suppression/blocks'
UA = 'mailsec.sendgrid/0.1.0 (Ansible collection)'
TLS_REASON = 'TLS required but not supported'


def get(query, url=URL, obo=None):
    headers = {'Authorization': 'Bearer ' + KEY, 'Accept': 'application/json', 'User-Agent': UA}
    if obo:
        headers['on-behalf-of'] = obo
    return dict(method='GET', url=url + '?' + query, headers=headers, body=None)


def block(number, domain='legacy.example', reason=TLS_REASON, created=1700000000):
    return dict(created=created, email='user%d@%s' % (number, domain), reason=reason, status='4.0.0')


def test_pages_until_a_short_page_and_keeps_only_tls_blocks(conversation, capsys):
    first = [block(n) if n % 2 else block(n, 'example.net', 'unable to resolve MX record for example.net: servfail')
             for n in range(500)]
    second = [block(n, 'Old.Example') for n in range(500, 700)]
    conv = conversation([answer(body=first), answer(body=second)])
    result, failed = run_module(tls_blocks_info, dict(api_key=KEY, on_behalf_of='sub0005', start_time=1700000000,
                                                      end_time=1700003600), capsys)
    assert not failed and result['changed'] is False
    assert conv.calls == [get('start_time=1700000000&end_time=1700003600&limit=500&offset=0', obo='sub0005'),
                          get('start_time=1700000000&end_time=1700003600&limit=500&offset=500', obo='sub0005')]
    assert result['blocks_read'] == 700 and result['tls_blocks'] == 450
    assert result['domains'] == {'legacy.example': 250, 'old.example': 200}
    assert result['blocks'][0] == dict(block(1), domain='legacy.example')


def test_an_exactly_full_last_page_costs_one_empty_read(conversation, capsys):
    conv = conversation([answer(body=[block(n) for n in range(2)]), answer(body=[])])
    result, failed = run_module(tls_blocks_info, dict(api_key=KEY, page_size=2), capsys)
    assert not failed and result['tls_blocks'] == 2
    assert [c['url'] for c in conv.calls] == [URL + '?limit=2&offset=0', URL + '?limit=2&offset=2']


def test_eu_region_reads_the_eu_endpoint(conversation, capsys):
    conv = conversation([answer(body=[])])
    result, failed = run_module(tls_blocks_info, dict(api_key=KEY, region='eu', on_behalf_of='eu-sub', email='sales'), capsys)
    assert not failed and result['tls_blocks'] == 0 and result['domains'] == {}
    assert conv.calls == [get('email=sales&limit=500&offset=0', url=EU_URL, obo='eu-sub')]


@pytest.mark.parametrize('args, message', [
    (dict(start_time=20, end_time=10), 'start_time (20) must not be after end_time (10)'),
    (dict(start_time=-1), 'start_time must be epoch seconds (0 or more), got -1'),
    (dict(page_size=501), "page_size must be an integer from 1 to 500 (SendGrid's largest page), got 501"),
    (dict(page_size=0), "page_size must be an integer from 1 to 500 (SendGrid's largest page), got 0"),
    (dict(region='us'), 'value of region must be one of: global, eu, got: us'),
    (dict(on_behalf_of=''), 'on_behalf_of must be a subuser username'),
])
def test_bad_input_fails_before_any_request(conversation, capsys, args, message):
    conv = conversation([])
    result, failed = run_module(tls_blocks_info, dict(dict(api_key=KEY), **args), capsys)
    assert failed and message in result['msg'] and conv.calls == []


def test_api_error_names_status_method_path_and_message(conversation, capsys):
    conversation([answer(403, body=dict(errors=[dict(field=None, message='access forbidden')]))])
    result, failed = run_module(tls_blocks_info, dict(api_key=KEY, on_behalf_of='sub1'), capsys)
    assert failed
    assert result['msg'] == ('SendGrid API error: HTTP 403 Forbidden on GET /v3/suppression/blocks (on behalf of sub1): '
                             'access forbidden')
    assert KEY not in str(result)


@pytest.mark.parametrize('body, message', [
    (dict(result=[]), 'answered dict where a JSON list was expected'),
    ([dict(created=1, reason='x')], 'answered an item without an email address'),
    ([dict(created='yesterday', email='a@b.example', reason='x', status='y')], "whose created is 'yesterday'"),
])
def test_malformed_answers_are_clear_errors(conversation, capsys, body, message):
    conversation([answer(body=body)])
    result, failed = run_module(tls_blocks_info, dict(api_key=KEY), capsys)
    assert failed and message in result['msg'] and 'Traceback' not in str(result)


@pytest.mark.parametrize('reason', [
    'TLS required but not supported',
    'tls required but not supported',
    '530 5.7.0 Must issue a STARTTLS command first',
    'SSL routines: wrong version number',
    'certificate verify failed: self signed certificate in certificate chain',
    'x509: certificate has expired or is not yet valid',
    'TLS handshake failed',
    '530 Encryption required for requested authentication mechanism',
])
def test_tls_reasons(reason):
    assert is_tls_block(reason)


@pytest.mark.parametrize('reason', [
    "error dialing remote address: dial tcp 10.57.152.165:25: no route to host",
    'unable to resolve MX record for example.com: servfail',
    '550 5.1.1 The email account that you tried to reach does not exist',
    '554 5.7.1 Message rejected as spam (mentions settlement)',
    '',
])
def test_other_reasons(reason):
    assert not is_tls_block(reason)


def test_patterns_are_documented_in_the_module():
    # DOCUMENTATION lists the patterns (YAML doubles the quote in "SendGrid's"): keep both in step.
    for pattern in TLS_REASON_PATTERNS:
        assert 'C(%s)' % pattern in tls_blocks_info.DOCUMENTATION, pattern
