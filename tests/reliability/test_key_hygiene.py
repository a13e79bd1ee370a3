# -*- coding: utf-8 -*-
"""Keys as users really store them, servers that echo them, proxies and .netrc: the key reaches SendGrid and nothing else.

A key read from a vault file or a YAML block keeps its trailing newline: it must work, and it must never be
printed (requests used to quote the invalid header, newline as "\\n", where no_log could not find it).
A key with a character no SendGrid key has is refused before any request, naming the option, never the value.
Every run is at -vvvv with --diff; stdout, stderr, ANSIBLE_LOG_PATH, the audit reports and ansible-runner's
artifacts are searched with tests.reliability.test_secrets.assert_no_secret.
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
import yaml

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import SendGridClient, SendGridError
from tests.conftest import API_KEY, BIN, ansible_env
from tests.reliability.helpers import POLICY, run_ansible_inventory, write_fleet_inventory, write_host_vars
from tests.reliability.raw_server import RawServer, http_response
from tests.reliability.test_secrets import assert_no_secret, grep_tree

WHITESPACE = {'newline': API_KEY + '\n', 'crlf': API_KEY + '\r\n', 'spaces': '  ' + API_KEY + ' \t'}
REFUSED = {'zero-width space': ('ab\u200b', 'U+200B'), 'NUL': ('ab\x00', 'U+0000'), 'inner space': ('ab cd', 'U+0020')}


def _check_outputs(runs, log_file, reports=()):
    for number, run in enumerate(runs, 1):
        assert_no_secret(run.stdout, 'run %d stdout' % number)
        assert_no_secret(run.stderr, 'run %d stderr' % number)
    assert_no_secret(log_file.read_text(), 'ANSIBLE_LOG_PATH')
    for report in reports:
        assert_no_secret(report.read_text(), str(report))


def _module_task(name, key, sim_url, **options):
    return {'name': name, 'mailsec.sendgrid.enforced_tls': dict(api_key=key, api_url=sim_url, **options),
            'register': name, 'ignore_errors': True}


@pytest.mark.parametrize('variant', sorted(WHITESPACE))
def test_a_key_with_surrounding_whitespace_works_and_is_never_printed(variant, sim, run_playbook, tmp_path):
    key = WHITESPACE[variant]
    sim.populate_subusers(3)
    log_file = tmp_path / 'ansible.log'
    env = dict(ANSIBLE_LOG_PATH=log_file)

    # The module, the key as an option (as a vault lookup gives it).
    module = run_playbook(tasks=[_module_task('module', key, sim.url, on_behalf_of='sub0001', require_tls=True)],
                          save=['module'], verbosity=4, diff=True, env=env)
    assert module.rc == 0 and module.results['module']['changed'] is True, module.output

    # The role, the key in one subuser's host_vars; the inventory plugin, the key in SENDGRID_API_KEY.
    inventory = write_fleet_inventory(tmp_path / 'inventory', sim.url)
    write_host_vars(inventory, 'sub0002', enforced_tls_policy_api_key=key)
    enforce = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, verbosity=4, diff=True,
                           env=dict(env, SENDGRID_API_KEY=key))
    assert enforce.rc == 0 and enforce.recap('sub0002')['changed'] == 1, enforce.output

    # The audit, through ansible-runner as AWX runs it, reports written.
    private = tmp_path / 'private'
    (private / 'env').mkdir(parents=True)
    (private / 'project').mkdir()
    (private / 'env' / 'envvars').write_text(yaml.safe_dump(dict(SENDGRID_API_KEY=key)))
    (private / 'env' / 'cmdline').write_text('--diff -vvvv -e audit_report_dir=%s' % (tmp_path / 'reports'))
    (private / 'project' / 'site.yml').write_text(yaml.safe_dump([{'ansible.builtin.import_playbook': 'mailsec.sendgrid.audit'}]))
    write_fleet_inventory(private / 'inventory', sim.url)
    (tmp_path / 'reports').mkdir()
    runner = subprocess.run([str(BIN / 'ansible-runner'), 'run', str(private), '-p', 'site.yml'],
                            env=ansible_env(ANSIBLE_LOG_PATH=log_file), capture_output=True, text=True, timeout=300, check=False)
    assert runner.returncode == 0, runner.stdout + runner.stderr
    reports = sorted((tmp_path / 'reports').iterdir())
    assert len(reports) == 2 and 'sub0003' in reports[0].read_text()

    # Every request carried the key without its whitespace; the inventory plugin listed with it too.
    assert {r['headers']['authorization'] for r in sim.requests} == {'Bearer ' + API_KEY}
    assert sim.count('GET', '/v3/subusers') == 2  # enforce and audit each listed the subusers
    _check_outputs([module, enforce], log_file, reports)
    assert_no_secret(runner.stdout, 'ansible-runner stdout')
    # ansible-runner's own copies of the environment (env/envvars and artifacts/*/command) are the user's, not ours.
    skip = set(private.glob('artifacts/*/command')) | {private / 'env' / 'envvars'}
    assert grep_tree(private, skip=skip) >= 5


@pytest.mark.parametrize('variant', sorted(REFUSED))
def test_a_key_with_other_characters_is_refused_before_any_request(variant, sim, run_playbook, tmp_path):
    inserted, codepoint = REFUSED[variant]
    key = API_KEY[:12] + inserted + API_KEY[12:]
    sim.populate_subusers(2)
    log_file = tmp_path / 'ansible.log'

    module = run_playbook(tasks=[_module_task('module', key, sim.url, require_tls=True)], save=['module'],
                          verbosity=4, diff=True, env=dict(ANSIBLE_LOG_PATH=log_file))
    message = module.results['module']['msg']
    assert message.startswith('api_key contains %s' % codepoint) and 'value is not shown' in message, module.output

    # The role: the key in host_vars of a static inventory (no listing request), named as the role's variable.
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(yaml.safe_dump({'sendgrid_subusers': {'hosts': {'sub0001': None, 'sub0002': None}, 'vars': dict(
        POLICY, enforced_tls_policy_api_url=sim.url)}}))
    (tmp_path / 'host_vars').mkdir()
    (tmp_path / 'host_vars' / 'sub0002.yml').write_text(yaml.safe_dump(dict(enforced_tls_policy_api_key=key)))
    enforce = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, verbosity=4, diff=True,
                           env=dict(ANSIBLE_LOG_PATH=log_file, SENDGRID_API_KEY=API_KEY))
    assert enforce.rc == 2 and 'enforced_tls_policy_api_key contains %s' % codepoint in enforce.stdout, enforce.output
    assert enforce.recap('sub0002')['failed'] == 1 and enforce.recap('sub0001')['failed'] == 0
    assert not [r for r in sim.requests if r['on_behalf_of'] == 'sub0002']

    # The inventory plugin: the key in its file (NUL cannot be in an environment variable).
    source = tmp_path / 'bad.sendgrid.yml'
    source.write_text(yaml.safe_dump(dict(plugin='mailsec.sendgrid.subusers', api_url=sim.url, api_key=key)))
    listing = run_ansible_inventory(source, '--list', '-vvvv', env=dict(ANSIBLE_LOG_PATH=log_file))
    assert listing.returncode == 1 and 'api_key contains %s' % codepoint in listing.stderr, listing.stderr
    assert sim.count('GET', '/v3/subusers') == 0
    _check_outputs([module, enforce, listing], log_file)


def _echo(server, conn, request):
    """A server (or a debugging proxy) that quotes the credentials it received in its error message."""
    auth = request.headers.get('authorization', '') if request else ''
    token = auth.split(' ', 1)[-1]
    conn.sendall(http_response(401, {'errors': [
        {'message': 'invalid credentials: Authorization: %s' % auth},
        {'message': 'token %r, as base64 %s, as JSON %s' % (token, base64.b64encode(token.encode()).decode(), json.dumps(token))},
    ]}))


def test_a_server_that_echoes_the_key_is_masked_everywhere(run_playbook, tmp_path):
    log_file = tmp_path / 'ansible.log'
    echo = RawServer(_echo, lifetime=120).start()
    try:
        module = run_playbook(tasks=[_module_task('module', API_KEY + '\n', echo.url, require_tls=True)], save=['module'],
                              verbosity=4, diff=True, env=dict(ANSIBLE_LOG_PATH=log_file))
        assert 'HTTP 401' in module.results['module']['msg'] and 'invalid credentials' in module.results['module']['msg']

        # The audit over a static inventory: its failure messages go to the output and to both reports.
        inventory = tmp_path / 'hosts.yml'
        inventory.write_text(yaml.safe_dump({'sendgrid_subusers': {'hosts': {'sub0001': None, 'sub0002': None}, 'vars': dict(
            POLICY, enforced_tls_policy_api_url=echo.url)}}))
        (tmp_path / 'reports').mkdir()
        audit = run_playbook(playbook_name='mailsec.sendgrid.audit', inventory=inventory, verbosity=4, diff=True,
                             args=['-e', 'audit_report_dir=reports'],
                             env=dict(ANSIBLE_LOG_PATH=log_file, SENDGRID_API_KEY=API_KEY))
        assert audit.rc == 2 and 'invalid credentials' in audit.stdout, audit.output
        reports = sorted((tmp_path / 'reports').iterdir())
        assert len(reports) == 2 and 'invalid credentials' in reports[0].read_text()

        # The inventory plugin's error (a warning, or the failure ANSIBLE_INVENTORY_UNPARSED_FAILED makes of it).
        source = tmp_path / 'echo.sendgrid.yml'
        source.write_text(yaml.safe_dump(dict(plugin='mailsec.sendgrid.subusers', api_url=echo.url)))
        listing = run_ansible_inventory(source, '--list', '-vvvv', env=dict(ANSIBLE_LOG_PATH=log_file, SENDGRID_API_KEY=API_KEY))
        assert listing.returncode == 1 and 'invalid credentials' in listing.stderr, listing.stderr
    finally:
        echo.stop()
    # The server did receive the key (so the search below is not vacuous), and echoed it every time.
    assert echo.requests and {r.headers['authorization'] for r in echo.requests} == {'Bearer ' + API_KEY}
    _check_outputs([module, audit, listing], log_file, reports)


def _record_only(server, conn, request):
    conn.sendall(http_response(502, 'proxy says no', content_type='text/plain'))


@pytest.fixture
def proxy(monkeypatch):
    server = RawServer(_record_only, lifetime=120).start()
    for name in ('HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy'):
        monkeypatch.setenv(name, server.url)
    for name in ('NO_PROXY', 'no_proxy'):
        monkeypatch.delenv(name, raising=False)
    yield server
    server.stop()


def test_no_proxy_for_a_loopback_api_url(proxy, sim, run_playbook):
    """http:// is allowed to loopback only because the key stays on this machine: a proxy would get it in clear."""
    sim.add_subuser('marketing')
    run = run_playbook(tasks=[_module_task('module', API_KEY, sim.url, on_behalf_of='marketing', require_tls=True)],
                       save=['module'])
    assert run.results['module']['changed'] is True, run.output
    assert proxy.connections == 0 and sim.count('PATCH') == 1


def test_a_proxy_still_carries_https_to_a_real_endpoint(proxy):
    client = SendGridClient(api_key=API_KEY, region='eu', max_retries=0, timeout=5)
    with pytest.raises(SendGridError) as info:
        client.request('GET', '/v3/user/settings/enforced_tls')
    assert 'api.eu.sendgrid.com' in str(info.value)
    # The tunnel was asked for, and the key did not travel in the CONNECT (it is inside the TLS tunnel only).
    assert [r.method for r in proxy.requests] == ['CONNECT'] and proxy.requests[0].path == 'api.eu.sendgrid.com:443'
    assert 'authorization' not in proxy.requests[0].headers


def test_netrc_is_never_read(sim, run_playbook, tmp_path):
    netrc = tmp_path / 'netrc'
    netrc.write_text('machine 127.0.0.1 login someone password netrc-secret-1\ndefault login anyone password netrc-secret-2\n')
    netrc.chmod(0o600)
    sim.add_subuser('marketing')
    run = run_playbook(tasks=[_module_task('module', API_KEY, sim.url, on_behalf_of='marketing', require_tls=True)],
                       save=['module'], env=dict(NETRC=netrc, HOME=tmp_path))
    assert run.results['module']['changed'] is True, run.output
    assert {r['headers']['authorization'] for r in sim.requests} == {'Bearer ' + API_KEY}


def test_a_header_the_http_layer_cannot_encode_is_a_clean_error():
    """A subuser name with a character outside Latin-1 never reaches the wire. (A pasted zero-width space is refused
    before, as a format character: test_trust_boundaries.py.)"""
    server = RawServer(lambda server, conn, request: conn.sendall(http_response(200, {})), lifetime=20).start()
    try:
        client = SendGridClient(api_key=API_KEY, api_url=server.url, max_retries=0, timeout=5)
        with pytest.raises(SendGridError) as info:
            client.request('GET', '/v3/user/settings/enforced_tls', on_behalf_of='sub\u540d0001')
    finally:
        server.stop()
    message = str(info.value)
    assert message.startswith('SendGrid API request not sent: UnicodeEncodeError on GET http://127.0.0.1:') and 'sub' in message
    assert info.value.__cause__ is None and info.value.__suppress_context__ and API_KEY not in message
