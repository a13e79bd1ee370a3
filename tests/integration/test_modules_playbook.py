# -*- coding: utf-8 -*-
"""enforced_tls and enforced_tls_info through real ansible-playbook runs against the simulator."""

from __future__ import annotations

from tests.conftest import API_KEY
from tests.contract.openapi_check import validate_logged_requests

POLICY = dict(require_tls=True, require_valid_cert=True, version='1.2')


def enforce(sim, **options):
    return {'name': 'Enforce', 'mailsec.sendgrid.enforced_tls': dict(api_url=sim.url, **options), 'register': 'out'}


def test_check_apply_apply_again(sim, run_playbook):
    sim.add_subuser('marketing')
    env = dict(SENDGRID_API_KEY=API_KEY)
    task = enforce(sim, on_behalf_of='marketing', **POLICY)

    check = run_playbook([task], save=['out'], env=env, check=True, diff=True)
    assert check.rc == 0, check.output
    assert check.results['out']['changed'] is True
    assert check.results['out']['enforced_tls'] == dict(require_tls=True, require_valid_cert=True, version='1.2')
    assert sim.count('PATCH') == 0 and sim.count('GET') == 1
    assert sim.settings('marketing') == dict(require_tls=False, require_valid_cert=False, version=1.1)
    assert '-    "require_tls": false,' in check.stdout and '+    "require_tls": true,' in check.stdout

    apply = run_playbook([task], save=['out'], env=env, diff=True)
    assert apply.rc == 0, apply.output
    assert apply.results['out']['changed'] is True
    assert sim.count('PATCH') == 1 and sim.settings('marketing') == dict(require_tls=True, require_valid_cert=True, version=1.2)

    sim.clear_log()
    again = run_playbook([task], save=['out'], env=env)
    assert again.rc == 0 and again.recap()['changed'] == 0
    assert sim.count('PATCH') == 0 and sim.count('GET') == 1
    validate_logged_requests(sim.requests)


def test_only_requested_fields_are_written(sim, run_playbook):
    sim.set_settings(None, dict(require_tls=False, require_valid_cert=True, version=1.3))
    run = run_playbook([enforce(sim, api_key=API_KEY, require_tls=True)], save=['out'])
    assert run.rc == 0, run.output
    (patch,) = [r for r in sim.requests if r['method'] == 'PATCH']
    assert patch['body'] == dict(require_tls=True) and patch['on_behalf_of'] is None
    assert sim.settings() == dict(require_tls=True, require_valid_cert=True, version=1.3)


def test_customer_account_and_yaml_float_version(sim, run_playbook):
    account = sim.add_customer(42)
    run = run_playbook([enforce(sim, api_key=API_KEY, on_behalf_of=account, version=1.3)], save=['out'])
    assert run.rc == 0, run.output
    assert run.results['out']['enforced_tls']['version'] == '1.3'
    assert sim.settings(account)['version'] == 1.3
    assert [r['on_behalf_of'] for r in sim.requests] == ['account-id 42', 'account-id 42']


def test_module_defaults_group_reaches_every_module(sim, run_playbook):
    sim.add_subuser('billing')
    play = [dict(name='Group defaults', hosts='localhost', gather_facts=False,
                 module_defaults={'group/mailsec.sendgrid.api': dict(api_key=API_KEY, api_url=sim.url, max_retries=0)},
                 tasks=[
                     {'name': 'Set', 'mailsec.sendgrid.enforced_tls': dict(on_behalf_of='billing', require_tls=True)},
                     {'name': 'Read', 'mailsec.sendgrid.enforced_tls_info': dict(on_behalf_of='billing'), 'register': 'info'},
                     {'name': 'Check', 'ansible.builtin.assert': {'that': ['info.enforced_tls.require_tls']}},
                 ])]
    run = run_playbook(playbook=play)
    assert run.rc == 0, run.output
    assert [(r['method'], r['on_behalf_of']) for r in sim.requests] == [('GET', 'billing'), ('PATCH', 'billing'), ('GET', 'billing')]


def test_info_module_in_check_mode(sim, run_playbook):
    sim.add_subuser('a', settings=dict(require_tls=True))
    run = run_playbook([{'name': 'Read', 'mailsec.sendgrid.enforced_tls_info': dict(api_key=API_KEY, api_url=sim.url, accounts=['a']),
                         'register': 'out'}], save=['out'], check=True)
    assert run.rc == 0, run.output
    assert run.results['out']['changed'] is False
    assert run.results['out']['results'][0]['enforced_tls'] == dict(require_tls=True, require_valid_cert=False, version='1.1')


def test_wrong_key_is_one_clear_line_and_never_printed(sim, run_playbook):
    wrong = 'wrong-key-5d1e0a77-do-not-print'
    run = run_playbook([enforce(sim, api_key=wrong, require_tls=True)], verbosity=3)
    assert run.rc == 2
    assert ('SendGrid API error: HTTP 401 Unauthorized on GET /v3/user/settings/enforced_tls: '
            'The provided authorization grant is invalid, expired, or revoked') in run.stdout
    assert wrong not in run.output and 'Traceback' not in run.output
    assert sim.count() == 1


def test_bad_option_fails_before_any_request(sim, run_playbook):
    run = run_playbook([enforce(sim, api_key=API_KEY, version='1.4')])
    assert run.rc == 2 and 'version must be one of "1.1", "1.2", "1.3"' in run.stdout
    assert sim.count() == 0
