# -*- coding: utf-8 -*-
"""The client's TLS policy against real TLS servers on 127.0.0.1: TLS 1.2+ only, trusted certificates only.

Certificates come from trustme (tests/tls_servers.py): a throw-away CA that nothing trusts unless a test
points REQUESTS_CA_BUNDLE at it, which is how users trust a corporate proxy's CA with requests.
"""

from __future__ import annotations

import os
import socket
import ssl
import warnings

import pytest
import trustme

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import SendGridClient, SendGridError
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import read
from tests.conftest import API_KEY
from tests.reliability.raw_server import LOOPBACK, RawServer, respond
from tests.tls_servers import Certificates, server_context

SETTINGS = {'require_tls': True, 'require_valid_cert': True, 'version': 1.2}
EXPECTED = dict(require_tls=True, require_valid_cert=True, version='1.2')
TLS_REFUSED = 'SendGrid API unreachable: TLS handshake or certificate verification failed (TLS 1.2 or newer and a trusted certificate are required)'


@pytest.fixture(scope='module')
def certificates(tmp_path_factory):
    return Certificates(tmp_path_factory.mktemp('tls'))


@pytest.fixture(scope='module')
def unrelated_ca_file(tmp_path_factory):
    """A CA bundle that does not sign our test servers: stands for the system bundle images put in REQUESTS_CA_BUNDLE."""
    path = tmp_path_factory.mktemp('other-ca') / 'other-ca.pem'
    trustme.CA(organization_name='unrelated CA').cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(autouse=True)
def no_trusted_test_ca(monkeypatch):
    # Each test decides whether the test CA is trusted; nothing leaks in from the caller's environment.
    for name in ('REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'SSL_CERT_FILE', 'HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy'):
        monkeypatch.delenv(name, raising=False)


def legacy_context(certificates):
    """A server that speaks only TLS 1.0 and 1.1 (security level 0, as old servers effectively are)."""
    return server_context(certificates.good, minimum=ssl.TLSVersion.TLSv1, maximum=ssl.TLSVersion.TLSv1_1, ciphers='DEFAULT')


def serve(context):
    return RawServer(respond(200, SETTINGS), tls_context=context, lifetime=20)


def attempt(server, **options):
    client = SendGridClient(api_key=API_KEY, api_url=server.url, timeout=5, sleep=lambda seconds: None, **options)
    try:
        return read(client)
    finally:
        client.close()


def test_the_legacy_server_really_speaks_tls_1_1(certificates):
    # Without this, "refused" below could mean a broken test server rather than our TLS 1.2 floor.
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(certificates.ca_file)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        client_context.minimum_version = ssl.TLSVersion.TLSv1
    client_context.set_ciphers('DEFAULT:@SECLEVEL=0')
    with serve(legacy_context(certificates)) as server:
        with socket.create_connection((LOOPBACK, server.port), timeout=5) as raw:
            with client_context.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
                assert tls.version() == 'TLSv1.1'


@pytest.mark.parametrize('validate_certs', [True, False])
def test_tls_1_0_1_1_only_server_is_refused(certificates, monkeypatch, validate_certs):
    # The CA is trusted, so only the protocol version can be the reason; validate_certs=false does not lower the floor.
    monkeypatch.setenv('REQUESTS_CA_BUNDLE', certificates.ca_file)
    with serve(legacy_context(certificates)) as server:
        with pytest.raises(SendGridError) as info:
            attempt(server, validate_certs=validate_certs)
    text = str(info.value)
    assert text.startswith(TLS_REFUSED) and 'PROTOCOL_VERSION' in text, text
    # Not retried (a protocol mismatch does not heal), and no HTTP request, so no key, ever reached the server.
    assert server.connections == 1 and server.handshake_failures == 1 and server.requests == []


def test_untrusted_certificate_is_refused(certificates):
    with serve(server_context(certificates.good, minimum=ssl.TLSVersion.TLSv1_2)) as server:
        with pytest.raises(SendGridError) as info:
            attempt(server)
    text = str(info.value)
    assert text.startswith(TLS_REFUSED) and 'CERTIFICATE_VERIFY_FAILED' in text and 'unable to get local issuer certificate' in text, text
    assert server.connections == 1 and server.requests == []


def test_certificate_for_another_name_is_refused(certificates, monkeypatch):
    monkeypatch.setenv('REQUESTS_CA_BUNDLE', certificates.ca_file)
    with serve(server_context(certificates.other_name)) as server:
        with pytest.raises(SendGridError) as info:
            attempt(server)
    text = str(info.value)
    assert text.startswith(TLS_REFUSED) and 'CERTIFICATE_VERIFY_FAILED' in text and 'mismatch' in text, text
    assert server.requests == []


def test_expired_certificate_is_refused(certificates, monkeypatch):
    monkeypatch.setenv('REQUESTS_CA_BUNDLE', certificates.ca_file)
    with serve(server_context(certificates.expired)) as server:
        with pytest.raises(SendGridError) as info:
            attempt(server)
    assert 'certificate has expired' in str(info.value) and server.requests == []


@pytest.mark.parametrize('version', [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_trusted_ca_from_requests_ca_bundle_works(certificates, monkeypatch, version):
    monkeypatch.setenv('REQUESTS_CA_BUNDLE', certificates.ca_file)
    with serve(server_context(certificates.good, minimum=version, maximum=version)) as server:
        assert attempt(server) == EXPECTED
    assert server.tls_versions == [version.name.replace('v1_', 'v1.')]
    assert server.requests[0].headers['authorization'] == 'Bearer ' + API_KEY


@pytest.mark.parametrize('bundle_variable', [None, 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE'])
def test_validate_certs_false_accepts_an_untrusted_certificate(certificates, unrelated_ca_file, monkeypatch, bundle_variable):
    # requests lets a CA bundle from the environment override a session's verify=False; validate_certs=false must win.
    if bundle_variable:
        monkeypatch.setenv(bundle_variable, unrelated_ca_file)
    with serve(server_context(certificates.good, minimum=ssl.TLSVersion.TLSv1_2)) as server:
        assert attempt(server, validate_certs=False) == EXPECTED
    assert server.tls_versions in (['TLSv1.2'], ['TLSv1.3']) and len(server.requests) == 1


def test_ca_bundle_from_the_environment_is_what_validate_certs_true_checks_against(certificates, unrelated_ca_file, monkeypatch):
    monkeypatch.setenv('REQUESTS_CA_BUNDLE', unrelated_ca_file)
    with serve(server_context(certificates.good)) as server:
        with pytest.raises(SendGridError) as info:
            attempt(server)
    assert 'CERTIFICATE_VERIFY_FAILED' in str(info.value) and server.requests == []


def test_tls_through_ansible_playbook(certificates, unrelated_ca_file, run_playbook):
    """The user's view: validate_certs false warns, untrusted and legacy servers fail in one line, a CA bundle works."""
    servers = dict(
        modern=serve(server_context(certificates.good, minimum=ssl.TLSVersion.TLSv1_2)),
        legacy=serve(legacy_context(certificates)),
    )
    for server in servers.values():
        server.start()

    def task(name, server, environment=None, **options):
        step = {'name': name, 'mailsec.sendgrid.enforced_tls_info': dict(api_url=servers[server].url, max_retries=0, **options),
                'register': name, 'ignore_errors': True}
        if environment:
            step['environment'] = environment
        return step

    tasks = [
        task('insecure', 'modern', validate_certs=False),
        task('untrusted', 'modern'),
        task('ca_bundle', 'modern', environment=dict(REQUESTS_CA_BUNDLE=certificates.ca_file)),
        task('legacy_insecure', 'legacy', validate_certs=False),
    ]
    try:
        # An unrelated REQUESTS_CA_BUNDLE, as many images set: validate_certs=false must still win over it.
        run = run_playbook(tasks=tasks, save=[t['name'] for t in tasks],
                           env=dict(SENDGRID_API_KEY=API_KEY, REQUESTS_CA_BUNDLE=unrelated_ca_file, CURL_CA_BUNDLE=unrelated_ca_file))
    finally:
        for server in servers.values():
            server.stop()
    results = run.results
    assert results['insecure']['failed'] is False and results['insecure']['enforced_tls'] == EXPECTED, run.output
    assert ('[WARNING]: validate_certs is false: the SendGrid API certificate is not verified, so the API key could be sent '
            'to an impostor') in ' '.join(run.output.split())
    assert results['untrusted']['failed'] is True and 'CERTIFICATE_VERIFY_FAILED' in results['untrusted']['msg']
    assert results['untrusted']['msg'].startswith(TLS_REFUSED)
    assert results['ca_bundle']['failed'] is False and results['ca_bundle']['enforced_tls'] == EXPECTED
    assert results['legacy_insecure']['failed'] is True and results['legacy_insecure']['msg'].startswith(TLS_REFUSED)
    assert 'Traceback' not in run.output
    # insecure and ca_bundle made one request each; the refused handshakes made none.
    assert len(servers['modern'].requests) == 2 and servers['legacy'].requests == []
    assert servers['modern'].handshake_failures == 1 and servers['legacy'].handshake_failures == 1


def test_a_ca_bundle_is_loaded_once_per_process_not_once_per_connection(certificates, monkeypatch):
    """Per subuser host every connection is new (one worker process per host task): loading the bundle (~16 ms CPU for
    certifi's) each time would double the per-host cost. Loaded in the parent, a forked worker loads nothing."""
    from ansible_collections.mailsec.sendgrid.plugins.module_utils import _transport as transport

    monkeypatch.setenv('REQUESTS_CA_BUNDLE', certificates.ca_file)
    monkeypatch.setattr(transport, '_CONTEXTS', {})
    loads = []
    real_load = ssl.SSLContext.load_verify_locations

    def counting_load(self, *args, **kwargs):
        loads.append(os.getpid())
        return real_load(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, 'load_verify_locations', counting_load)
    transport.prime_trust()  # what the action plugin does when ansible-playbook imports it, before forking workers
    assert loads == [os.getpid()]
    with serve(server_context(certificates.good)) as server:
        assert [attempt(server) for dummy in range(3)] == [EXPECTED] * 3  # three clients, three connections
        child = os.fork()
        if child == 0:  # a worker process: it verifies with the context it inherited, and loads nothing
            os._exit(0 if attempt(server) == EXPECTED and len(loads) == 1 else 1)
        assert os.waitpid(child, 0)[1] == 0
    assert len(loads) == 1


@pytest.mark.parametrize('bundle, message', [
    ('missing.pem', 'Could not find a suitable TLS CA certificate bundle, invalid path'),
    ('not-a-bundle.pem', 'cannot be loaded'),
])
def test_an_unusable_ca_bundle_is_named_not_a_traceback(certificates, tmp_path, monkeypatch, bundle, message):
    (tmp_path / 'not-a-bundle.pem').write_text('not a certificate\n')
    monkeypatch.setenv('REQUESTS_CA_BUNDLE', str(tmp_path / bundle))
    with serve(server_context(certificates.good)) as server:
        with pytest.raises(SendGridError) as refused:
            attempt(server)
    assert message in str(refused.value) and bundle in str(refused.value) and 'TLS' in str(refused.value)
