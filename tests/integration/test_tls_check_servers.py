# -*- coding: utf-8 -*-
"""tls_check against real servers on 127.0.0.1: each outcome the module reports, produced by a server that
really behaves that way (tests/tls_servers.py). Most tests call the probe directly; the last ones run the
module and the collection's playbook through ansible-playbook.
"""

from __future__ import annotations

import json
import ssl
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509

from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_endpoint import Prober
from tests.tls_servers import (
    LOOPBACK, BannerServer, Certificates, HTTPSServer, ResettingServer, SilentServer, SMTPServer, free_port, server_context)

TLS = ssl.TLSVersion


@pytest.fixture(scope='module')
def certs(tmp_path_factory):
    return Certificates(tmp_path_factory.mktemp('certs'))


@pytest.fixture
def serve():
    """serve(server) starts a server and stops it after the test."""
    started = []

    def start(server):
        started.append(server.start())
        return server
    yield start
    for server in started:
        server.stop()


@pytest.fixture
def prober(certs):
    """A prober that trusts the test CA (and nothing else), with a short timeout."""
    return Prober(ca_path=certs.ca_file, timeout=2.0)


def probe(prober, server, mode='https', host=LOOPBACK):
    return prober.probe(host, server.port, mode)


def assert_fails(result, code, *words):
    assert (result['supported'], result['reason_code']) == (False, code), result
    for word in words:
        assert word in result['reason'], result['reason']


# --- HTTPS ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('maximum, protocol', [(TLS.TLSv1_2, 'TLSv1.2'), (None, 'TLSv1.3')])
def test_https_server_with_tls_1_2_or_newer_is_supported(certs, serve, prober, maximum, protocol):
    server = serve(HTTPSServer(server_context(certs.good, maximum=maximum)))
    result = probe(prober, server)
    assert result['supported'] is True and result['reason'] is None and result['reason_code'] is None
    assert result['protocol'] == protocol
    assert result['cipher'] == server.ciphers[0]
    leaf = x509.load_pem_x509_certificate(certs.good.cert_chain_pems[0].bytes())
    assert result['certificate']['subject'] == leaf.subject.rfc4514_string()
    assert result['certificate']['issuer'] == leaf.issuer.rfc4514_string() and 'tls-check test CA' in leaf.issuer.rfc4514_string()
    assert result['certificate']['not_after'] == leaf.not_valid_after_utc.strftime('%Y-%m-%dT%H:%M:%SZ')
    assert result['certificate']['days_left'] > 300000  # trustme's default expiry is the year 3000
    assert result['certificate']['subject_alt_names'] == ['127.0.0.1', 'localhost']
    # A real HTTP request went over the tested connection, and its answer was read.
    assert result['http_status'] == 200
    assert server.requests == [dict(requestline='HEAD / HTTP/1.1', host='%s:%d' % (LOOPBACK, server.port))]


def test_http_status_is_the_servers_answer(certs, serve, prober):
    server = serve(HTTPSServer(server_context(certs.good), status=404))
    assert probe(prober, server)['http_status'] == 404


@pytest.mark.parametrize('maximum, protocol, offered', [(TLS.TLSv1_1, 'TLSv1.1', 'TLS 1.1'), (TLS.TLSv1, 'TLSv1', 'TLS 1.0')])
def test_server_with_only_old_tls_is_unsupported_and_named(certs, serve, prober, maximum, protocol, offered):
    server = serve(HTTPSServer(server_context(certs.good, minimum=TLS.TLSv1, maximum=maximum)))
    result = probe(prober, server)
    assert_fails(result, 'tls_version', 'speaks at best %s, older than the required TLS 1.2' % offered)
    assert result['protocol'] == protocol
    assert result['http_status'] is None and server.requests == []


def test_tls_1_2_server_fails_a_tls_1_3_minimum(certs, serve):
    server = serve(HTTPSServer(server_context(certs.good, maximum=TLS.TLSv1_2)))
    result = probe(Prober(min_version='1.3', ca_path=certs.ca_file, timeout=2.0), server)
    assert_fails(result, 'tls_version', 'TLS 1.2', 'older than the required TLS 1.3')
    assert result['protocol'] == 'TLSv1.2'


def test_old_server_is_still_a_version_failure_when_this_host_cannot_offer_old_tls(certs, serve, prober):
    # Some OpenSSL builds cannot offer TLS 1.0/1.1 at all: the server's refusal must still read as a version problem.
    prober.legacy = None
    server = serve(HTTPSServer(server_context(certs.good, minimum=TLS.TLSv1, maximum=TLS.TLSv1_1)))
    assert_fails(probe(prober, server), 'tls_version', 'refuses TLS 1.2 and newer')


def test_server_with_only_weak_ciphers_is_a_tls_error_that_says_so(certs, serve, prober):
    # TLS 1.2, but only a SHA-1 cipher suite, which Python's default client settings refuse.
    server = serve(HTTPSServer(server_context(certs.good, minimum=TLS.TLSv1_2, maximum=TLS.TLSv1_2,
                                              ciphers='ECDHE-ECDSA-AES128-SHA')))
    assert_fails(probe(prober, server), 'tls_error', 'succeeds with TLS 1.2 when weak ciphers', 'outdated ciphers')


def test_server_without_any_common_cipher_is_a_tls_error(certs, serve, prober):
    # Only unencrypted (NULL) cipher suites: no client setting here accepts them, not even the weakened retry.
    server = serve(HTTPSServer(server_context(certs.good, minimum=TLS.TLSv1_2, maximum=TLS.TLSv1_2, ciphers='eNULL')))
    assert_fails(probe(prober, server), 'tls_error', 'The TLS handshake with', 'failed: [SSL: SSLV3_ALERT_HANDSHAKE_FAILURE]')


# --- certificates ---------------------------------------------------------------------------------

def test_certificate_of_an_unknown_ca_is_untrusted(certs, serve):
    server = serve(HTTPSServer(server_context(certs.good)))
    result = probe(Prober(timeout=2.0), server)  # the system's CA store does not know the test CA
    assert_fails(result, 'cert_untrusted', 'tls-check test CA', 'not trusted', 'ca_path')
    # The handshake itself worked: its facts are reported, but no request was sent to the untrusted server.
    assert result['protocol'] == 'TLSv1.3' and result['certificate']['subject_alt_names'] == ['127.0.0.1', 'localhost']
    assert server.requests == []


def test_ca_path_makes_the_same_server_trusted(certs, serve, prober):
    server = serve(HTTPSServer(server_context(certs.good)))
    assert probe(prober, server)['supported'] is True


def test_validate_certs_false_accepts_an_unknown_ca(certs, serve):
    server = serve(HTTPSServer(server_context(certs.good)))
    assert probe(Prober(validate_certs=False, timeout=2.0), server)['supported'] is True


def test_certificate_for_another_name_is_a_hostname_failure(certs, serve, prober):
    server = serve(HTTPSServer(server_context(certs.other_name)))
    for host in (LOOPBACK, 'localhost'):  # an IP address and a DNS name are checked differently by OpenSSL
        result = probe(prober, server, host=host)
        assert_fails(result, 'cert_hostname', 'not valid for the name %s' % host, 'other.example, www.other.example')


def test_expired_certificate_is_reported_with_its_date(certs, serve, prober):
    server = serve(HTTPSServer(server_context(certs.expired)))
    result = probe(prober, server)
    assert_fails(result, 'cert_expired', 'expired on %s (3 days ago): the server must renew it' % result['certificate']['not_after'])
    assert result['certificate']['days_left'] == -3


def test_certificate_expired_hours_ago_is_expired_on_its_date(certs, serve, prober):
    server = serve(HTTPSServer(server_context(certs.issue_expired(timedelta(hours=5)))))
    result = probe(prober, server)
    assert_fails(result, 'cert_expired', 'expired on %s: the server must renew it' % result['certificate']['not_after'])
    assert result['certificate']['days_left'] == 0


def test_expired_intermediate_is_not_blamed_on_the_servers_certificate(certs, serve, prober):
    server = serve(HTTPSServer(server_context(certs.expired_intermediate)))
    result = probe(prober, server)
    assert_fails(result, 'cert_expired', 'A certificate in the chain of', 'current chain')
    assert result['certificate']['days_left'] > 0


def test_certificate_not_valid_yet_points_at_the_clock(certs, serve, prober):
    now = datetime.now(timezone.utc)
    early = certs.ca.issue_cert(LOOPBACK, not_before=now + timedelta(days=2), not_after=now + timedelta(days=90))
    server = serve(HTTPSServer(server_context(early)))
    assert_fails(probe(prober, server), 'cert_expired', 'not valid yet', 'clock')


# --- SMTP -----------------------------------------------------------------------------------------

GREETING = '220 smtp.test tls-check test ESMTP'


def test_smtp_server_offering_starttls_is_supported(certs, serve, prober):
    server = serve(SMTPServer(starttls_context=server_context(certs.good)))
    result = probe(prober, server, 'smtp_starttls')
    assert result['supported'] is True and result['reason'] is None
    assert (result['greeting'], result['starttls_offered'], result['protocol']) == (GREETING, True, 'TLSv1.3')
    assert result['certificate']['subject_alt_names'] == ['127.0.0.1', 'localhost']


def test_smtp_server_without_starttls_is_unsupported(serve, prober):
    server = serve(SMTPServer())
    result = probe(prober, server, 'smtp_starttls')
    assert_fails(result, 'starttls_not_offered', 'does not offer STARTTLS', 'unencrypted')
    assert (result['greeting'], result['starttls_offered'], result['protocol']) == (GREETING, False, None)


def test_smtps_server_speaks_tls_at_once_and_greets_over_it(certs, serve, prober):
    server = serve(SMTPServer(implicit_tls_context=server_context(certs.good)))
    result = probe(prober, server, 'smtps')
    assert result['supported'] is True and result['greeting'] == GREETING and result['protocol'] == 'TLSv1.3'
    assert 'starttls_offered' not in result


def test_smtps_against_a_starttls_port_says_to_use_smtp_starttls(certs, serve, prober):
    server = serve(SMTPServer(starttls_context=server_context(certs.good)))
    assert_fails(probe(prober, server, 'smtps'), 'tls_error', 'did not answer with TLS', 'use mode smtp_starttls')


def test_smtp_starttls_against_an_implicit_tls_port_says_to_use_smtps(certs, serve):
    server = serve(SMTPServer(implicit_tls_context=server_context(certs.good)))
    result = probe(Prober(ca_path=certs.ca_file, timeout=0.5), server, 'smtp_starttls')
    assert_fails(result, 'timeout', 'no SMTP greeting within 0.5 seconds', 'use mode smtps')


@pytest.mark.parametrize('banner, words', [
    (b'SSH-2.0-OpenSSH_9.6\r\n', ['answered "SSH-2.0-OpenSSH_9.6", which is not SMTP']),
    (b'554 5.7.1 No SMTP service here\r\n', ['answered the connection with "554 5.7.1 No SMTP service here" instead of 220']),
])
def test_server_that_does_not_greet_with_220_is_an_smtp_error(serve, prober, banner, words):
    server = serve(BannerServer(banner))
    assert_fails(probe(prober, server, 'smtp_starttls'), 'smtp_error', *words)


def test_server_hanging_up_before_the_greeting_is_connection_closed(serve, prober):
    server = serve(BannerServer(b'', hang_up=True))
    assert_fails(probe(prober, server, 'smtp_starttls'), 'connection_closed',
                 'closed the connection during the wait for the SMTP greeting, before any TLS')


# --- the network ----------------------------------------------------------------------------------

def test_closed_port_is_refused(prober):
    assert_fails(prober.probe(LOOPBACK, free_port(), 'https'), 'refused', 'was refused', 'nothing listens')


def test_address_without_a_route_is_unreachable(prober):
    # Linux refuses TCP to a multicast address with ENETUNREACH at once: a "no route" without needing one.
    assert_fails(prober.probe('224.0.0.1', 443, 'https'), 'unreachable', '224.0.0.1:443 cannot be reached', 'routes')


def test_silent_server_times_out_within_the_timeout(serve):
    server = serve(SilentServer())
    started = time.monotonic()
    result = probe(Prober(timeout=0.5), server)
    assert time.monotonic() - started < 2.0  # one wait of 0.5 s, no retry of a timed-out handshake
    assert_fails(result, 'timeout', 'did not complete the TLS handshake within 0.5 seconds')


@pytest.mark.parametrize('host', ['nonexistent.invalid', 'a..invalid', 'x' * 64 + '.invalid'])
def test_unresolvable_name_is_a_dns_failure(prober, host):
    # The last two cannot even be encoded for DNS (empty label, label over 63 characters).
    assert_fails(prober.probe(host, 443, 'https'), 'dns', '%s does not resolve' % host)


def test_connection_reset_during_the_handshake_is_connection_closed(serve, prober):
    server = serve(ResettingServer())
    assert_fails(probe(prober, server), 'connection_closed', 'closed the connection during the TLS handshake', 'proxy')


def test_probe_many_runs_in_parallel_and_keeps_the_order(certs, serve):
    silent = [serve(SilentServer()) for _index in range(3)]
    good = serve(HTTPSServer(server_context(certs.good)))
    endpoints = [dict(host=LOOPBACK, port=server.port, mode='https') for server in silent + [good]]
    started = time.monotonic()
    results = Prober(ca_path=certs.ca_file, timeout=2.0).probe_many(endpoints)
    assert time.monotonic() - started < 5.0  # three 2-second timeouts side by side (6 s one after the other)
    assert [result['port'] for result in results] == [endpoint['port'] for endpoint in endpoints]
    assert [result['reason_code'] for result in results] == ['timeout', 'timeout', 'timeout', None]


# --- through ansible-playbook ---------------------------------------------------------------------

def test_module_in_a_playbook(certs, serve, run_playbook):
    good = serve(HTTPSServer(server_context(certs.good)))
    old = serve(HTTPSServer(server_context(certs.good, minimum=TLS.TLSv1, maximum=TLS.TLSv1_1)))

    def tls_check(name, port, **options):
        return {'name': name, 'register': name, 'mailsec.sendgrid.tls_check': dict(
            host=LOOPBACK, port=port, ca_path=certs.ca_file, timeout=2, **options)}
    run = run_playbook(tasks=[
        tls_check('good', good.port),
        dict(tls_check('good_check_mode', good.port), check_mode=True),
        tls_check('old', old.port, fail_on_unsupported=False),
        dict(tls_check('old_failing', old.port), ignore_errors=True),
    ], save=['good', 'good_check_mode', 'old', 'old_failing'])
    assert 'Traceback' not in run.output
    assert run.rc == 0, run.output
    good_result, check_mode_result, old_result, failing = (run.results[name] for name in (
        'good', 'good_check_mode', 'old', 'old_failing'))

    for result in (good_result, check_mode_result):
        assert (result['changed'], result.get('failed', False), result['supported']) == (False, False, True)
        (endpoint,) = result['results']
        assert (endpoint['port'], endpoint['supported'], endpoint['protocol'], endpoint['http_status']) == (
            good.port, True, 'TLSv1.3', 200)
        assert result['local']['openssl_version'] == ssl.OPENSSL_VERSION
    assert len(good.requests) == 2  # check mode tests for real too: it changes nothing

    assert (old_result['changed'], old_result.get('failed', False), old_result['supported']) == (False, False, False)
    assert old_result['results'][0]['reason_code'] == 'tls_version'
    assert old_result['results'][0]['protocol'] == 'TLSv1.1'

    assert failing['failed'] is True and failing['results'] == [dict(old_result['results'][0])]
    assert failing['msg'].startswith('1 of 1 endpoints failed the TLS 1.2 test: ')
    assert 'speaks at best TLS 1.1' in failing['msg']


def test_module_reports_option_errors_without_a_traceback(run_playbook, tmp_path):
    missing = str(tmp_path / 'missing.pem')
    run = run_playbook(tasks=[
        {'name': 'Bad port', 'register': 'bad_port', 'ignore_errors': True,
         'mailsec.sendgrid.tls_check': dict(endpoints=[dict(host=LOOPBACK, port=0)])},
        {'name': 'Missing CA file', 'register': 'missing_ca', 'ignore_errors': True,
         'mailsec.sendgrid.tls_check': dict(host=LOOPBACK, ca_path=missing)},
    ], save=['bad_port', 'missing_ca'])
    assert run.rc == 0 and 'Traceback' not in run.output
    assert run.results['bad_port']['msg'] == 'port 0 of 127.0.0.1 is not a TCP port (1-65535)'
    assert run.results['missing_ca']['msg'].startswith('Cannot load the CA bundle ca_path=%s: ' % missing)
    assert 'results' not in run.results['missing_ca'] and run.results['missing_ca']['local']['python']


def test_modules_on_a_host_without_cryptography(certs, serve, run_playbook, tmp_path):
    # A managed host may lack cryptography: tls_check still works, and says what read the certificate;
    # recipient_tls_info, meant for the controller, names the missing library.
    hidden = tmp_path / 'hidden' / 'cryptography'
    hidden.mkdir(parents=True)
    (hidden / '__init__.py').write_text('raise ImportError("cryptography is hidden for this test")\n')
    environment = dict(PYTHONPATH=str(hidden.parent))
    good = serve(HTTPSServer(server_context(certs.good)))

    def tls_check(name, **options):
        return {'name': name, 'register': name, 'environment': environment, 'mailsec.sendgrid.tls_check': dict(
            host=LOOPBACK, port=good.port, timeout=2, fail_on_unsupported=False, **options)}
    run = run_playbook(tasks=[
        tls_check('verified', ca_path=certs.ca_file),
        tls_check('unverified', validate_certs=False),
        tls_check('untrusted'),
        {'name': 'recipient', 'register': 'recipient', 'environment': environment, 'ignore_errors': True,
         'mailsec.sendgrid.recipient_tls_info': dict(domains=['example.com'])},
    ], save=['verified', 'unverified', 'untrusted', 'recipient'])
    assert run.rc == 0 and 'Traceback' not in run.output, run.output
    leaf = x509.load_pem_x509_certificate(certs.good.cert_chain_pems[0].bytes())
    (verified,), (unverified,), (untrusted,) = (run.results[name]['results'] for name in ('verified', 'unverified', 'untrusted'))
    assert verified['supported'] is True and verified['http_status'] == 200
    assert verified['certificate'] == dict(
        subject=leaf.subject.rfc4514_string(), issuer=leaf.issuer.rfc4514_string(),
        not_after=leaf.not_valid_after_utc.strftime('%Y-%m-%dT%H:%M:%SZ'), days_left=verified['certificate']['days_left'],
        subject_alt_names=['127.0.0.1', 'localhost'], parsed_by='ssl')
    unknown = dict(subject=None, issuer=None, not_after=None, days_left=None, subject_alt_names=None, parsed_by=None)
    assert unverified['supported'] is True and unverified['certificate'] == unknown
    assert (untrusted['supported'], untrusted['reason_code'], untrusted['certificate']) == (False, 'cert_untrusted', unknown)
    recipient = run.results['recipient']
    assert recipient['failed'] is True and 'Failed to import the required Python library (cryptography)' in recipient['msg']


def collection_playbook(run_playbook, extra_vars):
    return run_playbook(playbook=[dict(name='TLS check', **{'ansible.builtin.import_playbook': 'mailsec.sendgrid.tls_check'})],
                        args=['-e', json.dumps(extra_vars)])


def summary_rows(run):
    """The lines of the playbook's summary table, from the default callback's JSON-like output."""
    start = run.stdout.index('TASK [Summary]')
    block = run.stdout[run.stdout.index('{', start):run.stdout.index('\n}\n', start) + 2]
    return json.loads(block)['msg']


def test_collection_playbook_summarises_every_endpoint_then_fails_the_host(certs, serve, run_playbook):
    https = serve(HTTPSServer(server_context(certs.good)))
    smtp = serve(SMTPServer(starttls_context=server_context(certs.good)))
    plain_smtp = serve(SMTPServer())
    run = collection_playbook(run_playbook, dict(tls_check_ca_path=certs.ca_file, tls_check_timeout=2, tls_check_endpoints=[
        dict(host=LOOPBACK, port=https.port),
        dict(host=LOOPBACK, port=smtp.port, mode='smtp_starttls'),
        dict(host=LOOPBACK, port=plain_smtp.port, mode='smtp_starttls'),
        dict(host='nonexistent.invalid'),
    ]))
    assert 'Traceback' not in run.output
    assert run.rc == 2 and run.recap() == dict(ok=2, changed=0, unreachable=0, failed=1, skipped=0, rescued=0, ignored=0)
    header, *rows = summary_rows(run)
    assert header.split()[:4] == ['HOST', 'ENDPOINT', 'MODE', 'OK']
    assert [row.split()[:4] for row in rows] == [
        ['localhost', '%s:%d' % (LOOPBACK, https.port), 'https', 'yes'],
        ['localhost', '%s:%d' % (LOOPBACK, smtp.port), 'smtp_starttls', 'yes'],
        ['localhost', '%s:%d' % (LOOPBACK, plain_smtp.port), 'smtp_starttls', 'NO'],
        ['localhost', 'nonexistent.invalid:443', 'https', 'NO'],
    ]
    assert 'TLSv1.3' in rows[0] and 'expires 3000-01-01T00:00:00Z' in rows[0]
    assert rows[2].endswith('does not offer STARTTLS after EHLO, so mail would travel unencrypted: enable TLS on the '
                            'server, or a proxy or firewall in between strips STARTTLS.')
    assert 'nonexistent.invalid does not resolve' in rows[3]
    # The failure names each reason.
    assert 'does not offer STARTTLS' in run.stdout.split('TASK [Fail the hosts that did not pass]')[1]


def test_collection_playbook_passes_when_every_endpoint_does(certs, serve, run_playbook):
    smtps = serve(SMTPServer(implicit_tls_context=server_context(certs.good)))
    run = collection_playbook(run_playbook, dict(tls_check_ca_path=certs.ca_file, tls_check_endpoints=[
        dict(host=LOOPBACK, port=smtps.port, mode='smtps')]))
    assert run.rc == 0, run.output
    (row,) = summary_rows(run)[1:]
    assert row.split()[:6] == ['localhost', '%s:%d' % (LOOPBACK, smtps.port), 'smtps', 'yes', 'TLSv1.3', 'TLS_AES_256_GCM_SHA384']


def test_collection_playbook_can_report_without_failing(run_playbook):
    run = collection_playbook(run_playbook, dict(tls_check_fail_on_unsupported=False, tls_check_endpoints=[
        dict(host=LOOPBACK, port=free_port())]))
    assert run.rc == 0, run.output
    assert 'was refused' in summary_rows(run)[1]
    assert run.recap()['skipped'] == 1
