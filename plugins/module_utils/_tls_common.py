# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""What the endpoint test (tls_check) and the recipient MX test (recipient_tls_info) share, with the standard library
only: the overall :class:`Deadline` of a probe and the socket I/O bounded by it, the DNS look-up and TCP connection,
the SMTP dialogue up to STARTTLS and the TLS handshake (:class:`Session`), and the errors a probe explains.

Private to this collection: its names may change at any time.
"""

from __future__ import annotations

import io
import re
import socket
import ssl
import threading
import time

TIMEOUTS = (socket.timeout, TimeoutError)  # distinct classes before Python 3.10
CLOSED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError)
# TLS versions as options and results name them, oldest first, and as ssl sets them on a context.
TLS_PROTOCOLS = {'1.0': ssl.TLSVersion.TLSv1, '1.1': ssl.TLSVersion.TLSv1_1, '1.2': ssl.TLSVersion.TLSv1_2,
                 '1.3': ssl.TLSVersion.TLSv1_3}

# Bounds on what an SMTP server may send us, so a misbehaving one cannot exhaust memory.
_SMTP_MAX_LINE = 2048
_SMTP_MAX_LINES = 100
_SMTP_REPLY = re.compile(br'^(\d{3})([ -]?)(.*?)\r?\n?$', re.DOTALL)


class Deadline:
    """The end of one probe's time on the monotonic clock. Every network step (connect, each read, each write, the
    TLS handshake) waits at most `timeout` seconds and never past the end: :meth:`step` is checked before each one.

    `limit` is the overall seconds; `until` (a time.monotonic() value) may end it sooner, for a caller with a deadline
    of its own.
    """

    def __init__(self, limit, timeout, until=None):
        start = time.monotonic()
        self.timeout = timeout
        if until is None or start + limit <= until:
            # limit as given: (start + limit) - start need not equal it in floating point
            self.end, self.limit = start + limit, limit
        else:
            self.end, self.limit = until, until - start

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


def reader(sock, deadline):
    """A buffered reader of `sock` (readline with a limit), every recv bounded by the deadline."""
    return io.BufferedReader(_DeadlineIO(sock, deadline))


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


class PeerClosed(Exception):
    """The peer closed the connection where an answer was due."""


class Session:
    """One connection: TCP, the SMTP prelude up to STARTTLS, the TLS handshake.

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

    def starttls_prelude(self, sock):
        """Greeting, EHLO, and STARTTLS when offered: True once the server agreed to start TLS, False when it offers
        no STARTTLS (then nothing more is sent; ehlo_reply holds the EHLO answer)."""
        with reader(sock, self.deadline) as lines_in:
            self.phase = 'greeting'
            self.facts['greeting'] = smtp_expect(lines_in, 220, 'the connection', self.where)
            self.phase = 'ehlo'
            self.deadline.arm(sock).sendall(b'EHLO ' + _ehlo_name() + b'\r\n')
            self.ehlo_reply = code, lines = smtp_reply(lines_in)
            keywords = [line[4:].split(' ')[0].upper() for line in lines[1:]] if code == 250 else []
            self.facts['starttls_offered'] = 'STARTTLS' in keywords
            if not self.facts['starttls_offered']:
                return False
            self.phase = 'starttls'
            self.deadline.arm(sock).sendall(b'STARTTLS\r\n')
            smtp_expect(lines_in, 220, 'STARTTLS', self.where)
        return True

    def handshake(self, sock, context):
        """The TLS socket after a handshake under `context`, which may take one step of the deadline in all."""
        self.phase = 'handshake'
        return context.wrap_socket(self.deadline.arm(sock), server_hostname=self.host)


def over_time(session, scope, steps):
    """Why a test was cut short by its overall deadline (Deadline), per `scope` (what the limit applies to)."""
    if session.phase == 'handshake':
        hint = 'it never completes the TLS handshake, or a firewall or proxy in between holds the connection'
    else:
        hint = 'it answers too slowly, or drips its answers a byte or a line at a time like a tarpit'
    return '%s did not complete the test within %g seconds (the limit per %s, %d times timeout), in the %s: %s.' % (
        session.where, session.deadline.limit, scope, steps, session.phase_label, hint)


def ssl_message(exc):
    """An exception as text, without OpenSSL's source location."""
    return re.sub(r'\s*\(_ssl\.c:\d+\)', '', str(exc))


def _ehlo_name():
    return socket.gethostname().encode('ascii', 'replace') or b'localhost'


def smtp_reply(lines_in):
    """(code, lines) of one SMTP reply, bounded in size."""
    lines = []
    while len(lines) < _SMTP_MAX_LINES:
        raw = lines_in.readline(_SMTP_MAX_LINE)
        if not raw:
            raise PeerClosed()
        match = _SMTP_REPLY.match(raw)
        if not match:
            raise ProbeFailure('smtp_error', 'The server answered "%s", which is not SMTP: check the port and the mode.' % (
                raw[:80].decode('ascii', 'replace').strip()))
        lines.append(raw.decode('utf-8', 'replace').rstrip('\r\n'))
        if match.group(2) != b'-':
            return int(match.group(1)), lines
    raise ProbeFailure('smtp_error', 'The server sent an SMTP reply of more than %d lines.' % _SMTP_MAX_LINES)


def smtp_expect(lines_in, expected, what, where):
    code, lines = smtp_reply(lines_in)
    if code != expected:
        raise ProbeFailure('smtp_error', '%s answered %s with "%s" instead of %d.' % (where, what, ' '.join(lines), expected))
    return '\n'.join(lines)
