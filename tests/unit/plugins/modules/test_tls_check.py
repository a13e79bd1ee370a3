# -*- coding: utf-8 -*-
"""Unit tests of tls_check: which endpoints the options mean, option checks, and the certificate reader.

The certificate reader is checked against an independent implementation (the `cryptography` library)
on real certificates, and must never raise on damaged input. The network behaviour is tested against
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

from ansible_collections.mailsec.sendgrid.plugins.module_utils import tls_probe
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
        tls_probe.Prober(ca_path=str(path))
    assert words in str(info.value)


def test_local_stack_reports_this_pythons_tls_components():
    import requests
    import urllib3

    local = tls_probe.local_stack()
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
    return cert.public_bytes(serialization.Encoding.PEM)


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
    assert tls_probe.certificate_info(der(pem), now=now) == expected_fields(pem, now)


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
    assert tls_probe.certificate_info(der(pem), now=now) == expected_fields(pem, now)


def test_days_left_rounds_toward_zero():
    pem = awkward_certificate(datetime.datetime(2026, 1, 10, tzinfo=UTC))
    assert tls_probe.certificate_info(der(pem), now=datetime.datetime(2026, 1, 13, 23, 0, tzinfo=UTC))['days_left'] == -3
    assert tls_probe.certificate_info(der(pem), now=datetime.datetime(2026, 1, 6, 1, 0, tzinfo=UTC))['days_left'] == 3


def test_damaged_certificates_read_as_none():
    whole = der(trustme_certificates()[1])
    assert tls_probe.certificate_info(None) is None
    for length in range(len(whole)):
        assert tls_probe.certificate_info(whole[:length]) is None
    assert tls_probe.certificate_info(whole + b'\0') is None


LEAF = der(trustme_certificates()[1])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data):
    info = tls_probe.certificate_info(data)
    assert info is None or set(info) == {'subject', 'issuer', 'not_after', 'days_left', 'subject_alt_names'}


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=len(LEAF) - 1), st.integers(min_value=0, max_value=255))
def test_a_certificate_with_any_byte_changed_never_raises(index, value):
    # Damage deep inside a real certificate reaches every branch of the reader, unlike random bytes.
    info = tls_probe.certificate_info(LEAF[:index] + bytes((value,)) + LEAF[index + 1:])
    assert info is None or set(info) == {'subject', 'issuer', 'not_after', 'days_left', 'subject_alt_names'}


# --- the overall deadline ---------------------------------------------------------------------------

def test_each_step_waits_at_most_the_timeout_and_never_past_the_deadline():
    deadline = tls_probe.Deadline(limit=100.0, timeout=2.0)
    assert deadline.step() == 2.0 and deadline.limit == 100.0 and not deadline.passed
    capped = tls_probe.Deadline(limit=100.0, timeout=2.0, until=time.monotonic() + 0.5)
    assert 0 < capped.step() <= 0.5 and capped.limit <= 0.5
    over = tls_probe.Deadline(limit=0.0, timeout=2.0)
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
            tls_probe._reader(ours, tls_probe.Deadline(0.5, 0.2)).readline(2048)  # pylint: disable=protected-access
    finally:
        stop.set()
        thread.join()
        ours.close()
        peer.close()
    assert time.monotonic() - started < 0.5 + 1.0
