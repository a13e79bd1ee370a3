# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""The endpoint test of tls_check: HTTPS, SMTP with STARTTLS, SMTP over implicit TLS.

:class:`Prober` connects to an endpoint the way a client of that protocol would, performs the
TLS handshake under a given minimum version, and explains a failure as a ``reason_code`` and a
sentence a person can act on. It deliberately avoids ``requests``: it tests the Python and
OpenSSL stack itself, on hosts where ``requests`` may be missing or outdated. It runs on managed
hosts, so it needs nothing beyond the standard library (``cryptography``, when installed, reads
the certificates).

Private to this collection: its names may change at any time.
"""

from __future__ import annotations

import http.client
import platform
import socket
import ssl
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version as distribution_version

from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_certificate import peer_certificate
from ansible_collections.mailsec.sendgrid.plugins.module_utils._values import utc_now
from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_common import (
    CLOSED, TIMEOUTS, TLS_PROTOCOLS, Deadline, PeerClosed, ProbeFailure, Session, over_time, reader, smtp_expect, smtp_reply,
    ssl_message)

MODES = ('https', 'smtp_starttls', 'smtps')

# SendGrid's TLS-1.2-only test endpoints, per mode (host, port).
MODE_DEFAULTS = {
    'https': ('tls12.api.sendgrid.com', 443),
    'smtp_starttls': ('tls12.smtp.sendgrid.net', 587),
    'smtps': ('tls12.smtp.sendgrid.net', 465),
}

# The minimums tls_check may require: its question is readiness for SendGrid, which accepts nothing older than TLS 1.2.
TLS_VERSIONS = {version: TLS_PROTOCOLS[version] for version in ('1.2', '1.3')}

USER_AGENT = 'mailsec.sendgrid-tls_check'

# Protocol names as ssl.SSLSocket.version() reports them, oldest first.
_PROTOCOL_ORDER = ('SSLv3', 'TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3')

# OpenSSL errors by which a server says "not this protocol version".
_VERSION_ERRORS = frozenset(('TLSV1_ALERT_PROTOCOL_VERSION', 'UNSUPPORTED_PROTOCOL', 'NO_PROTOCOLS_AVAILABLE'))
# OpenSSL errors by which the peer's bytes were not TLS at all (often plain-text SMTP or HTTP).
_NOT_TLS_ERRORS = frozenset(('WRONG_VERSION_NUMBER', 'HTTP_REQUEST', 'RECORD_LAYER_FAILURE', 'PACKET_LENGTH_TOO_LONG'))

# OpenSSL X509_V_ERR_* codes of SSLCertVerificationError.verify_code.
_CERT_NOT_YET_VALID = 9
_CERT_HAS_EXPIRED = 10
_HOSTNAME_MISMATCH = 62
_IP_ADDRESS_MISMATCH = 64

# The overall time limit of one endpoint's test, in multiples of `timeout` (the wait for one network step). The step
# wait alone does not bound a probe: a peer that sends one byte just before each wait runs out (a tarpit) would hold
# it for hours. One tls_check endpoint: the test's connection and, after a failure, the one that explains it.
ENDPOINT_LIMIT_STEPS = 3


def local_stack():
    """The TLS components of this host that a failed test may point at (Python, OpenSSL, HTTP libraries)."""
    def installed(name):
        try:
            return distribution_version(name)
        except PackageNotFoundError:
            return None
    return dict(
        openssl_version=ssl.OPENSSL_VERSION,
        tls1_2=ssl.HAS_TLSv1_2,
        tls1_3=ssl.HAS_TLSv1_3,
        python=platform.python_version(),
        requests=installed('requests'),
        urllib3=installed('urllib3'),
    )


def local_supports(min_version):
    """Whether this host's OpenSSL can speak `min_version` ("1.2" or "1.3") at all."""
    return ssl.HAS_TLSv1_3 if min_version == '1.3' else ssl.HAS_TLSv1_2


def endpoint(host=None, port=None, mode=None):
    """A complete endpoint: a missing mode is https, a missing host or port is SendGrid's test endpoint of that mode."""
    mode = 'https' if mode is None else mode
    default_host, default_port = MODE_DEFAULTS[mode]
    return dict(host=default_host if host is None else host, port=default_port if port is None else port, mode=mode)


def protocol_label(protocol):
    """'TLSv1.2' -> 'TLS 1.2'; 'TLSv1' -> 'TLS 1.0'."""
    if protocol == 'TLSv1':
        return 'TLS 1.0'
    return protocol.replace('TLSv', 'TLS ').replace('SSLv', 'SSL ')


class _DeadlineSocket:
    """What http.client uses of its socket (sendall, makefile, close), every read and write bounded by the deadline."""

    def __init__(self, sock, deadline):
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data):
        self._deadline.arm(self._sock).sendall(data)

    def makefile(self, *_args, **_kwargs):
        return reader(self._sock, self._deadline)

    def close(self):
        """The session that opened the socket closes it."""


class Prober:
    """Tests endpoints under one policy (minimum TLS version, certificate checks, timeout).

    Build it once; :meth:`probe` is thread-safe (SSLContext objects may be shared between threads).
    Raises ValueError when `ca_path` cannot be loaded.
    """

    def __init__(self, min_version='1.2', validate_certs=True, timeout=10.0, ca_path=None):
        self.min_version = min_version
        self.minimum = TLS_VERSIONS[min_version]
        self.timeout = timeout
        self.context = self._context(verify=validate_certs, ca_path=ca_path)
        # Same handshake without verification: after a certificate failure it shows what the server presented.
        self.unverified = self._context(verify=False)
        self.legacy = _legacy_context()

    def _context(self, verify, ca_path=None):
        if verify:
            try:
                context = ssl.create_default_context(cafile=ca_path)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError('Cannot load the CA bundle ca_path=%s: %s' % (ca_path, ssl_message(exc))) from exc
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.minimum_version = self.minimum
        return context

    def probe_many(self, endpoints, concurrency=8):
        """probe() each endpoint dict (host, port, mode) in parallel; results in the same order."""
        if not endpoints:
            return []
        with ThreadPoolExecutor(max_workers=min(concurrency, len(endpoints))) as pool:
            return list(pool.map(lambda item: self.probe(item['host'], item['port'], item['mode']), endpoints))

    def probe(self, host, port, mode):
        """Test one endpoint; never raises for network or TLS trouble: the result says what happened."""
        result = dict(host=host, port=port, mode=mode, supported=False, protocol=None, cipher=None,
                      certificate=None, reason=None, reason_code=None)
        if mode == 'https':
            result['http_status'] = None
        else:
            result['greeting'] = None
        if mode == 'smtp_starttls':
            result['starttls_offered'] = None
        deadline = Deadline(ENDPOINT_LIMIT_STEPS * self.timeout, self.timeout)
        session = _EndpointSession(host, port, mode, deadline, result)
        try:
            session.run(self.context, converse=True)
            result['supported'] = True
        except ProbeFailure as failure:
            result.update(reason_code=failure.code, reason=failure.reason)
        except (OSError, ValueError, http.client.HTTPException, PeerClosed) as exc:
            failure = self._explain(session, exc)
            result.update(reason_code=failure.code, reason=failure.reason)
        return result

    def _retry(self, session, context):
        """Connect again with another context; the new session's facts, or None if that failed too."""
        facts = dict(session.facts)
        retry = _EndpointSession(session.host, session.port, session.mode, session.deadline, facts)
        try:
            retry.run(context, converse=False)
        except (ProbeFailure, OSError, ValueError, PeerClosed):
            return None
        return facts

    def _explain(self, session, exc):
        where = session.where
        # UnicodeError: a name that cannot even be encoded for DNS (an empty or over-long label).
        if isinstance(exc, (socket.gaierror, UnicodeError)):
            return ProbeFailure('dns', '%s does not resolve (%s): check the name and the DNS settings of this host.' % (
                session.host, getattr(exc, 'strerror', None) or exc))
        if session.phase == 'resolve' and isinstance(exc, TIMEOUTS):
            return ProbeFailure('dns', 'The DNS look-up of %s did not finish within %g seconds: check the DNS settings '
                                'of this host.' % (session.host, min(self.timeout, session.deadline.limit)))
        if isinstance(exc, ConnectionRefusedError):
            return ProbeFailure('refused', 'The connection to %s was refused: nothing listens on that port, '
                                'or a firewall rejects the connection.' % where)
        if isinstance(exc, TIMEOUTS):
            return ProbeFailure('timeout', self._timeout_reason(session))
        if isinstance(exc, ssl.SSLCertVerificationError):
            return self._certificate_failure(session, exc)
        if session.phase == 'handshake':
            return self._handshake_failure(session, exc)
        if isinstance(exc, CLOSED + (PeerClosed,)):
            return ProbeFailure('connection_closed', '%s closed the connection during the %s, before any TLS: '
                                'a proxy or firewall in between may block this traffic.' % (where, session.phase_label))
        if session.phase == 'connect' and isinstance(exc, OSError):
            return ProbeFailure('unreachable', '%s cannot be reached (%s): check the routes and firewalls of this network.' % (
                where, exc.strerror or exc))
        return ProbeFailure('tls_error', 'Testing %s failed during the %s: %s.' % (where, session.phase_label, ssl_message(exc)))

    def _timeout_reason(self, session):
        waited = 'within %g seconds' % self.timeout
        where = session.where
        if session.deadline.passed:
            return over_time(session, 'endpoint', ENDPOINT_LIMIT_STEPS)
        if session.phase == 'connect':
            hint = ' (many networks block outgoing port 25: try port 587)' if session.port == 25 else ''
            return 'No answer from %s %s: a firewall probably drops the connection%s.' % (where, waited, hint)
        if session.phase == 'greeting':
            return ('%s accepted the connection but sent no SMTP greeting %s; if it expects TLS at once '
                    '(like port 465), use mode smtps.' % (where, waited))
        if session.phase == 'handshake':
            hint = ('if it expects plain-text SMTP first (like ports 25 and 587), use mode smtp_starttls'
                    if session.mode == 'smtps' else 'a proxy or firewall in between may be holding the connection')
            return '%s accepted the connection but did not complete the TLS handshake %s; %s.' % (where, waited, hint)
        return '%s stopped answering during the %s (nothing %s).' % (where, session.phase_label, waited)

    def _certificate_failure(self, session, exc):
        _adopt_handshake(session, self._retry(session, self.unverified))
        cert = session.facts.get('certificate')
        if cert and cert['not_after'] is None:
            cert = None  # its details are unknown (no cryptography on this host, and the ssl module did not verify it)
        where = session.where
        if exc.verify_code == _CERT_HAS_EXPIRED:
            # OpenSSL says the same for an expired intermediate; only the server's own certificate has a date we know.
            if not cert or cert['not_after'] > utc_now():
                return ProbeFailure('cert_expired', 'A certificate in the chain of %s has expired: the server must install '
                                    'a current chain.' % where)
            ago = ' (%d days ago)' % -cert['days_left'] if cert['days_left'] < 0 else ''
            return ProbeFailure('cert_expired', 'The certificate of %s expired on %s%s: the server must renew it.' % (
                where, cert['not_after'], ago))
        if exc.verify_code == _CERT_NOT_YET_VALID:
            return ProbeFailure('cert_expired', 'The certificate of %s is not valid yet: check the clock of this host, '
                                'or the server installed a certificate too early.' % where)
        if exc.verify_code in (_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH):
            names = ', '.join(cert['subject_alt_names']) if cert and cert['subject_alt_names'] else None
            listed = ' (it lists %s)' % names if names else ''
            return ProbeFailure('cert_hostname', 'The certificate of %s is not valid for the name %s%s: connect by a name '
                                'the certificate lists, or a proxy in between presents its own certificate.' % (
                                    where, session.host, listed))
        issuer = ' issued by %s' % cert['issuer'] if cert else ''
        return ProbeFailure('cert_untrusted', 'The certificate of %s%s is not trusted (%s): if a TLS-inspecting proxy '
                            'sits in between, trust its CA with ca_path; otherwise update the CA bundle of this host.' % (
                                where, issuer, exc.verify_message or ssl_message(exc)))

    def _handshake_failure(self, session, exc):
        where = session.where
        required = 'TLS %s' % self.min_version
        facts = self._retry(session, self.legacy) if self.legacy else None
        if facts and _protocol_rank(facts['protocol']) < _protocol_rank('TLSv' + self.min_version):
            _adopt_handshake(session, facts)
            return ProbeFailure('tls_version', '%s speaks at best %s, older than the required %s: the server, or a proxy '
                                'or firewall inspecting TLS in between, must be upgraded.' % (
                                    where, protocol_label(facts['protocol']), required))
        message = ssl_message(exc)
        if facts:
            return ProbeFailure('tls_error', 'The TLS handshake with %s failed (%s), but succeeds with %s when weak ciphers '
                                'and keys are allowed: the server uses outdated ciphers or keys.' % (
                                    where, message, protocol_label(facts['protocol'])))
        if isinstance(exc, CLOSED):
            return ProbeFailure('connection_closed', '%s closed the connection during the TLS handshake (%s): a proxy or '
                                'firewall in between probably blocks TLS to this host.' % (where, message))
        reason = getattr(exc, 'reason', None)
        if reason in _VERSION_ERRORS:
            return ProbeFailure('tls_version', '%s refuses %s and newer (%s), and no older version succeeded from this '
                                'host either: the server, or a proxy in between, must be upgraded.' % (where, required, message))
        if reason in _NOT_TLS_ERRORS:
            hint = ('; for SMTP on ports 25 and 587 use mode smtp_starttls' if session.mode == 'smtps' else '')
            return ProbeFailure('tls_error', '%s did not answer with TLS (%s): it may expect plain text%s.' % (where, message, hint))
        return ProbeFailure('tls_error', 'The TLS handshake with %s failed: %s.' % (where, message))


class _EndpointSession(Session):
    """One connection to an endpoint: the Session's TCP, SMTP prelude (mode smtp_starttls) and TLS handshake, then
    the mode's first words over TLS."""

    def run(self, context, converse):
        """Handshake under `context`; with `converse`, also send the HTTP request or read the SMTPS greeting."""
        sock = self.connect()
        try:
            if self.mode == 'smtp_starttls' and not self.starttls_prelude(sock):
                code, lines = self.ehlo_reply
                if code != 250:
                    raise ProbeFailure('starttls_not_offered', '%s answered EHLO with "%s", so it offers no STARTTLS: '
                                       'mail would travel unencrypted.' % (self.where, lines[0]))
                raise ProbeFailure('starttls_not_offered', '%s does not offer STARTTLS after EHLO, so mail would travel '
                                   'unencrypted: enable TLS on the server, or a proxy or firewall in between strips '
                                   'STARTTLS.' % self.where)
            sock = self.handshake(sock, context)
            self.facts.update(protocol=sock.version(), cipher=sock.cipher()[0], certificate=peer_certificate(sock))
            if converse:
                self._converse(sock, context)
        finally:
            sock.close()

    def _converse(self, tls, context):
        """The application's first words over TLS. They are for information: the handshake result stands either way."""
        try:
            if self.mode == 'https':
                connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.deadline.timeout,
                                                         context=context)
                # The request travels over the connection just tested, as curl's would, not over a new one.
                connection.sock = _DeadlineSocket(tls, self.deadline)
                connection.request('HEAD', '/', headers={'User-Agent': USER_AGENT})
                self.facts['http_status'] = connection.getresponse().status
                return
            with reader(tls, self.deadline) as lines_in:
                if self.mode == 'smtps':
                    self.facts['greeting'] = smtp_expect(lines_in, 220, 'the connection', self.where)
                self.deadline.arm(tls).sendall(b'QUIT\r\n')
                smtp_reply(lines_in)
        except (OSError, http.client.HTTPException, ProbeFailure, PeerClosed):
            pass  # http_status / greeting stay null: the server said nothing useful after the handshake


def _legacy_context():
    """A client context that also offers TLS 1.0 and 1.1 with any cipher, to learn what an old server speaks.

    Used only to name the version of a server that failed the real test, never to pass one.
    None when this host's OpenSSL cannot offer old versions at all.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            # Offering TLS 1.0 is deprecated, which is the point here.
            warnings.simplefilter('ignore', DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
        # OpenSSL 3 refuses TLS 1.0/1.1 (SHA-1 signatures) above security level 0.
        context.set_ciphers('DEFAULT:@SECLEVEL=0')
    except (ValueError, ssl.SSLError):
        return None
    return context


def _adopt_handshake(session, facts):
    """Report what a retry's handshake learnt (protocol, cipher, certificate), if it succeeded."""
    if facts:
        session.facts.update(protocol=facts['protocol'], cipher=facts['cipher'], certificate=facts['certificate'])


def _protocol_rank(protocol):
    return _PROTOCOL_ORDER.index(protocol) if protocol in _PROTOCOL_ORDER else -1
