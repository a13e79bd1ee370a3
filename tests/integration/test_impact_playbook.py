# -*- coding: utf-8 -*-
"""The impact playbook and the enforced_tls_policy role's guardrail, for real, against the MX world of tests.dns_server."""

from __future__ import annotations

# pylint: disable=redefined-outer-name  # pytest fixtures arrive as arguments of the same name

import json

import pytest
import yaml

from tests.conftest import API_KEY
from tests.dns_server import TIMEOUT, world  # noqa: F401 pylint: disable=unused-import


def test_impact_playbook_writes_both_reports(run_playbook, world, tmp_path):
    domains_file = tmp_path / 'domains.txt'
    domains_file.write_text('# our biggest recipients\ngood.test\nselfsigned.test  # the partner\n\noldtls.test\nplain.test\nsilent.test\n')
    policy = tmp_path / 'policy.yml'
    policy.write_text(yaml.safe_dump(dict(enforced_tls_policy_require_tls=True, enforced_tls_policy_require_valid_cert=True,
                                          enforced_tls_policy_version=1.2)))
    reports = tmp_path / 'reports'
    reports.mkdir()
    extra = dict(domains_file=str(domains_file), impact_report_dir=str(reports), impact_nameservers=[world.nameserver],
                 impact_smtp_port=world.port, impact_ca_path=world.certificates.ca_file, impact_timeout=TIMEOUT,
                 impact_domains=['wrongname.test'], impact_allow_private=True)
    run = run_playbook(playbook_name='mailsec.sendgrid.impact', args=['-e', '@%s' % policy, '-e', json.dumps(extra)])
    assert run.rc == 0, run.output
    assert ('4 of 6 domains would be blocked by require_tls (1), require_valid_cert (2), version (1); '
            '1 delivered, 1 unknown') in ' '.join(run.stdout.split())
    report = json.loads((reports / 'recipient_tls_impact.json').read_text())
    assert report['policy'] == dict(require_tls=True, require_valid_cert=True, version='1.2')
    verdicts = {d['domain']: (d['verdict'], d['blocked_by']) for d in report['domains']}
    assert verdicts == {'wrongname.test': ('blocked', ['require_valid_cert']), 'good.test': ('delivered', []),
                        'selfsigned.test': ('blocked', ['require_valid_cert']), 'oldtls.test': ('blocked', ['version']),
                        'plain.test': ('blocked', ['require_tls']), 'silent.test': ('unknown', [])}
    assert report['domains'][1]['mx'][0]['tls_best'] == '1.3'
    markdown = (reports / 'recipient_tls_impact.md').read_text()
    assert '| domain | MX | STARTTLS | best TLS | certificate | verdict | reason |' in markdown
    assert '| selfsigned.test | mx.selfsigned.test | yes | 1.3 | untrusted | blocked (require_valid_cert) |' in markdown
    assert '| plain.test | mx.plain.test | no | - | - | blocked (require_tls) |' in markdown
    assert '| good.test | mx.good.test | yes | 1.3 | valid | delivered |' in markdown

    only = run_playbook(playbook_name='mailsec.sendgrid.impact', args=['-e', json.dumps(dict(
        extra, domains_file='', impact_domains=['selfsigned.test'], enforced_tls_policy_require_valid_cert=True))])
    assert only.rc == 0 and '1 of 1 domains would be blocked by require_valid_cert;' in ' '.join(only.stdout.split())

    # By default an MX on a non-public address (the whole test world is on 127.0.0.N) is unknown, never contacted.
    private = dict(extra, domains_file='', impact_domains=['selfsigned.test'], enforced_tls_policy_require_valid_cert=True)
    del private['impact_allow_private']
    default = run_playbook(playbook_name='mailsec.sendgrid.impact', args=['-e', json.dumps(private)])
    assert default.rc == 0 and '0 of 1 domains would be blocked; 0 delivered, 1 unknown' in ' '.join(default.stdout.split())
    report = json.loads((reports / 'recipient_tls_impact.json').read_text())
    assert report['domains'][0]['mx'][0]['error_code'] == 'private_address'

    none = run_playbook(playbook_name='mailsec.sendgrid.impact', args=['-e', 'impact_report_dir=%s' % reports])
    assert none.rc == 2 and 'Give the recipient domains' in none.stdout


@pytest.fixture
def guarded_fleet(sim, world, tmp_path):
    names = sim.populate_subusers(3)
    inventory = tmp_path / 'inventory'
    (inventory / 'group_vars').mkdir(parents=True)
    (inventory / 'demo.sendgrid.yml').write_text(yaml.safe_dump(dict(plugin='mailsec.sendgrid.subusers', api_url=sim.url)))
    (inventory / 'group_vars' / 'sendgrid_subusers.yml').write_text(yaml.safe_dump(dict(
        enforced_tls_policy_require_tls=True, enforced_tls_policy_require_valid_cert=True, enforced_tls_policy_version='1.2',
        enforced_tls_policy_api_url=sim.url, enforced_tls_policy_impact_nameservers=[world.nameserver],
        enforced_tls_policy_impact_smtp_port=world.port, enforced_tls_policy_impact_ca_path=world.certificates.ca_file,
        enforced_tls_policy_impact_timeout=TIMEOUT, enforced_tls_policy_impact_allow_private=True)))
    return inventory, names


def test_guardrail_refuses_and_writes_nothing(sim, guarded_fleet, run_playbook):
    inventory, names = guarded_fleet
    before = sim.state()
    domains = json.dumps(dict(enforced_tls_policy_impact_domains=['good.test', 'selfsigned.test', 'oldtls.test', 'silent.test']))
    for check in (True, False):
        run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, check=check, args=['-e', domains],
                           env=dict(SENDGRID_API_KEY=API_KEY))
        assert run.rc == 2, run.output
        text = ' '.join(run.stdout.split())
        assert 'Nothing was written: the policy would block 2 of 4 recipient domains (enforced_tls_policy_max_blocked is 0)' in text
        assert 'selfsigned.test (blocked by require_valid_cert: mx.selfsigned.test its certificate is not trusted' in text
        assert 'oldtls.test (blocked by version: mx.oldtls.test speaks at best TLS 1.1' in text
        assert 'silent.test: unknown' in text
        assert sim.count('PATCH') == 0 and sim.count('GET', '/v3/user/settings/enforced_tls') == 0
        assert sim.state() == before

    # Allowed to block two: it writes.
    allowed = json.dumps(dict(enforced_tls_policy_impact_domains=['good.test', 'selfsigned.test', 'oldtls.test'],
                              enforced_tls_policy_max_blocked=2))
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, args=['-e', allowed],
                       env=dict(SENDGRID_API_KEY=API_KEY))
    assert run.rc == 0, run.output
    assert sim.count('PATCH') == len(names)


def test_guardrail_passes_when_nothing_would_be_blocked(sim, guarded_fleet, run_playbook):
    inventory, names = guarded_fleet
    domains = json.dumps(dict(enforced_tls_policy_impact_domains=['good.test', 'silent.test']))
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, args=['-e', domains],
                       env=dict(SENDGRID_API_KEY=API_KEY))
    assert run.rc == 0, run.output
    assert 'Impact preview: 0 of 2 recipient domains would be blocked' in ' '.join(run.stdout.split())
    assert sorted(r['on_behalf_of'] for r in sim.requests if r['method'] == 'PATCH') == sorted(names)
    recap = run.recap(names[0])
    assert recap['failed'] == 0


def test_guardrail_does_not_test_mx_hosts_on_non_public_addresses_by_default(sim, guarded_fleet, run_playbook):
    inventory, names = guarded_fleet
    # The fleet's group_vars allow them (the test world is on 127.0.0.N); the role's default does not.
    extra = json.dumps(dict(enforced_tls_policy_impact_domains=['selfsigned.test'], enforced_tls_policy_impact_allow_private=False))
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, args=['-e', extra],
                       env=dict(SENDGRID_API_KEY=API_KEY))
    assert run.rc == 0, run.output
    text = ' '.join(run.stdout.split())
    assert 'Impact preview: 0 of 1 recipient domains would be blocked' in text
    assert 'selfsigned.test: unknown' in text and 'SendGrid cannot reach it' in text
    assert sim.count('PATCH') == len(names)
