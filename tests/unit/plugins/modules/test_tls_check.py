# -*- coding: utf-8 -*-
"""Unit tests of tls_check: which endpoints the options mean, option checks, and the certificate reader.

The certificate reader is checked against the `cryptography` library used directly on real certificates,
and must never raise on damaged input; without cryptography, the standard library's view of a verified
certificate must give the same fields. The network behaviour is tested against
real servers in tests/integration/test_tls_check_servers.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings, strategies as st

from ansible_collections.mailsec.sendgrid.plugins.module_utils import _tls_certificate, _tls_common, _tls_endpoint
from ansible_collections.mailsec.sendgrid.plugins.modules import tls_check

UTC = datetime.timezone.utc


def params(**given_options):
    options = dict(host=None, port=None, mode=None, endpoints=None, timeout=10.0)
    options.update(given_options)
    return options


# --- which endpoints -------------------------------------------------------------------------------

def test_no_endpoint_options_mean_sendgrids_three_test_endpoints():
    assert tls_check.requested_endpoints(params()) == [
        dict(host='tls12.api.sendgrid.com', port=443, mode='https'),
        dict(host='tls12.smtp.sendgrid.net', port=587, mode='smtp_starttls'),
        dict(host='tls12.smtp.sendgrid.net', port=465, mode='smtps'),
    ]


@pytest.mark.parametrize('options, expected', [
    (dict(host='api.example.com'), dict(host='api.example.com', port=443, mode='https')),
    (dict(mode='smtps'), dict(host='tls12.smtp.sendgrid.net', port=465, mode='smtps')),
    (dict(mode='smtp_starttls', port=25), dict(host='tls12.smtp.sendgrid.net', port=25, mode='smtp_starttls')),
    (dict(port=8443), dict(host='tls12.api.sendgrid.com', port=8443, mode='https')),
])
def test_top_level_options_mean_one_endpoint_with_the_modes_defaults(options, expected):
    assert tls_check.requested_endpoints(params(**options)) == [expected]


def test_endpoint_items_fall_back_to_top_level_options_then_to_mode_defaults():
    items = [
        dict(host=None, port=None, mode=None),
        dict(host='mx.example.com', port=None, mode='smtps'),
        dict(host=None, port=2525, mode='smtp_starttls'),
    ]
    assert tls_check.requested_endpoints(params(host='relay.example.com', mode='smtp_starttls', endpoints=items)) == [
        dict(host='relay.example.com', port=587, mode='smtp_starttls'),
        dict(host='mx.example.com', port=465, mode='smtps'),
        dict(host='relay.example.com', port=2525, mode='smtp_starttls'),
    ]


def test_endpoint_items_without_top_level_options_use_sendgrids_host_of_their_mode():
    items = [dict(host=None, port=None, mode='smtps'), dict(host=None, port=None, mode=None)]
    assert tls_check.requested_endpoints(params(endpoints=items)) == [
        dict(host='tls12.smtp.sendgrid.net', port=465, mode='smtps'),
        dict(host='tls12.api.sendgrid.com', port=443, mode='https'),
    ]


@pytest.mark.parametrize('options, problem', [
    (dict(endpoints=[]), 'endpoints must not be empty'),
    (dict(host='a.example', port=0), 'port 0 of a.example is not a TCP port'),
    (dict(host='a.example', port=70000), 'port 70000 of a.example is not a TCP port'),
    (dict(timeout=0.0), 'timeout must be a positive number'),
    (dict(host=''), 'host must not be empty'),
])
def test_option_problems_are_named(options, problem):
    problems = tls_check.check_options(params(**options), tls_check.requested_endpoints(params(**options)))
    assert len(problems) == 1 and problems[0].startswith(problem)


def test_valid_options_have_no_problems():
    assert tls_check.check_options(params(), tls_check.requested_endpoints(params())) == []


@pytest.mark.parametrize('content, words', [
    (None, 'No such file'),
    ('not a certificate\n', 'Cannot load the CA bundle'),
])
def test_an_unusable_ca_path_is_a_clear_error(tmp_path, content, words):
    path = tmp_path / 'ca.pem'
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match='ca_path=%s' % path) as info:
        _tls_endpoint.Prober(ca_path=str(path))
    assert words in str(info.value)


def test_local_stack_reports_this_pythons_tls_components():
    import requests
    import urllib3

    local = _tls_endpoint.local_stack()
    assert local['openssl_version'] == ssl.OPENSSL_VERSION
    assert (local['tls1_2'], local['tls1_3']) == (ssl.HAS_TLSv1_2, ssl.HAS_TLSv1_3)
    assert (local['requests'], local['urllib3']) == (requests.__version__, urllib3.__version__)


# --- the certificate reader, against cryptography ------------------------------------------------------

def expected_fields(pem, now):
    """What certificate_info must say, computed by cryptography."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        alt_names = [str(name.value) for name in names]
    except x509.ExtensionNotFound:
        alt_names = []
    return dict(subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
                not_after=cert.not_valid_after_utc.strftime('%Y-%m-%dT%H:%M:%SZ'),
                days_left=int((cert.not_valid_after_utc - now).total_seconds() / 86400), subject_alt_names=alt_names)


def der(pem):
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def awkward_certificate(not_after):
    """Self-signed, with names that need RFC 4514 escaping, several attributes in one RDN, non-ASCII text,
    an attribute without a short name, and the given expiry (UTCTime before 2050, GeneralizedTime after)."""
    return awkward_certificate_and_key(not_after)[0]


def awkward_certificate_and_key(not_after):
    """awkward_certificate(not_after) and its private key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, 'DE')]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'Müller, Söhne + "Co" <mail>; \\')]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, '#ops '),
                                        x509.NameAttribute(NameOID.EMAIL_ADDRESS, 'ops@example.com')]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, ' mx1.example.com')]),
    ])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=UTC))
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName('mx1.example.com'),
                                                        x509.IPAddress(ipaddress.ip_address('2001:db8::25'))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def trustme_certificates():
    ca = trustme.CA()
    return [ca.cert_pem.bytes(), ca.issue_cert('127.0.0.1', 'localhost', 'mx.example.com').cert_chain_pems[0].bytes()]


@pytest.mark.parametrize('pem', trustme_certificates() + [
    awkward_certificate(datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)),
    awkward_certificate(datetime.datetime(2050, 1, 1, tzinfo=UTC)),
    awkward_certificate(datetime.datetime(2021, 6, 30, 12, 0, tzinfo=UTC)),
], ids=['trustme-ca', 'trustme-leaf', 'utctime-2049', 'generalizedtime-2050', 'expired'])
def test_certificate_info_matches_cryptography(pem):
    now = datetime.datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert _tls_certificate.certificate_info(der(pem), now=now) == expected_fields(pem, now)


@pytest.mark.skipif(not shutil.which('openssl'), reason='needs the openssl command to make a version 1 certificate')
def test_certificate_info_reads_version_1_certificates(tmp_path):
    # Old MX hosts still present v1 certificates: no version field, no extensions. cryptography cannot make them.
    key, request, cert = (str(tmp_path / name) for name in ('key.pem', 'req.pem', 'cert.pem'))
    subprocess.run(['openssl', 'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                    '-keyout', key, '-subj', '/O=Old Mail/CN=mx.old.example', '-out', request], check=True, capture_output=True)
    subprocess.run(['openssl', 'x509', '-req', '-in', request, '-signkey', key, '-days', '2', '-out', cert],
                   check=True, capture_output=True)
    pem = open(cert, 'rb').read()
    assert x509.load_pem_x509_certificate(pem).version == x509.Version.v1
    now = datetime.datetime.now(UTC)
    assert _tls_certificate.certificate_info(der(pem), now=now) == expected_fields(pem, now)


def test_days_left_rounds_toward_zero():
    pem = awkward_certificate(datetime.datetime(2026, 1, 10, tzinfo=UTC))
    assert _tls_certificate.certificate_info(der(pem), now=datetime.datetime(2026, 1, 13, 23, 0, tzinfo=UTC))['days_left'] == -3
    assert _tls_certificate.certificate_info(der(pem), now=datetime.datetime(2026, 1, 6, 1, 0, tzinfo=UTC))['days_left'] == 3


def test_damaged_certificates_read_as_none():
    whole = der(trustme_certificates()[1])
    assert _tls_certificate.certificate_info(None) is None
    for length in range(len(whole)):
        assert _tls_certificate.certificate_info(whole[:length]) is None
    assert _tls_certificate.certificate_info(whole + b'\0') is None


LEAF = der(trustme_certificates()[1])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data):
    info = _tls_certificate.certificate_info(data)
    assert info is None or set(info) == {'subject', 'issuer', 'not_after', 'days_left', 'subject_alt_names'}


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=len(LEAF) - 1), st.integers(min_value=0, max_value=255))
def test_a_certificate_with_any_byte_changed_never_raises(index, value):
    # Damage deep inside a real certificate reaches every branch of the reader, unlike random bytes.
    info = _tls_certificate.certificate_info(LEAF[:index] + bytes((value,)) + LEAF[index + 1:])
    assert info is None or set(info) == {'subject', 'issuer', 'not_after', 'days_left', 'subject_alt_names'}


# --- the certificate of a TLS connection, with and without cryptography -----------------------------

FIELDS_UNKNOWN = dict(subject=None, issuer=None, not_after=None, days_left=None, subject_alt_names=None, parsed_by=None)


@pytest.fixture
def without_cryptography(monkeypatch):
    """As on a managed host without the cryptography library."""
    monkeypatch.setattr(_tls_certificate, 'HAS_CRYPTOGRAPHY', False)


def peer_certificate(server, trust, now, verify=True):
    """peer_certificate() of the client side of a TLS handshake over a socket pair, the server configured by
    `server(context)`, the client's trust by `trust(context)`."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server(server_context)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    if verify:
        trust(client_context)
    else:
        client_context.verify_mode = ssl.CERT_NONE
    ours, peer = socket.socketpair()
    served = []
    thread = threading.Thread(target=lambda: served.append(server_context.wrap_socket(peer, server_side=True)), daemon=True)
    thread.start()
    try:
        with client_context.wrap_socket(ours, server_hostname='localhost') as tls:
            return _tls_certificate.peer_certificate(tls, now=now)
    finally:
        thread.join(5)
        for sock in served + [peer]:
            sock.close()


def awkward_server(tmp_path):
    """(configure a server context, configure a client's trust, PEM) of a self-signed awkward certificate."""
    pem, key = awkward_certificate_and_key(datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC))
    (tmp_path / 'cert.pem').write_bytes(pem)
    (tmp_path / 'key.pem').write_bytes(key)
    return (lambda context: context.load_cert_chain(str(tmp_path / 'cert.pem'), str(tmp_path / 'key.pem')),
            lambda context: context.load_verify_locations(cadata=pem.decode()), pem)


def trustme_server():
    ca = trustme.CA()
    leaf = ca.issue_cert('127.0.0.1', 'localhost', '2001:db8::25')
    return leaf.configure_cert, ca.configure_trust, leaf.cert_chain_pems[0].bytes()


@pytest.mark.parametrize('verify', [True, False])
def test_the_certificate_of_a_connection_is_read_by_cryptography(tmp_path, verify):
    now = datetime.datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    server, trust, pem = awkward_server(tmp_path)
    assert peer_certificate(server, trust, now, verify) == dict(expected_fields(pem, now), parsed_by='cryptography')


@pytest.mark.parametrize('make_server', [awkward_server, lambda _path: trustme_server()], ids=['awkward', 'trustme'])
def test_without_cryptography_a_verified_certificate_is_read_by_ssl(tmp_path, without_cryptography, make_server):
    # The same fields, in the same format, as cryptography gives: escaping, RDN order, IPv6 names, dates.
    now = datetime.datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    server, trust, pem = make_server(tmp_path)
    assert peer_certificate(server, trust, now) == dict(expected_fields(pem, now), parsed_by='ssl')


def test_without_cryptography_an_unverified_certificate_has_no_details(without_cryptography):
    server, trust, _pem = trustme_server()
    assert peer_certificate(server, trust, None, verify=False) == FIELDS_UNKNOWN


def test_a_certificate_cryptography_cannot_read_is_none():
    class Garbage:
        @staticmethod
        def getpeercert(binary_form=False):
            return b'not a certificate' if binary_form else {}
    assert _tls_certificate.peer_certificate(Garbage()) is None


class SMTPSServer:
    """An SMTPS server on 127.0.0.1 presenting `leaf` (trustme): greeting over TLS, then 221 to anything."""

    def __init__(self, leaf):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(self.context)
        self.listener = socket.create_server(('127.0.0.1', 0))
        # accept() polls: on Linux, closing the listener does not wake a thread blocked in accept(), and close()
        # would wait out its join timeout after every test.
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping.is_set():
            try:
                conn, _address = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # closed
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(2)
                    tls.sendall(b'220 smtps.test ready\r\n')
                    if tls.recv(1024):
                        tls.sendall(b'221 bye\r\n')
            except OSError:  # the client refused the certificate, or left after the handshake
                conn.close()

    def close(self):
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def smtps():
    ca = trustme.CA()
    leaf = ca.issue_cert('127.0.0.1')
    server = SMTPSServer(leaf)
    yield server, ca, leaf.cert_chain_pems[0].bytes()
    server.close()


def assert_certificate(certificate, pem, parsed_by):
    """`certificate` is what cryptography reads in `pem` (days_left as of about now), read by `parsed_by`."""
    expected = dict(expected_fields(pem, datetime.datetime.now(UTC)), parsed_by=parsed_by)
    assert abs(certificate['days_left'] - expected.pop('days_left')) <= 1
    assert dict(certificate, days_left=None) == dict(expected, days_left=None)


def test_without_cryptography_tls_check_reports_a_verified_certificate_read_by_ssl(smtps, tmp_path, without_cryptography):
    server, ca, pem = smtps
    ca.cert_pem.write_to_path(str(tmp_path / 'ca.pem'))
    result = _tls_endpoint.Prober(ca_path=str(tmp_path / 'ca.pem'), timeout=2.0).probe('127.0.0.1', server.port, 'smtps')
    assert (result['supported'], result['greeting']) == (True, '220 smtps.test ready'), result
    assert_certificate(result['certificate'], pem, 'ssl')


@pytest.mark.parametrize('validate_certs', [True, False])
def test_without_cryptography_tls_check_says_the_details_are_unknown(smtps, without_cryptography, validate_certs):
    server, _ca, _pem = smtps
    # The system's CA store does not know the test CA: the certificate fails verification, or is not verified at all.
    result = _tls_endpoint.Prober(validate_certs=validate_certs, timeout=2.0).probe('127.0.0.1', server.port, 'smtps')
    assert result['certificate'] == FIELDS_UNKNOWN and result['protocol'] == 'TLSv1.3'
    if validate_certs:
        assert (result['supported'], result['reason_code']) == (False, 'cert_untrusted')
        assert result['reason'].startswith('The certificate of 127.0.0.1:%d is not trusted (' % server.port)
    else:
        assert result['supported'] is True and result['reason_code'] is None


def test_with_cryptography_tls_check_says_so(smtps):
    server, _ca, pem = smtps
    result = _tls_endpoint.Prober(validate_certs=False, timeout=2.0).probe('127.0.0.1', server.port, 'smtps')
    assert_certificate(result['certificate'], pem, 'cryptography')


# --- the overall deadline ---------------------------------------------------------------------------

def test_each_step_waits_at_most_the_timeout_and_never_past_the_deadline():
    deadline = _tls_common.Deadline(limit=100.0, timeout=2.0)
    assert deadline.step() == 2.0 and deadline.limit == 100.0 and not deadline.passed
    capped = _tls_common.Deadline(limit=100.0, timeout=2.0, until=time.monotonic() + 0.5)
    assert 0 < capped.step() <= 0.5 and capped.limit <= 0.5
    over = _tls_common.Deadline(limit=0.0, timeout=2.0)
    assert over.passed
    with pytest.raises(socket.timeout):
        over.step()


def test_a_line_dripped_byte_by_byte_ends_at_the_deadline():
    ours, peer = socket.socketpair()
    stop = threading.Event()

    def drip():
        peer.sendall(b'220-')
        while not stop.wait(0.02):
            peer.sendall(b'x')
    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(socket.timeout):
            # Each recv gets a byte well within the 0.2 s step: only the 0.5 s deadline ends this.
            _tls_common.reader(ours, _tls_common.Deadline(0.5, 0.2)).readline(2048)
    finally:
        stop.set()
        thread.join()
        ours.close()
        peer.close()
    assert time.monotonic() - started < 0.5 + 1.0
