# -*- coding: utf-8 -*-
"""Real servers on 127.0.0.1 for the TLS tests: HTTPS, SMTP (aiosmtpd), and ones that misbehave on purpose.

Every server binds a free loopback port, runs in daemon threads, and is bounded: connections time out
after CONNECTION_TIMEOUT seconds and stop() waits for every thread. Certificates come from trustme,
generated per test session, so nothing secret or long-lived is stored.
"""

from __future__ import annotations

import datetime
import http.server
import socket
import ssl
import struct
import threading
import time
import warnings

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

LOOPBACK = '127.0.0.1'
CONNECTION_TIMEOUT = 10.0


class Certificates:
    """A test CA (trusted only through its file, never by the system store) and the leaves the tests present."""

    def __init__(self, directory):
        self.ca = trustme.CA(organization_name='tls-check test CA')
        self.ca_file = str(directory / 'test-ca.pem')
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.good = self.ca.issue_cert(LOOPBACK, 'localhost')
        self.other_name = self.ca.issue_cert('other.example', 'www.other.example')
        self.expired = self.issue_expired(datetime.timedelta(days=3))
        self.expired_intermediate = self._leaf_under_expired_intermediate()

    def issue_expired(self, ago):
        now = datetime.datetime.now(datetime.timezone.utc)
        return self.ca.issue_cert(LOOPBACK, not_before=now - datetime.timedelta(days=30), not_after=now - ago)

    def _leaf_under_expired_intermediate(self):
        """A valid leaf whose intermediate CA has expired (trustme cannot date a CA, so re-sign it here)."""
        child = self.ca.create_child_ca()
        valid = x509.load_pem_x509_certificate(child.cert_pem.bytes())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(valid.subject).issuer_name(valid.issuer)
                   .public_key(valid.public_key()).serial_number(valid.serial_number)
                   .not_valid_before(now - datetime.timedelta(days=60)).not_valid_after(now - datetime.timedelta(days=1)))
        for extension in valid.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        expired = builder.sign(serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None), hashes.SHA256())
        leaf = child.issue_cert(LOOPBACK)
        return trustme.LeafCert(leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes(),
                                [expired.public_bytes(serialization.Encoding.PEM)])


def server_context(leaf, minimum=None, maximum=None, ciphers=None):
    """A server-side context presenting `leaf`, limited to the TLS versions between `minimum` and `maximum`
    and, up to TLS 1.2, to the OpenSSL cipher list `ciphers`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)  # TLS 1.0/1.1 is deprecated: some tests need it
        if minimum:
            context.minimum_version = minimum
        if maximum:
            context.maximum_version = maximum
    if ciphers or (minimum and minimum < ssl.TLSVersion.TLSv1_2):
        # OpenSSL 3 offers TLS 1.0/1.1 and SHA-1 cipher suites only at security level 0.
        context.set_ciphers((ciphers or 'DEFAULT') + ':@SECLEVEL=0')
    return context


class LoopbackServer:
    """A TCP server on 127.0.0.1 and a free port (or the given loopback `address` and `port`); each connection is
    handled by handle(conn) in its own thread."""

    def __init__(self, address=LOOPBACK, port=0):
        self._listener = socket.create_server((address, port))
        # accept() polls, so that stop() ends the loop without relying on close() waking a blocked accept().
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.stopping = threading.Event()
        self._threads = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def start(self):
        self._acceptor.start()
        return self

    def stop(self):
        self.stopping.set()
        self._acceptor.join(CONNECTION_TIMEOUT)
        for thread in self._threads:
            thread.join(CONNECTION_TIMEOUT)
        self._listener.close()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _address = self._listener.accept()
            except socket.timeout:
                continue
            conn.settimeout(CONNECTION_TIMEOUT)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn):
        with conn:
            try:
                self.handle(conn)
            except (OSError, ValueError):
                pass  # the client under test aborts handshakes it rejects; that is expected here

    def handle(self, conn):
        raise NotImplementedError


class HTTPSServer(LoopbackServer):
    """Answers every HEAD/GET with `status` over TLS, through the standard library's HTTP server code.

    `requests` records the request line and Host header of each request, to show what a client sent;
    `ciphers` the cipher suite of each completed handshake, as the server saw it.
    """

    def __init__(self, context, status=200):
        super().__init__()
        self.context = context
        self.status = status
        self.requests = []
        self.ciphers = []

    def handle(self, conn):
        with self.context.wrap_socket(conn, server_side=True) as tls:
            self.ciphers.append(tls.cipher()[0])
            _HTTPHandler(tls, (LOOPBACK, 0), self)


class _HTTPHandler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802 - the name http.server dispatches to
        self.server.requests.append(dict(requestline=self.requestline, host=self.headers.get('Host')))
        self.send_response(self.server.status)
        self.send_header('Content-Length', '0')
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        """Quiet: pytest output is for failures."""


class SilentServer(LoopbackServer):
    """Accepts connections and never says a word (a black-holing middlebox)."""

    def handle(self, conn):
        self.stopping.wait(CONNECTION_TIMEOUT)


class BannerServer(LoopbackServer):
    """Sends `banner` on connect (an SSH server on the wrong port, an SMTP server refusing service), then waits,
    or with `hang_up` closes the connection at once."""

    def __init__(self, banner, hang_up=False):
        super().__init__()
        self.banner = banner
        self.hang_up = hang_up

    def handle(self, conn):
        conn.sendall(self.banner)
        if not self.hang_up:
            self.stopping.wait(CONNECTION_TIMEOUT)


class DripServer(LoopbackServer):
    """A tarpit that answers every read just in time: after `prefix`, one `unit` every `interval` seconds, for
    `lifetime` seconds, then it hangs up. A byte (b'x' after b'220-') drips an SMTP greeting line that never ends;
    a line (b'220-wait\\r\\n') an SMTP greeting of endless lines. With `context`, it drips after a TLS handshake.
    `connections` counts the connections accepted."""

    def __init__(self, prefix=b'220-', unit=b'x', interval=0.05, lifetime=15.0, context=None, **where):
        super().__init__(**where)
        self.prefix = prefix
        self.unit = unit
        self.interval = interval
        self.lifetime = lifetime
        self.context = context
        self.connections = 0
        self._count = threading.Lock()

    def handle(self, conn):
        with self._count:
            self.connections += 1
        if self.context:
            conn = self.context.wrap_socket(conn, server_side=True)
        conn.sendall(self.prefix)
        ends = time.monotonic() + self.lifetime
        while time.monotonic() < ends and not self.stopping.wait(self.interval):
            conn.sendall(self.unit)


class StartTLSStallServer(LoopbackServer):
    """Speaks SMTP up to STARTTLS, agrees to start TLS, then never answers the ClientHello, like a middlebox
    that holds TLS connections."""

    def handle(self, conn):
        conn.sendall(b'220 stall.test ESMTP\r\n')
        with conn.makefile('rb') as reader:
            for line in reader:
                command = line.strip().upper()
                if command.startswith((b'EHLO', b'HELO')):
                    conn.sendall(b'250-stall.test\r\n250 STARTTLS\r\n')
                elif command == b'STARTTLS':
                    conn.sendall(b'220 2.0.0 Ready to start TLS\r\n')
                    self.stopping.wait(CONNECTION_TIMEOUT)
                    return
                else:
                    conn.sendall(b'221 2.0.0 Bye\r\n')
                    return


class ResettingServer(LoopbackServer):
    """Reads the client's first bytes (the ClientHello), then resets the connection, as some proxies do."""

    def handle(self, conn):
        conn.recv(4096)
        # Linger 0: close() sends RST instead of FIN.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))


class SMTPServer:
    """aiosmtpd on a free loopback port, a real SMTP implementation independent of the code under test.

    `starttls_context` makes it offer STARTTLS; `implicit_tls_context` makes it speak TLS at once (SMTPS).
    """

    def __init__(self, starttls_context=None, implicit_tls_context=None):
        kwargs = dict(tls_context=starttls_context) if starttls_context else {}
        self._controller = _FreePortController(Sink(), hostname=LOOPBACK, port=0, ssl_context=implicit_tls_context,
                                               server_hostname='smtp.test', ident='tls-check test ESMTP', **kwargs)

    @property
    def port(self):
        return self._controller.port

    def start(self):
        self._controller.start()
        return self

    def stop(self):
        self._controller.stop()


class _FreePortController(Controller):
    def _trigger_server(self):
        # Bound to port 0: learn the port the OS chose before aiosmtpd connects to itself to finish starting.
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


_HELD_PORTS = []  # sockets bound for free_port, never listening, kept for the test process's life


def free_port():
    """A loopback port where nothing listens: bound by this process and never listening, so a connection is refused,
    and no other process (make test runs several stages at once) can take the port meanwhile."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind((LOOPBACK, 0))
    _HELD_PORTS.append(probe)
    return probe.getsockname()[1]
