# -*- coding: utf-8 -*-
"""recipient_tls_info, the impact playbook and the role's guardrail against real DNS and SMTP servers on 127.0.0.N.

Each recipient domain has one MX host on its own loopback address, all on one port (as port 25 on the Internet),
served by a real DNS server (dnslib) that the module asks through `nameservers`.
"""

from __future__ import annotations

# pylint: disable=redefined-outer-name  # pytest fixtures arrive as arguments of the same name

from tests.dns_server import TIMEOUT, world  # noqa: F401 pylint: disable=unused-import


def preview(run_playbook, world, domains, allow_private=True, **policy):
    # The MX world lives on 127.0.0.N: only allow_private lets the module test it.
    task = {'mailsec.sendgrid.recipient_tls_info': dict(
        domains=domains, nameservers=[world.nameserver], smtp_port=world.port, ca_path=world.certificates.ca_file,
        timeout=TIMEOUT, allow_private=allow_private, **policy), 'register': 'impact'}
    run = run_playbook(tasks=[dict(name='Preview', **task)], save=['impact'], check=True)
    assert run.rc == 0, run.output
    result = run.results['impact']
    assert result['changed'] is False
    return {d['domain']: d for d in result['domains']}, result


def test_verdicts_under_several_policies(run_playbook, world):
    domains = list(world.domains) + ['implicit.test', 'nullmx.test', 'missing.test']
    tls_only, result = preview(run_playbook, world, domains, require_tls=True)
    verdicts = {name: d['verdict'] for name, d in tls_only.items()}
    assert verdicts == {'good.test': 'delivered', 'selfsigned.test': 'delivered', 'oldtls.test': 'delivered',
                        'plain.test': 'blocked', 'silent.test': 'unknown', 'closed.test': 'unknown',
                        'wrongname.test': 'delivered', 'implicit.test': 'delivered', 'nullmx.test': 'undeliverable',
                        'missing.test': 'undeliverable'}
    assert tls_only['plain.test']['blocked_by'] == ['require_tls']
    assert 'does not offer STARTTLS' in tls_only['plain.test']['reason']
    assert 'stopped answering' in tls_only['silent.test']['reason'] and 'refused' in tls_only['closed.test']['reason']
    assert 'NXDOMAIN' in tls_only['missing.test']['reason'] and 'null MX' in tls_only['nullmx.test']['reason']
    assert tls_only['implicit.test']['mx'][0]['host'] == 'implicit.test'
    good = tls_only['good.test']['mx'][0]
    assert good['address'] == world.addresses['good.test'] and good['starttls_offered'] is True
    assert good['tls_best'] == '1.3' and good['tls_versions'] == {'1.0': False, '1.1': False, '1.2': True, '1.3': True}
    assert good['certificate']['trusted'] is True and good['certificate']['name_matches'] is True
    old = tls_only['oldtls.test']['mx'][0]
    assert old['tls_best'] == '1.1' and old['tls_versions']['1.2'] is False and old['tls_versions']['1.1'] is True
    assert result['summary'] == dict(domains=10, delivered=5, blocked=1, unknown=2, undeliverable=2,
                                     blocked_by=dict(require_tls=1, require_valid_cert=0, version=0))

    strict, result = preview(run_playbook, world, domains, require_tls=True, require_valid_cert=True, version=1.2)
    assert result['policy'] == dict(require_tls=True, require_valid_cert=True, version='1.2')
    assert strict['good.test']['verdict'] == 'delivered'
    assert strict['selfsigned.test']['verdict'] == 'blocked' and strict['selfsigned.test']['blocked_by'] == ['require_valid_cert']
    assert 'not trusted' in strict['selfsigned.test']['reason']
    assert strict['wrongname.test']['blocked_by'] == ['require_valid_cert']
    assert 'not valid for the name mx.wrongname.test (it lists other.example)' in strict['wrongname.test']['reason']
    assert strict['oldtls.test']['blocked_by'] == ['version']
    assert 'at best TLS 1.1, older than the required TLS 1.2' in strict['oldtls.test']['reason']
    assert strict['silent.test']['verdict'] == 'unknown' and strict['closed.test']['verdict'] == 'unknown'
    assert strict['implicit.test']['verdict'] == 'blocked'  # its certificate names mx.good.test, not implicit.test

    version_only, result = preview(run_playbook, world, ['good.test', 'oldtls.test', 'selfsigned.test'],
                                   require_tls=True, version='1.3')
    assert {n: d['verdict'] for n, d in version_only.items()} == {
        'good.test': 'delivered', 'oldtls.test': 'blocked', 'selfsigned.test': 'delivered'}

    no_policy, result = preview(run_playbook, world, ['plain.test', 'oldtls.test'])
    assert {d['verdict'] for d in no_policy.values()} == {'delivered'}


def test_recipients_and_bad_options(run_playbook, world):
    task = {'mailsec.sendgrid.recipient_tls_info': dict(
        recipients=['a@Good.test', 'b@good.test', 'not-an-address'], nameservers=['300.1.1.1'], version='1.4',
        max_mx_hosts=0, concurrency=300)}
    run = run_playbook(tasks=[dict(name='Bad', ignore_errors=True, register='bad', **task)], save=['bad'])
    message = run.results['bad']['msg']
    assert 'every recipient must be an e-mail address' in message
    assert "nameserver '300.1.1.1' must be an IP address" in message and 'version must be one of' in message
    assert 'max_mx_hosts must be 1-10, got 0' in message and 'concurrency must be 1-256, got 300' in message
    assert 'Traceback' not in run.output
    by_domain, result = preview(run_playbook, world, ['GOOD.test', 'good.test.'], require_tls=True)
    assert list(by_domain) == ['good.test'] and result['summary']['domains'] == 1


def test_mx_on_a_non_public_address_is_unknown_and_not_contacted_without_allow_private(run_playbook, world):
    silent = world.by_domain['silent.test']
    connections = silent.connections
    by_domain, result = preview(run_playbook, world, ['good.test', 'silent.test'], allow_private=False, require_tls=True)
    for domain in ('good.test', 'silent.test'):
        entry = by_domain[domain]
        (mx,) = entry['mx']
        assert (entry['verdict'], mx['error_code'], mx['address']) == ('unknown', 'private_address', world.addresses[domain])
        assert '%s is a loopback address' % world.addresses[domain] in entry['reason']
        assert 'SendGrid cannot reach it' in entry['reason'] and mx['starttls_offered'] is None
    assert silent.connections == connections  # not even a TCP connection
    assert result['summary']['unknown'] == 2
