# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""TLS probing with the standard library only: HTTPS, SMTP with STARTTLS, SMTP over implicit TLS.

:class:`Prober` connects to an endpoint the way a client of that protocol would, performs the
TLS handshake under a given minimum version, and explains a failure as a ``reason_code`` and a
sentence a person can act on. It deliberately avoids ``requests``: it tests the Python and
OpenSSL stack itself, on hosts where ``requests`` may be missing or outdated.
"""

from __future__ import annotations

import datetime
import http.client
import io
import ipaddress
import platform
import re
import socket
import ssl
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version as distribution_version

MODES = ('https', 'smtp_starttls', 'smtps')

# SendGrid's TLS-1.2-only test endpoints, per mode (host, port).
MODE_DEFAULTS = {
    'https': ('tls12.api.sendgrid.com', 443),
    'smtp_starttls': ('tls12.smtp.sendgrid.net', 587),
    'smtps': ('tls12.smtp.sendgrid.net', 465),
}

TLS_VERSIONS = {'1.2': ssl.TLSVersion.TLSv1_2, '1.3': ssl.TLSVersion.TLSv1_3}

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

_TIMEOUTS = (socket.timeout, TimeoutError)  # distinct classes before Python 3.10
_CLOSED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError)

# Bounds on what an SMTP server may send us, so a misbehaving one cannot exhaust memory.
_SMTP_MAX_LINE = 2048
_SMTP_MAX_LINES = 100
_SMTP_REPLY = re.compile(br'^(\d{3})([ -]?)(.*?)\r?\n?$', re.DOTALL)

# Overall time limits, in multiples of `timeout` (the wait for one network step). The step wait alone does not
# bound a probe: a peer that sends one byte just before each wait runs out (a tarpit) would hold it for hours.
# One tls_check endpoint: the test's connection and, after a failure, the one that explains it.
ENDPOINT_LIMIT_STEPS = 3
# One recipient MX host: its five connections (one per TLS version, one verifying the certificate).
MX_LIMIT_STEPS = 4


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


class Deadline:
    """The end of one probe's time on the monotonic clock. Every network step (connect, each read, each write, the
    TLS handshake) waits at most `timeout` seconds and never past the end: :meth:`step` is checked before each one.

    `limit` is the overall seconds; `until` (a time.monotonic() value) may end it sooner, for a caller with a deadline
    of its own.
    """

    def __init__(self, limit, timeout, until=None):
        start = time.monotonic()
        self.timeout = timeout
        self.end = start + limit if until is None else min(start + limit, until)
        self.limit = self.end - start

    def remaining(self):
        return self.end - time.monotonic()

    @property
    def passed(self):
        return self.remaining() <= 0

    def step(self):
        """Seconds the next network step may wait: min(timeout, time left); socket.timeout when no time is left."""
        left = self.remaining()
        if left <= 0:
            raise socket.timeout('the time limit of %g seconds has passed' % self.limit)
        return min(self.timeout, left)

    def arm(self, sock):
        """`sock` with the timeout of the next step (an SSL handshake counts it for the whole handshake)."""
        sock.settimeout(self.step())
        return sock


class _DeadlineIO(io.RawIOBase):
    """A socket's input for io.BufferedReader with each recv bounded by the deadline. A reader from
    socket.makefile() waits `timeout` per recv, so readline() never ends for a peer that drips one byte at a time."""

    def __init__(self, sock, deadline):
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self):
        return True

    def readinto(self, buffer):
        return self._deadline.arm(self._sock).recv_into(buffer)


def _reader(sock, deadline):
    """A buffered reader of `sock` (readline with a limit), every recv bounded by the deadline."""
    return io.BufferedReader(_DeadlineIO(sock, deadline))


class _DeadlineSocket:
    """What http.client uses of its socket (sendall, makefile, close), every read and write bounded by the deadline."""

    def __init__(self, sock, deadline):
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data):
        self._deadline.arm(self._sock).sendall(data)

    def makefile(self, *_args, **_kwargs):
        return _reader(self._sock, self._deadline)

    def close(self):
        """The session that opened the socket closes it."""


def _resolve(host, port, deadline):
    """getaddrinfo() of `host` within one step of the deadline. The system resolver has no timeout of its own that
    we control (with several name servers it may try for a minute), so it runs in a thread we stop waiting for;
    the thread is a daemon, so that a stuck look-up cannot hold the module's exit either."""
    outcome = {}

    def look_up():
        try:
            outcome['addresses'] = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name that cannot be encoded for DNS
            outcome['error'] = exc

    wait = deadline.step()
    thread = threading.Thread(target=look_up, name='resolve-%s' % host, daemon=True)
    thread.start()
    thread.join(wait)
    if thread.is_alive():
        raise socket.timeout('the look-up of %s did not finish' % host)
    if 'error' in outcome:
        raise outcome['error']
    if not outcome['addresses']:
        raise socket.gaierror('no address')
    return outcome['addresses']


def _connect(addresses, deadline):
    """A TCP connection to the first of `addresses` (getaddrinfo() entries) that accepts one, each attempt within one
    step of the deadline (socket.create_connection would give each address the full timeout)."""
    error = None
    for family, kind, proto, _name, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            deadline.arm(sock).connect(address)
            return sock
        except OSError as exc:  # socket.timeout included
            sock.close()
            error = exc
            if deadline.passed:
                break
    raise error


class ProbeFailure(Exception):
    """An endpoint failed the test, with a machine-readable code and a sentence for people."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _PeerClosed(Exception):
    """The peer closed the connection where an answer was due."""


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
                raise ValueError('Cannot load the CA bundle ca_path=%s: %s' % (ca_path, _ssl_message(exc))) from exc
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
        session = _Session(host, port, mode, deadline, result)
        try:
            session.run(self.context, converse=True)
            result['supported'] = True
        except ProbeFailure as failure:
            result.update(reason_code=failure.code, reason=failure.reason)
        except (OSError, ValueError, http.client.HTTPException, _PeerClosed) as exc:
            failure = self._explain(session, exc)
            result.update(reason_code=failure.code, reason=failure.reason)
        return result

    def _retry(self, session, context):
        """Connect again with another context; the new session's facts, or None if that failed too."""
        facts = dict(session.facts)
        retry = _Session(session.host, session.port, session.mode, session.deadline, facts)
        try:
            retry.run(context, converse=False)
        except (ProbeFailure, OSError, ValueError, _PeerClosed):
            return None
        return facts

    def _explain(self, session, exc):
        where = session.where
        # UnicodeError: a name that cannot even be encoded for DNS (an empty or over-long label).
        if isinstance(exc, (socket.gaierror, UnicodeError)):
            return ProbeFailure('dns', '%s does not resolve (%s): check the name and the DNS settings of this host.' % (
                session.host, getattr(exc, 'strerror', None) or exc))
        if session.phase == 'resolve' and isinstance(exc, _TIMEOUTS):
            return ProbeFailure('dns', 'The DNS look-up of %s did not finish within %g seconds: check the DNS settings '
                                'of this host.' % (session.host, min(self.timeout, session.deadline.limit)))
        if isinstance(exc, ConnectionRefusedError):
            return ProbeFailure('refused', 'The connection to %s was refused: nothing listens on that port, '
                                'or a firewall rejects the connection.' % where)
        if isinstance(exc, _TIMEOUTS):
            return ProbeFailure('timeout', self._timeout_reason(session))
        if isinstance(exc, ssl.SSLCertVerificationError):
            return self._certificate_failure(session, exc)
        if session.phase == 'handshake':
            return self._handshake_failure(session, exc)
        if isinstance(exc, _CLOSED + (_PeerClosed,)):
            return ProbeFailure('connection_closed', '%s closed the connection during the %s, before any TLS: '
                                'a proxy or firewall in between may block this traffic.' % (where, session.phase_label))
        if session.phase == 'connect' and isinstance(exc, OSError):
            return ProbeFailure('unreachable', '%s cannot be reached (%s): check the routes and firewalls of this network.' % (
                where, exc.strerror or exc))
        return ProbeFailure('tls_error', 'Testing %s failed during the %s: %s.' % (where, session.phase_label, _ssl_message(exc)))

    def _timeout_reason(self, session):
        waited = 'within %g seconds' % self.timeout
        where = session.where
        if session.deadline.passed:
            return _over_time(session, 'endpoint', ENDPOINT_LIMIT_STEPS)
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
        where = session.where
        if exc.verify_code == _CERT_HAS_EXPIRED:
            # OpenSSL says the same for an expired intermediate; only the server's own certificate has a date we know.
            if not cert or cert['not_after'] > _now_iso():
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
                                where, issuer, exc.verify_message or _ssl_message(exc)))

    def _handshake_failure(self, session, exc):
        where = session.where
        required = 'TLS %s' % self.min_version
        facts = self._retry(session, self.legacy) if self.legacy else None
        if facts and _protocol_rank(facts['protocol']) < _protocol_rank('TLSv' + self.min_version):
            _adopt_handshake(session, facts)
            return ProbeFailure('tls_version', '%s speaks at best %s, older than the required %s: the server, or a proxy '
                                'or firewall inspecting TLS in between, must be upgraded.' % (
                                    where, protocol_label(facts['protocol']), required))
        message = _ssl_message(exc)
        if facts:
            return ProbeFailure('tls_error', 'The TLS handshake with %s failed (%s), but succeeds with %s when weak ciphers '
                                'and keys are allowed: the server uses outdated ciphers or keys.' % (
                                    where, message, protocol_label(facts['protocol'])))
        if isinstance(exc, _CLOSED):
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


class _Session:
    """One connection: TCP, the mode's plain-text prelude, the TLS handshake, then the mode's first words over TLS.

    `phase` tells a failure where it happened; `facts` (the probe's result dict) collects what was learnt. Every
    network step is bounded by `deadline` (a Deadline shared with the other connections of the same probe).
    `address` connects there instead of resolving `host` (which then only names the server for SNI).
    """

    _PHASE_LABELS = dict(resolve='DNS look-up', connect='TCP connection', greeting='wait for the SMTP greeting',
                         ehlo='SMTP EHLO', starttls='SMTP STARTTLS command', handshake='TLS handshake')

    def __init__(self, host, port, mode, deadline, facts, address=None, where=None):
        self.host = host
        self.port = port
        self.mode = mode
        self.deadline = deadline
        self.facts = facts
        self.address = address
        self.phase = 'connect'
        self.where = where or ('[%s]:%d' % (host, port) if ':' in host else '%s:%d' % (host, port))
        self.ehlo_reply = None

    @property
    def phase_label(self):
        return self._PHASE_LABELS[self.phase]

    def connect(self):
        if self.address is None:
            self.phase = 'resolve'
            addresses = _resolve(self.host, self.port, self.deadline)
        else:
            addresses = [(socket.AF_INET6 if ':' in self.address else socket.AF_INET, socket.SOCK_STREAM, 0, '',
                          (self.address, self.port))]
        self.phase = 'connect'
        return _connect(addresses, self.deadline)

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
            self.facts.update(protocol=sock.version(), cipher=sock.cipher()[0],
                              certificate=certificate_info(sock.getpeercert(binary_form=True)))
            if converse:
                self._converse(sock, context)
        finally:
            sock.close()

    def starttls_prelude(self, sock):
        """Greeting, EHLO, and STARTTLS when offered: True once the server agreed to start TLS, False when it offers
        no STARTTLS (then nothing more is sent; ehlo_reply holds the EHLO answer)."""
        with _reader(sock, self.deadline) as reader:
            self.phase = 'greeting'
            self.facts['greeting'] = _smtp_expect(reader, 220, 'the connection', self.where)
            self.phase = 'ehlo'
            self.deadline.arm(sock).sendall(b'EHLO ' + _ehlo_name() + b'\r\n')
            self.ehlo_reply = code, lines = _smtp_reply(reader)
            keywords = [line[4:].split(' ')[0].upper() for line in lines[1:]] if code == 250 else []
            self.facts['starttls_offered'] = 'STARTTLS' in keywords
            if not self.facts['starttls_offered']:
                return False
            self.phase = 'starttls'
            self.deadline.arm(sock).sendall(b'STARTTLS\r\n')
            _smtp_expect(reader, 220, 'STARTTLS', self.where)
        return True

    def handshake(self, sock, context):
        """The TLS socket after a handshake under `context`, which may take one step of the deadline in all."""
        self.phase = 'handshake'
        return context.wrap_socket(self.deadline.arm(sock), server_hostname=self.host)

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
            with _reader(tls, self.deadline) as reader:
                if self.mode == 'smtps':
                    self.facts['greeting'] = _smtp_expect(reader, 220, 'the connection', self.where)
                self.deadline.arm(tls).sendall(b'QUIT\r\n')
                _smtp_reply(reader)
        except (OSError, http.client.HTTPException, ProbeFailure, _PeerClosed):
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


def _over_time(session, scope, steps):
    """Why a test was cut short by its overall deadline (Deadline), per `scope` (what the limit applies to)."""
    if session.phase == 'handshake':
        hint = 'it never completes the TLS handshake, or a firewall or proxy in between holds the connection'
    else:
        hint = 'it answers too slowly, or drips its answers a byte or a line at a time like a tarpit'
    return '%s did not complete the test within %g seconds (the limit per %s, %d times timeout), in the %s: %s.' % (
        session.where, session.deadline.limit, scope, steps, session.phase_label, hint)


def _adopt_handshake(session, facts):
    """Report what a retry's handshake learnt (protocol, cipher, certificate), if it succeeded."""
    if facts:
        session.facts.update(protocol=facts['protocol'], cipher=facts['cipher'], certificate=facts['certificate'])


def _now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime(_ISO_FORMAT)


def _protocol_rank(protocol):
    return _PROTOCOL_ORDER.index(protocol) if protocol in _PROTOCOL_ORDER else -1


def _ssl_message(exc):
    """An exception as text, without OpenSSL's source location."""
    return re.sub(r'\s*\(_ssl\.c:\d+\)', '', str(exc))


def _ehlo_name():
    return socket.gethostname().encode('ascii', 'replace') or b'localhost'


def _smtp_reply(reader):
    """(code, lines) of one SMTP reply, bounded in size."""
    lines = []
    while len(lines) < _SMTP_MAX_LINES:
        raw = reader.readline(_SMTP_MAX_LINE)
        if not raw:
            raise _PeerClosed()
        match = _SMTP_REPLY.match(raw)
        if not match:
            raise ProbeFailure('smtp_error', 'The server answered "%s", which is not SMTP: check the port and the mode.' % (
                raw[:80].decode('ascii', 'replace').strip()))
        lines.append(raw.decode('utf-8', 'replace').rstrip('\r\n'))
        if match.group(2) != b'-':
            return int(match.group(1)), lines
    raise ProbeFailure('smtp_error', 'The server sent an SMTP reply of more than %d lines.' % _SMTP_MAX_LINES)


def _smtp_expect(reader, expected, what, where):
    code, lines = _smtp_reply(reader)
    if code != expected:
        raise ProbeFailure('smtp_error', '%s answered %s with "%s" instead of %d.' % (where, what, ' '.join(lines), expected))
    return '\n'.join(lines)


# --- certificates ---------------------------------------------------------------------------------
# The standard library gives a parsed certificate only after verification succeeded; a failed or
# disabled verification leaves only DER bytes. Reading the few fields we report from DER ourselves
# keeps one code path for both, and lets a report name the issuer of an untrusted (proxy?) certificate.

# RFC 4514 short names; other attributes are written as their dotted OID, as RFC 4514 says.
_NAME_ATTRIBUTES = {
    '2.5.4.3': 'CN', '2.5.4.7': 'L', '2.5.4.8': 'ST', '2.5.4.10': 'O', '2.5.4.11': 'OU', '2.5.4.6': 'C',
    '2.5.4.9': 'STREET', '0.9.2342.19200300.100.1.25': 'DC', '0.9.2342.19200300.100.1.1': 'UID',
}
_SUBJECT_ALT_NAME = '2.5.29.17'
_ISO_FORMAT = '%Y-%m-%dT%H:%M:%SZ'  # fixed width, so that such strings also compare in time order
_STRING_ENCODINGS = {0x0C: 'utf-8', 0x13: 'ascii', 0x16: 'ascii', 0x14: 'latin-1', 0x1A: 'ascii', 0x1E: 'utf-16-be',
                     0x1C: 'utf-32-be'}


def certificate_info(der, now=None):
    """subject, issuer (RFC 4514 strings), not_after (ISO 8601, UTC), days_left and subject_alt_names of a DER
    certificate; None when there is no certificate or it cannot be read."""
    if not der:
        return None
    try:
        return _certificate_fields(der, now or datetime.datetime.now(datetime.timezone.utc))
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def _certificate_fields(der, now):
    (tag, certificate), = _der_elements(der)
    _expect_tag(tag, 0x30)
    tbs_tag, tbs = _der_elements(certificate)[0]
    _expect_tag(tbs_tag, 0x30)
    fields = _der_elements(tbs)
    if fields[0][0] == 0xA0:  # explicit version; absent in v1 certificates
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, then optional tagged fields
    issuer, validity, subject = fields[2][1], fields[3][1], fields[4][1]
    not_after = _der_time(*_der_elements(validity)[1])
    extensions = [value for tag, value in fields[6:] if tag == 0xA3]
    return dict(
        subject=_der_name(subject),
        issuer=_der_name(issuer),
        not_after=not_after.strftime(_ISO_FORMAT),
        # Rounded toward zero, so that a certificate expired 3.5 days ago is "3 days" ago, as people count.
        days_left=int((not_after - now).total_seconds() / 86400),
        subject_alt_names=_der_alt_names(extensions[0]) if extensions else [],
    )


def _expect_tag(tag, expected):
    if tag != expected:
        raise ValueError('unexpected DER tag 0x%02x' % tag)


def _der_elements(data):
    """The (tag, content) pairs of consecutive DER elements."""
    elements = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise ValueError('truncated DER')
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            size = length & 0x7F
            if not 0 < size <= 4 or pos + size > len(data):
                raise ValueError('bad DER length')
            length = int.from_bytes(data[pos:pos + size], 'big')
            pos += size
        if pos + length > len(data):
            raise ValueError('truncated DER')
        elements.append((tag, data[pos:pos + length]))
        pos += length
    return elements


def _der_oid(data):
    if not data:
        raise ValueError('empty OID')
    arcs, value = [], 0
    for byte in data:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return '.'.join(str(arc) for arc in [first, arcs[0] - 40 * first] + arcs[1:])


def _der_attribute_value(tag, value):
    if tag in _STRING_ENCODINGS:
        return _rfc4514_escape(value.decode(_STRING_ENCODINGS[tag]))
    return '#' + value.hex()  # not a string type: hexadecimal, as RFC 4514 writes values of unknown syntax


def _rfc4514_escape(value):
    value = re.sub(r'([\\",+;<>])', r'\\\1', value).replace('\0', '\\00')
    if value.startswith(('#', ' ')):
        value = '\\' + value
    if value.endswith(' '):
        value = value[:-1] + '\\ '
    return value


def _der_name(data):
    rdns = []
    for set_tag, rdn in _der_elements(data):
        _expect_tag(set_tag, 0x31)
        attributes = []
        for seq_tag, attribute in _der_elements(rdn):
            _expect_tag(seq_tag, 0x30)
            (oid_tag, oid), (value_tag, value) = _der_elements(attribute)
            _expect_tag(oid_tag, 0x06)
            oid = _der_oid(oid)
            attributes.append('%s=%s' % (_NAME_ATTRIBUTES.get(oid, oid), _der_attribute_value(value_tag, value)))
        rdns.append('+'.join(attributes))
    # RFC 4514 writes the most specific RDN first, the reverse of the encoding.
    return ','.join(reversed(rdns))


def _der_time(tag, value):
    text = value.decode('ascii')
    if tag == 0x17:  # UTCTime, YYMMDDHHMMSSZ; RFC 5280: years 50-99 are 19xx
        parsed = datetime.datetime.strptime(text, '%y%m%d%H%M%SZ')
        if parsed.year >= 2050:
            parsed = parsed.replace(year=parsed.year - 100)
    elif tag == 0x18:  # GeneralizedTime, YYYYMMDDHHMMSSZ
        parsed = datetime.datetime.strptime(text, '%Y%m%d%H%M%SZ')
    else:
        raise ValueError('not a time')
    return parsed.replace(tzinfo=datetime.timezone.utc)


def _der_alt_names(extensions):
    (tag, items), = _der_elements(extensions)
    _expect_tag(tag, 0x30)
    for extension_tag, extension in _der_elements(items):
        _expect_tag(extension_tag, 0x30)
        parts = _der_elements(extension)
        if _der_oid(parts[0][1]) != _SUBJECT_ALT_NAME:
            continue
        (names_tag, names), = _der_elements(parts[-1][1])
        _expect_tag(names_tag, 0x30)
        result = []
        for name_tag, name in _der_elements(names):
            if name_tag == 0x82:  # dNSName
                result.append(name.decode('ascii'))
            elif name_tag == 0x87:  # iPAddress
                result.append(str(ipaddress.ip_address(name)))
        return result
    return []


# --- recipient MX profiles (recipient_tls_info) ----------------------------------------------------
# What a sending MTA such as SendGrid's would find at a recipient's MX: STARTTLS, each TLS version that
# can be negotiated, and whether the certificate would pass verification. Unlike Prober, it connects to
# an address the caller resolved (with its own DNS servers) and checks the certificate against the MX name.

MX_TLS_VERSIONS = ('1.0', '1.1', '1.2', '1.3')
_MX_PROTOCOLS = {'1.0': ssl.TLSVersion.TLSv1, '1.1': ssl.TLSVersion.TLSv1_1, '1.2': ssl.TLSVersion.TLSv1_2,
                 '1.3': ssl.TLSVersion.TLSv1_3}
# X509_V_FLAG_NO_CHECK_TIME: verify the chain without its dates; expiry is reported on its own.
_NO_CHECK_TIME = 0x200000
_UNREACHABLE_CODES = ('timeout', 'refused', 'unreachable')
_STALLED = 'stalled'  # MXProber._handshake: the handshake got no answer within one step (not a refusal)


def mx_context(tls_version=None, ca_path=None, verify=False):
    """A client context for recipient MX tests: limited to `tls_version` ("1.0".."1.3", min = max) when given,
    with every cipher allowed (TLS 1.0/1.1 need security level 0 on OpenSSL 3); with `verify`, checking the
    chain against `ca_path` (else the system store) but neither the dates nor the name. ValueError when the
    CA file cannot be loaded or this host cannot offer the version."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if verify:
        try:
            if ca_path:
                context.load_verify_locations(cafile=ca_path)
            else:
                context.load_default_certs()
        except (OSError, ssl.SSLError) as exc:
            raise ValueError('Cannot load the CA bundle ca_path=%s: %s' % (ca_path, _ssl_message(exc))) from exc
        context.verify_mode = ssl.CERT_REQUIRED
        context.verify_flags |= _NO_CHECK_TIME
    else:
        context.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            if tls_version:
                context.minimum_version = _MX_PROTOCOLS[tls_version]
                context.maximum_version = _MX_PROTOCOLS[tls_version]
        context.set_ciphers('DEFAULT:@SECLEVEL=0')
    except (ValueError, ssl.SSLError) as exc:
        raise ValueError('This host cannot offer TLS %s: %s' % (tls_version, _ssl_message(exc))) from exc
    return context


def name_matches(name, alt_names):
    """Whether a DNS `name` is covered by a certificate's subject alternative names (RFC 6125: a wildcard
    only as the whole left-most label, matching exactly one label)."""
    name = name.rstrip('.').lower()
    labels = name.split('.')
    for pattern in alt_names or ():
        pattern = pattern.rstrip('.').lower()
        if pattern == name:
            return True
        if pattern.startswith('*.') and len(labels) > 2 and pattern[2:] == '.'.join(labels[1:]):
            return True
    return False


class MXProber:
    """Profiles recipient MX servers: `profile(name, address)` never raises for network or TLS trouble.

    Builds its contexts once (thread-safe to share); ValueError when `ca_path` cannot be loaded.
    """

    def __init__(self, port=25, timeout=10.0, ca_path=None):
        self.port = port
        self.timeout = timeout
        self.contexts = {}
        for tls_version in MX_TLS_VERSIONS:
            try:
                self.contexts[tls_version] = mx_context(tls_version)
            except ValueError:
                self.contexts[tls_version] = None  # this host cannot test that version
        self.verifying = {tls_version: mx_context(tls_version, ca_path=ca_path, verify=True)
                          for tls_version, context in self.contexts.items() if context is not None}

    def profile(self, name, address, until=None):
        """{starttls_offered, tls_versions, tls_best, certificate, error_code, error} of the MX `name` at `address`.

        error_code is None, or one of the tls_check reason codes when the MX could not be tested to the end
        (timeout, refused, unreachable: this host cannot reach it; smtp_error, connection_closed, tls_error).
        All connections to the MX share one deadline: MX_LIMIT_STEPS times timeout from now, or `until` (a
        time.monotonic() value) when that comes first; past it, error_code is timeout. A TLS handshake that stalls
        leaves its version null (not tested) rather than failed; if no version succeeded, error_code is timeout.
        """
        deadline = Deadline(MX_LIMIT_STEPS * self.timeout, self.timeout, until)
        result = dict(host=name, address=address, port=self.port, greeting=None, starttls_offered=None,
                      tls_versions={tls_version: None for tls_version in MX_TLS_VERSIONS}, tls_best=None,
                      certificate=None, error_code=None, error=None)
        der = None
        stalled = []
        for tls_version in reversed(MX_TLS_VERSIONS):
            context = self.contexts[tls_version]
            if context is None:
                continue
            outcome = self._handshake(name, address, context, result, deadline)
            if outcome == 'stop':
                return result
            if outcome == _STALLED:
                stalled.append('TLS ' + tls_version)
                continue
            result['tls_versions'][tls_version] = outcome is not None
            if outcome is not None and der is None:
                der = outcome
                result['tls_best'] = tls_version
        if der is None:
            if stalled:
                # A handshake that never ends is not a refusal: a middlebox may be holding the connection.
                result.update(error_code='timeout', error='%s offers STARTTLS, but the TLS handshake (%s) did not '
                              'complete within %g seconds: a firewall or proxy in between may hold the connection.' % (
                                  self._where(name, address), ', '.join(stalled), self.timeout))
            elif not result['error_code']:
                result.update(error_code='tls_error', error='%s offers STARTTLS, but no TLS handshake succeeded with '
                              'any version from TLS 1.0 to 1.3.' % self._where(name, address))
            return result
        info = certificate_info(der) or {}
        trusted, why = self._trusted(name, address, result['tls_best'], deadline)
        result['certificate'] = dict(
            info, trusted=trusted, untrusted_reason=why,
            name_matches=name_matches(name, info.get('subject_alt_names')),
            expired=bool(info) and info['not_after'] <= _now_iso())
        return result

    def _where(self, name, address):
        return '%s (%s) port %d' % (name, address, self.port)

    def _handshake(self, name, address, context, result, deadline):
        """The server's DER certificate after STARTTLS and a handshake under `context`; None when that handshake
        failed; _STALLED when it did not complete within one step; 'stop' when the MX cannot be tested any further
        (the reason is in result)."""
        where = self._where(name, address)
        session = _Session(name, self.port, 'smtp_starttls', deadline, result, address=address, where=where)
        try:
            sock = session.connect()
        except _TIMEOUTS:
            if deadline.passed:
                result.update(error_code='timeout', error=_over_time(session, 'MX host', MX_LIMIT_STEPS))
            else:
                result.update(error_code='timeout', error='No answer from %s within %g seconds: port %d is probably '
                              'blocked between this host and the MX (many networks block outgoing port 25).' % (
                                  where, self.timeout, self.port))
            return 'stop'
        except ConnectionRefusedError:
            result.update(error_code='refused', error='The connection to %s was refused: port %d may be blocked from '
                          'this host, or nothing listens there.' % (where, self.port))
            return 'stop'
        except OSError as exc:
            result.update(error_code='unreachable', error='%s cannot be reached from this host (%s).' % (
                where, exc.strerror or exc))
            return 'stop'
        try:
            if not session.starttls_prelude(sock):
                return 'stop'
            with session.handshake(sock, context) as tls:
                return tls.getpeercert(binary_form=True) or b''
        except ssl.SSLError as exc:
            if isinstance(exc, ssl.SSLCertVerificationError):
                result['verify_error'] = exc.verify_message or _ssl_message(exc)
            return None
        except _TIMEOUTS:
            if deadline.passed:
                result.update(error_code='timeout', error=_over_time(session, 'MX host', MX_LIMIT_STEPS))
                return 'stop'
            if session.phase == 'handshake':
                return _STALLED
            result.update(error_code='timeout', error='%s accepted the connection but stopped answering (%s) within '
                          '%g seconds: a firewall or proxy in between may hold port %d.' % (
                              where, session.phase, self.timeout, self.port))
            return 'stop'
        except ProbeFailure as failure:
            result.update(error_code=failure.code, error=failure.reason)
            return 'stop'
        except (OSError, _PeerClosed) as exc:
            if session.phase == 'handshake':
                return None
            result.update(error_code='connection_closed', error='%s closed the connection during the SMTP %s (%s).' % (
                where, session.phase, exc.__class__.__name__))
            return 'stop'
        finally:
            sock.close()

    def _trusted(self, name, address, tls_version, deadline):
        """(trusted, why not) of the server's chain, by one more handshake that verifies it (dates excepted);
        trusted is None when that handshake could not be completed."""
        facts = {}
        outcome = self._handshake(name, address, self.verifying[tls_version], facts, deadline)
        if outcome == 'stop':
            return None, facts.get('error')
        if outcome == _STALLED:
            return None, 'the TLS handshake that verifies it did not complete within %g seconds' % self.timeout
        if outcome is not None:
            return True, None
        return False, facts.get('verify_error') or 'the TLS handshake failed when the certificate was verified'


def mx_unreachable(profile):
    """Whether this host could not talk to the MX at all (so that a verdict about it is unknown)."""
    return profile['error_code'] in _UNREACHABLE_CODES
