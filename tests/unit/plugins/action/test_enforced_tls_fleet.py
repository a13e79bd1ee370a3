# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet engine's pure parts (plugin_utils): one host's enforced_tls_policy_* variables resolved into its account,
policy and connection (resolve_account), and one account's outcome as the host's task result (host_result)."""

from __future__ import annotations

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._fleet_converge import host_result
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._fleet_hosts import play_vars_for_host, resolve_account
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._snapshot import DEFAULT_DIR

try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core < 2.19 treats every string as a template
    def trust_as_template(value):
        return value

KEY = 'unit-key-0123456789'
POLICY = dict(enforced_tls_policy_require_tls=True, enforced_tls_policy_require_valid_cert=True,
              enforced_tls_policy_version='1.2')
STRICT = dict(require_tls=True, require_valid_cert=True, version='1.2')
DEFAULTS = dict(require_tls=False, require_valid_cert=False, version='1.1')


def resolve(variables, host='marketing'):
    """resolve_account as the action calls it: the host's variables, and a templar that sees them."""
    return resolve_account(host, variables, Templar(loader=DataLoader(), variables=variables))


def with_policy(**values):
    """The policy and the key (as group_vars would give them), these host variables on top."""
    variables = dict(POLICY, enforced_tls_policy_api_key=KEY)
    variables.update(values)
    return variables


def test_policy_connection_and_defaults():
    account, unknown = resolve(with_policy())
    assert account == dict(host='marketing', on_behalf_of='marketing', desired=STRICT,
                           connection=dict(api_key=KEY, region='global', api_url=None, timeout=30.0, max_retries=5),
                           concurrency=8, snapshot_dir=DEFAULT_DIR, impact=None)
    assert unknown == []


def test_a_hosts_own_variables_override_the_defaults():
    """Per-subuser overrides: whatever Ansible's precedence gave the host (host_vars over group_vars) is used as is."""
    account = resolve(with_policy(enforced_tls_policy_version=1.3, enforced_tls_policy_require_valid_cert=False,
                                  sendgrid_region='eu', enforced_tls_policy_on_behalf_of='account-id 42',
                                  enforced_tls_policy_concurrency='16', enforced_tls_policy_snapshot_dir='/var/lib/snapshots'),
                      host='eu-team')[0]
    assert account['desired'] == dict(require_tls=True, require_valid_cert=False, version='1.3')
    assert account['on_behalf_of'] == 'account-id 42'
    assert account['connection']['region'] == 'eu'  # the inventory plugin's sendgrid_region
    assert account['concurrency'] == 16 and account['snapshot_dir'] == '/var/lib/snapshots'


def test_the_region_variable_beats_sendgrid_region_and_api_url_is_kept():
    account = resolve(with_policy(sendgrid_region='eu', enforced_tls_policy_region='global',
                                  enforced_tls_policy_api_url='http://127.0.0.1:8025'))[0]
    assert account['connection'] == dict(api_key=KEY, region='global', api_url='http://127.0.0.1:8025', timeout=30.0,
                                         max_retries=5)


def test_templates_are_resolved_and_the_keys_newline_removed():
    account = resolve(with_policy(vault_sendgrid_key=KEY + '\n', wanted='1.3',
                                  enforced_tls_policy_api_key=trust_as_template('{{ vault_sendgrid_key }}'),
                                  enforced_tls_policy_version=trust_as_template('{{ wanted }}')))[0]
    assert account['connection']['api_key'] == KEY
    assert account['desired']['version'] == '1.3'


def test_environment_fallbacks(monkeypatch):
    monkeypatch.setenv('SENDGRID_API_KEY', KEY)
    monkeypatch.setenv('SENDGRID_API_URL', 'http://127.0.0.1:8025')
    assert resolve(dict(POLICY))[0]['connection'] == dict(api_key=KEY, region='global', api_url='http://127.0.0.1:8025',
                                                          timeout=30.0, max_retries=5)


ENDPOINT_LEVELS = [
    # (role variables, host variables, environment) -> (region, api_url): the first level that sets either wins.
    (dict(), dict(), dict(), ('global', None)),
    (dict(), dict(), dict(SENDGRID_REGION='eu'), ('eu', None)),
    (dict(), dict(), dict(SENDGRID_REGION='eu', SENDGRID_API_URL='http://127.0.0.1:1'), ('eu', 'http://127.0.0.1:1')),
    (dict(), dict(sendgrid_region='global'), dict(SENDGRID_REGION='eu'), ('global', None)),
    (dict(), dict(sendgrid_api_url='http://127.0.0.1:2'), dict(SENDGRID_REGION='eu'), ('global', 'http://127.0.0.1:2')),
    (dict(), dict(sendgrid_api_url='http://127.0.0.1:2', sendgrid_region='eu'), dict(), ('eu', 'http://127.0.0.1:2')),
    (dict(enforced_tls_policy_region='eu'), dict(sendgrid_api_url='http://127.0.0.1:2'), dict(), ('eu', None)),
    (dict(enforced_tls_policy_api_url='http://127.0.0.1:3'), dict(sendgrid_region='eu'), dict(SENDGRID_API_URL='http://127.0.0.1:1'),
     ('global', 'http://127.0.0.1:3')),
    # Empty survey answers and AWX credential fields mean "not set".
    (dict(enforced_tls_policy_region=''), dict(sendgrid_region=''), dict(SENDGRID_REGION='eu', SENDGRID_API_URL=''), ('eu', None)),
]


@pytest.mark.parametrize('role, host, environment, expected', ENDPOINT_LEVELS)
def test_the_endpoint_is_resolved_in_one_order(monkeypatch, role, host, environment, expected):
    for name in ('SENDGRID_REGION', 'SENDGRID_API_URL'):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    connection = resolve(with_policy(**dict(role, **host)))[0]['connection']
    assert (connection['region'], connection['api_url']) == expected


def test_timeout_and_max_retries_from_role_variables_and_survey_strings():
    connection = resolve(with_policy(enforced_tls_policy_timeout='3', enforced_tls_policy_max_retries='1'))[0]['connection']
    assert (connection['timeout'], connection['max_retries']) == (3.0, 1)
    assert resolve(with_policy(enforced_tls_policy_timeout=0.5, enforced_tls_policy_max_retries=0))[1] == []


def test_the_guardrail_settings_take_the_hosts_policy():
    account = resolve(with_policy(enforced_tls_policy_impact_domains=['example.com'], enforced_tls_policy_max_blocked='2',
                                  enforced_tls_policy_impact_smtp_port='2525', enforced_tls_policy_impact_allow_private='yes',
                                  enforced_tls_policy_require_valid_cert=False))[0]
    assert account['impact'] == dict(max_blocked=2, options=dict(domains=['example.com'], smtp_port=2525, allow_private=True,
                                                                 require_tls=True, require_valid_cert=False, version='1.2'))
    assert resolve(with_policy(enforced_tls_policy_impact_domains=[]))[0]['impact'] is None


@pytest.mark.parametrize('answer, expected', [('true', True), ('False', False), ('yes', True), ('0', False)])
def test_survey_answers_arrive_as_strings(answer, expected):
    account = resolve(dict(enforced_tls_policy_api_key=KEY, enforced_tls_policy_require_tls=answer))[0]
    assert account['desired'] == dict(require_tls=expected)


def test_empty_answers_mean_not_managed():
    account = resolve(dict(enforced_tls_policy_api_key=KEY, enforced_tls_policy_require_tls='', enforced_tls_policy_require_valid_cert=None,
                           enforced_tls_policy_version='1.2', enforced_tls_policy_region='', sendgrid_region='eu'))[0]
    assert account['desired'] == dict(version='1.2')
    assert account['connection']['region'] == 'eu'


def test_an_empty_on_behalf_of_addresses_the_parent_account():
    assert resolve(with_policy(enforced_tls_policy_on_behalf_of=''))[0]['on_behalf_of'] is None


def test_unknown_variables_are_named():
    unknown = resolve(with_policy(enforced_tls_policy_requiretls=True, enforced_tls_policy_vesion='1.3', other_variable=1))[1]
    assert unknown == ['enforced_tls_policy_requiretls', 'enforced_tls_policy_vesion']


@pytest.mark.parametrize('variables, message', [
    (dict(enforced_tls_policy_api_key=KEY), 'no policy: set at least one of enforced_tls_policy_require_tls'),
    (dict(POLICY), 'enforced_tls_policy_api_key is required'),
    (with_policy(enforced_tls_policy_require_tls='maybe'), "enforced_tls_policy_require_tls must be a boolean (true or false), got 'maybe'"),
    (with_policy(enforced_tls_policy_version='1.0'), 'enforced_tls_policy_version must be one of'),
    (with_policy(enforced_tls_policy_region='us'), 'enforced_tls_policy_region must be one of'),
    (with_policy(enforced_tls_policy_api_url='http://api.example.com'),
     "enforced_tls_policy_api_url 'http://api.example.com' uses plain http:// to a host that is not loopback"),
    (with_policy(enforced_tls_policy_on_behalf_of=' ops'), 'enforced_tls_policy_on_behalf_of must not contain leading/trailing spaces'),
    (with_policy(enforced_tls_policy_concurrency=0), 'enforced_tls_policy_concurrency must be an integer from 1 to 64'),
    (with_policy(enforced_tls_policy_snapshot_dir=' '), 'enforced_tls_policy_snapshot_dir must be a directory path'),
    (with_policy(enforced_tls_policy_timeout='soon'), "enforced_tls_policy_timeout must be a number, got 'soon'"),
    (with_policy(enforced_tls_policy_timeout=0), 'enforced_tls_policy_timeout must be a number of seconds greater than 0'),
    (with_policy(enforced_tls_policy_timeout=True), 'enforced_tls_policy_timeout must be a number, got True'),
    (with_policy(enforced_tls_policy_max_retries=1.5), 'enforced_tls_policy_max_retries must be a whole number, got 1.5'),
    (with_policy(enforced_tls_policy_max_retries=101), 'enforced_tls_policy_max_retries must be an integer from 0 to 100'),
    (with_policy(enforced_tls_policy_impact_domains='example.com'), 'enforced_tls_policy_impact_domains must be a list'),
    (with_policy(enforced_tls_policy_impact_domains=['a.test'], enforced_tls_policy_max_blocked=-1),
     'enforced_tls_policy_max_blocked must be a whole number of 0 or more, got -1'),
    (with_policy(enforced_tls_policy_impact_domains=['a.test'], enforced_tls_policy_impact_allow_private='maybe'),
     'enforced_tls_policy_impact_allow_private must be a boolean'),
])
def test_bad_variables_are_named(variables, message):
    with pytest.raises(ValueError) as error:
        resolve(variables)
    assert message in str(error.value)


def test_a_bad_key_is_described_never_shown():
    with pytest.raises(ValueError) as error:
        resolve(with_policy(enforced_tls_policy_api_key='unit key 0123456789'))
    assert 'enforced_tls_policy_api_key contains U+0020' in str(error.value)
    assert 'unit key' not in str(error.value)


# -- host_result --------------------------------------------------------------------------------------------------------

def converged(before, changes, **extra):
    """An account's result as module_utils._enforced_tls.converge and run_batch give it."""
    result = dict(failed=False, changed=bool(changes), before=before, enforced_tls=dict(before, **changes), changes=changes,
                  status='changed' if changes else 'compliant', on_behalf_of='marketing')
    result.update(extra)
    return result


def test_a_compliant_account_is_unchanged_without_diff():
    result = host_result(converged(STRICT, {}), 'enforce', False)
    assert result['changed'] is False and result['compliant'] is True and result['differences'] == {}
    assert 'diff' not in result


def test_enforce_reports_each_difference_and_a_diff():
    result = host_result(converged(DEFAULTS, dict(require_tls=True, version='1.2')), 'enforce', False)
    assert result['changed'] is True and result['compliant'] is False
    assert result['differences'] == dict(require_tls=dict(current=False, desired=True), version=dict(current='1.1', desired='1.2'))
    assert result['diff'] == dict(before=DEFAULTS, after=dict(require_tls=True, require_valid_cert=False, version='1.2'))


@pytest.mark.parametrize('check_mode, changed', [(False, False), (True, True)])
def test_an_audit_reports_drift_as_a_change_only_in_check_mode(check_mode, changed):
    """An audit never writes: "changed" would claim a write; in check mode it means "would change"."""
    result = host_result(converged(DEFAULTS, dict(require_tls=True), status='would_change'), 'audit', check_mode)
    assert result['changed'] is changed
    assert result['compliant'] is False and result['differences'] == dict(require_tls=dict(current=False, desired=True))


def test_a_failed_account_is_failed_and_unchanged():
    failure = dict(failed=True, changed=True, status='failed', msg='HTTP 403 Forbidden', on_behalf_of='marketing')
    assert host_result(failure, 'enforce', False) == dict(failure, changed=False)


def test_the_given_result_is_left_alone():
    given = converged(DEFAULTS, dict(version='1.2'))
    copy = dict(given)
    host_result(given, 'enforce', False)
    assert given == copy


class _Manager:
    """A VariableManager stand-in recording how get_vars was called."""

    def __init__(self):
        self.calls = []

    def get_vars(self, play=None, host=None, task=None, **private):
        self.calls.append(sorted(private))
        return dict(host=host)


def test_other_hosts_variables_spare_ansible_the_list_of_the_plays_hosts():
    manager = _Manager()
    assert play_vars_for_host(manager, 'play', 'sub0001', 'task', ['sub0001', 'sub0002']) == dict(host='sub0001')
    assert manager.calls == [['_hosts', '_hosts_all']]
