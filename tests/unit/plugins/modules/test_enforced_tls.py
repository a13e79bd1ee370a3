# -*- coding: utf-8 -*-
"""The exact HTTP conversation of enforced_tls and enforced_tls_info, scenario by scenario."""

from __future__ import annotations

import pytest
import requests

from ansible_collections.mailsec.sendgrid.plugins.modules import enforced_tls, enforced_tls_info
from ansible_collections.mailsec.sendgrid.tests.unit.http_conversation import answer, run_module

KEY = 'unit-key-0123456789'
URL = 'https://api.sendgrid.com/v3/user/settings/enforced_tls'
EU_URL = 'https://api.eu.sendgrid.com/v3/user/settings/enforced_tls'
UA = 'mailsec.sendgrid/0.1.0 (Ansible collection)'


def get(url=URL, obo=None):
    headers = {'Authorization': 'Bearer ' + KEY, 'Accept': 'application/json', 'User-Agent': UA}
    if obo:
        headers['on-behalf-of'] = obo
    return dict(method='GET', url=url, headers=headers, body=None)


def patch(body, url=URL, obo=None):
    call = get(url, obo)
    call.update(method='PATCH', body=body)
    call['headers']['Content-Type'] = 'application/json'
    return call


STATE = dict(require_tls=False, require_valid_cert=False, version=1.1)


def test_unchanged_makes_one_get(conversation, capsys):
    conv = conversation([answer(body=dict(require_tls=True, require_valid_cert=False, version=1.2))])
    result, failed = run_module(enforced_tls, dict(api_key=KEY, require_tls=True, version='1.2'), capsys)
    assert not failed and result['changed'] is False
    assert conv.calls == [get()]
    assert result['enforced_tls'] == dict(require_tls=True, require_valid_cert=False, version='1.2')


def test_drift_patches_only_what_differs(conversation, capsys):
    conv = conversation([answer(body=STATE), answer(body=dict(require_tls=True, require_valid_cert=False, version=1.2))])
    result, failed = run_module(enforced_tls, dict(api_key=KEY, require_tls=True, require_valid_cert=False, version=1.2),
                                capsys)
    assert not failed and result['changed'] is True
    assert conv.calls == [get(), patch(dict(require_tls=True, version=1.2))]
    assert result['diff'] == dict(before=dict(require_tls=False, require_valid_cert=False, version='1.1'),
                                  after=dict(require_tls=True, require_valid_cert=False, version='1.2'))


def test_unrequested_field_is_never_compared_or_sent(conversation, capsys):
    conv = conversation([answer(body=dict(require_tls=False, require_valid_cert=True, version=1.3)),
                         answer(body=dict(require_tls=True, require_valid_cert=True, version=1.3))])
    result, failed = run_module(enforced_tls, dict(api_key=KEY, require_tls=True), capsys)
    assert conv.calls[1]['body'] == dict(require_tls=True)
    assert result['enforced_tls'] == dict(require_tls=True, require_valid_cert=True, version='1.3')


def test_check_mode_only_gets(conversation, capsys):
    conv = conversation([answer(body=STATE)])
    result, failed = run_module(enforced_tls, dict(api_key=KEY, version='1.3', _ansible_check_mode=True), capsys)
    assert not failed and result['changed'] is True
    assert conv.calls == [get()]
    assert result['enforced_tls']['version'] == '1.3'


def test_state_after_comes_from_the_patch_answer(conversation, capsys):
    # SendGrid's answer is the truth: if it normalised something, we report what it says.
    conversation([answer(body=STATE), answer(body=dict(require_tls=True, require_valid_cert=True, version=1.1))])
    result, failed = run_module(enforced_tls, dict(api_key=KEY, require_tls=True), capsys)
    assert result['enforced_tls'] == dict(require_tls=True, require_valid_cert=True, version='1.1')


def test_on_behalf_of_header_and_eu_region(conversation, capsys):
    conv = conversation([answer(body=STATE), answer(body=dict(STATE, require_valid_cert=True))])
    run_module(enforced_tls, dict(api_key=KEY, region='eu', on_behalf_of='account-id 42', require_valid_cert=True), capsys)
    assert conv.calls == [get(EU_URL, 'account-id 42'), patch(dict(require_valid_cert=True), EU_URL, 'account-id 42')]


def test_api_url_overrides_region(conversation, capsys):
    conv = conversation([answer(body=STATE)])
    run_module(enforced_tls_info, dict(api_key=KEY, region='eu', api_url='https://tls12.api.sendgrid.com/'), capsys)
    assert conv.calls[0]['url'] == 'https://tls12.api.sendgrid.com/v3/user/settings/enforced_tls'


@pytest.mark.parametrize('version', ['1.2', 1.2, ' 1.2'])
def test_version_string_or_float(conversation, capsys, version):
    conv = conversation([answer(body=dict(STATE, version=1.2))])
    result, failed = run_module(enforced_tls, dict(api_key=KEY, version=version), capsys)
    assert not failed and result['changed'] is False and len(conv.calls) == 1
    assert result['enforced_tls']['version'] == '1.2'


def test_missing_fields_take_documented_defaults(conversation, capsys):
    conv = conversation([answer(body={})])
    result, failed = run_module(enforced_tls, dict(api_key=KEY, require_tls=False, require_valid_cert=False, version='1.1'),
                                capsys)
    assert result['changed'] is False and len(conv.calls) == 1
    assert result['enforced_tls'] == dict(require_tls=False, require_valid_cert=False, version='1.1')


def test_info_reads_once_and_never_changes(conversation, capsys):
    conv = conversation([answer(body=dict(require_tls=True))])
    result, failed = run_module(enforced_tls_info, dict(api_key=KEY, on_behalf_of='sub1'), capsys)
    assert conv.calls == [get(obo='sub1')]
    # "invocation" is ansible-core's addition (2.21 no longer adds it here): not ours to compare.
    result.pop('invocation', None)
    assert result == dict(changed=False, enforced_tls=dict(require_tls=True, require_valid_cert=False, version='1.1'))


@pytest.mark.parametrize('status, body, expected', [
    (401, {'errors': [{'field': None, 'message': 'authorization required'}]},
     'HTTP 401 Unauthorized on GET /v3/user/settings/enforced_tls: authorization required'),
    (403, {'errors': [{'field': None, 'message': 'access forbidden'}]},
     'HTTP 403 Forbidden on GET /v3/user/settings/enforced_tls (on behalf of sub1): access forbidden'),
    (404, {'errors': [{'field': 'username', 'message': 'not found'}]},
     'HTTP 404 Not Found on GET /v3/user/settings/enforced_tls (on behalf of sub1): not found (field: username)'),
])
def test_api_errors_name_status_method_path_and_message(conversation, capsys, status, body, expected):
    conv = conversation([answer(status, body)])
    result, failed = run_module(enforced_tls, dict(api_key=KEY, on_behalf_of=None if status == 401 else 'sub1',
                                                   require_tls=True), capsys)
    assert failed and len(conv.calls) == 1
    assert result['msg'] == 'SendGrid API error: ' + expected
    assert KEY not in str(result)


def test_500_is_retried_then_reported(conversation, capsys):
    error = answer(500, {'errors': [{'message': 'internal error'}]})
    conv = conversation([error] * 3)
    result, failed = run_module(enforced_tls, dict(api_key=KEY, require_tls=True, max_retries=2), capsys)
    assert failed and len(conv.calls) == 3
    assert result['msg'] == ('SendGrid API error: HTTP 500 Internal Server Error on GET /v3/user/settings/enforced_tls: '
                             'internal error (after 2 retries)')
    assert len(conv.sleeps) == 2 and all(0 < s <= 2 for s in conv.sleeps)


def test_429_waits_for_retry_after_then_succeeds(conversation, capsys):
    conv = conversation([answer(429, {'errors': [{'message': 'too many requests'}]}, {'Retry-After': '3'}),
                         answer(body=dict(STATE, require_tls=True))])
    result, failed = run_module(enforced_tls, dict(api_key=KEY, require_tls=True), capsys)
    assert not failed and result['changed'] is False
    assert [c['method'] for c in conv.calls] == ['GET', 'GET']
    assert 2.9 <= sum(conv.sleeps) <= 3.0


def test_429_beyond_max_retries_names_the_rate_limit(conversation, capsys):
    conv = conversation([answer(429, {'errors': [{'message': 'too many requests'}]}, {'Retry-After': '1'})] * 2)
    result, failed = run_module(enforced_tls, dict(api_key=KEY, require_tls=True, max_retries=1), capsys)
    assert failed and len(conv.calls) == 2
    assert 'HTTP 429' in result['msg'] and 'rate limit still exceeded after 1 retries' in result['msg']


def test_connection_error_is_retried(conversation, capsys):
    conv = conversation([requests.exceptions.ConnectionError('reset by peer'), answer(body=dict(STATE, version=1.3))])
    result, failed = run_module(enforced_tls_info, dict(api_key=KEY), capsys)
    assert not failed and len(conv.calls) == 2 and result['enforced_tls']['version'] == '1.3'


def test_non_json_answer_is_a_clear_error(conversation, capsys):
    conversation([answer(200, text='<html>Bad gateway</html>', headers={'Content-Type': 'text/html'})])
    result, failed = run_module(enforced_tls_info, dict(api_key=KEY), capsys)
    assert failed
    assert result['msg'] == ('SendGrid API error: HTTP 200 OK on GET /v3/user/settings/enforced_tls: '
                             'answer is not valid JSON (text/html): <html>Bad gateway</html>')


def test_wrong_types_in_answer_are_a_clear_error(conversation, capsys):
    conversation([answer(body=dict(require_tls='yes'))])
    result, failed = run_module(enforced_tls_info, dict(api_key=KEY), capsys)
    assert failed and result['msg'] == "GET /v3/user/settings/enforced_tls answered require_tls 'yes' where a boolean was expected"


def test_redirect_is_not_followed(conversation, capsys):
    conv = conversation([answer(302, headers={'Location': 'https://evil.example/steal'}, text='')])
    result, failed = run_module(enforced_tls_info, dict(api_key=KEY), capsys)
    assert failed and len(conv.calls) == 1 and 'redirect to https://evil.example/steal refused' in result['msg']


@pytest.mark.parametrize('args, message', [
    (dict(require_tls=True), 'api_key is required: set it or the SENDGRID_API_KEY environment variable'),
    (dict(api_key=KEY), 'at least one of require_tls, require_valid_cert, version is required'),
    (dict(api_key=KEY, version='1.4'), 'version must be one of "1.1", "1.2", "1.3"'),
    (dict(api_key=KEY, version='1.0'), 'version must be one of "1.1", "1.2", "1.3"'),
    (dict(api_key=KEY, version=1.4), 'version must be one of "1.1", "1.2", "1.3"'),
    (dict(api_key=KEY, version=True), 'version must be one of "1.1", "1.2", "1.3"'),
    (dict(api_key=KEY, require_tls=True, on_behalf_of=''), 'on_behalf_of must be a subuser username'),
    (dict(api_key=KEY, require_tls=True, timeout=-1), 'timeout must be a number of seconds greater than 0'),
    (dict(api_key=KEY, require_tls=True, max_retries=-1), 'max_retries must be an integer from 0 to 100'),
    (dict(api_key=KEY, require_tls=True, api_url='ftp://x'), 'api_url must be an https:// URL'),
    (dict(api_key=KEY, require_tls=True, api_url='http://api.example.com'), 'uses plain http:// to a host that is not loopback'),
    (dict(api_key=KEY, require_tls=True, region='us'), 'value of region must be one of: global, eu, got: us'),
    (dict(api_key=KEY, require_tls=True, concurrency=0), 'concurrency must be an integer from 1 to 64'),
    (dict(api_key=KEY, accounts=[dict(on_behalf_of='a')]), 'accounts[0] needs at least one of require_tls'),
    (dict(api_key=KEY, require_tls=True, accounts=[dict(on_behalf_of='')]), 'accounts[0].on_behalf_of must be'),
    (dict(api_key=KEY, require_tls=True, accounts=[dict(on_behalf_of='a', version='2')]), 'accounts[0].version must be one of'),
])
def test_bad_input_fails_before_any_request(conversation, capsys, args, message):
    conv = conversation([])
    result, failed = run_module(enforced_tls, args, capsys)
    assert failed and message in result['msg']
    assert conv.calls == []


def test_api_key_from_environment(conversation, capsys, monkeypatch):
    monkeypatch.setenv('SENDGRID_API_KEY', KEY)
    monkeypatch.setenv('SENDGRID_REGION', 'eu')
    conv = conversation([answer(body=STATE)])
    run_module(enforced_tls_info, dict(), capsys)
    assert conv.calls == [get(EU_URL)]


def test_batch_converges_each_account_and_reports_failures(conversation, capsys):
    # One worker, so the canned answers are consumed in account order.
    conv = conversation([
        answer(body=STATE), answer(body=dict(STATE, require_tls=True, version=1.2)),     # a: drifted
        answer(body=dict(STATE, require_tls=True, version=1.2)),                         # b: compliant
        answer(403, {'errors': [{'message': 'access forbidden'}]}),                      # c: fails
        answer(body=dict(STATE, require_tls=True)), answer(body=dict(STATE, require_tls=True, version=1.3)),  # d: override
    ])
    result, failed = run_module(enforced_tls, dict(api_key=KEY, require_tls=True, version='1.2', concurrency=1, accounts=[
        dict(on_behalf_of='a'), dict(on_behalf_of='b'), dict(on_behalf_of='c'), dict(on_behalf_of='d', version='1.3')]), capsys)
    assert failed and result['changed'] is True
    assert [(c['method'], c['headers']['on-behalf-of'], c['body']) for c in conv.calls] == [
        ('GET', 'a', None), ('PATCH', 'a', dict(require_tls=True, version=1.2)), ('GET', 'b', None), ('GET', 'c', None),
        ('GET', 'd', None), ('PATCH', 'd', dict(version=1.3))]
    assert [(r['on_behalf_of'], r['status']) for r in result['results']] == [
        ('a', 'changed'), ('b', 'compliant'), ('c', 'failed'), ('d', 'changed')]
    assert result['msg'].startswith('1 of 4 accounts failed: c: SendGrid API error: HTTP 403 Forbidden')
    assert [d['before_header'] for d in result['diff']] == ['a', 'd']
