# -*- coding: utf-8 -*-
"""A tiny HTTP-ish server on 127.0.0.1 that answers with exactly the bytes a test wants.

The SendGrid simulator speaks correct HTTP; the faults that matter most in the field do not: a proxy's HTML
error page, a connection reset half-way through an answer, a server that accepts and never answers, a
truncated body. RawServer gives each accepted connection to a *behaviour* (a function) that may do any of
that on the raw socket, and records what every client sent, so tests can count requests and check headers.

Bounded by design, so a test that forgets to stop it (or a client that hangs) cannot hang the suite:
it listens on loopback only, accepts at most ``max_connections``, stops by itself after ``lifetime``
seconds, and every socket operation has a timeout.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time

LOOPBACK = '127.0.0.1'
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024


class Request:
    """One request as the server received it: method, path, lower-cased headers, body bytes."""

    def __init__(self, method, path, headers, body):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    def __repr__(self):
        return 'Request(%s %s)' % (self.method, self.path)


class RawServer:
    """Threaded TCP (optionally TLS) server on 127.0.0.1; ``behaviour(server, conn, request)`` answers each connection.

    ``request`` is the parsed request, or None when the client sent nothing parseable (or the TLS handshake
    failed: then the behaviour is not called at all and ``handshake_failures`` counts it).
    """

    def __init__(self, behaviour, tls_context=None, lifetime=30.0, max_connections=64, io_timeout=5.0):
        self.behaviour = behaviour
        self.tls_context = tls_context
        self.lifetime = lifetime
        self.max_connections = max_connections
        self.io_timeout = io_timeout
        self.requests = []
        self.connections = 0
        self.handshake_failures = 0
        self.tls_versions = []  # the protocol of each completed TLS handshake, as the server saw it
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads = []
        self._listener = socket.create_server((LOOPBACK, 0))
        # accept() polls so the loop notices stop() and the lifetime without relying on close() waking it.
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name='raw-server-%d' % self.port, daemon=True)

    @property
    def url(self):
        return '%s://%s:%d' % ('https' if self.tls_context else 'http', LOOPBACK, self.port)

    def start(self):
        self._acceptor.start()
        return self

    def stop(self):
        self.stopping.set()
        self._acceptor.join(self.io_timeout)
        for thread in list(self._threads):
            thread.join(self.io_timeout)
        self._listener.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def _accept(self):
        deadline = time.monotonic() + self.lifetime
        while not self.stopping.is_set() and time.monotonic() < deadline and self.connections < self.max_connections:
            try:
                conn, _address = self._listener.accept()
            except socket.timeout:
                continue
            with self._lock:
                self.connections += 1
            conn.settimeout(self.io_timeout)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()
        # Lifetime over or stopped: refuse further connections at once instead of leaving them in the backlog.
        self._listener.close()

    def _serve(self, conn):
        try:
            if self.tls_context is not None:
                try:
                    conn = self.tls_context.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    with self._lock:
                        self.handshake_failures += 1
                    return
                with self._lock:
                    self.tls_versions.append(conn.version())
            request = read_request(conn)
            if request is not None:
                with self._lock:
                    self.requests.append(request)
            self.behaviour(self, conn, request)
        except OSError:
            pass  # the client under test hung up or timed out first: that is what several tests provoke
        finally:
            try:
                conn.close()
            except OSError:
                pass


def read_request(conn):
    """Read one HTTP/1.1 request (head, then a Content-Length body); None if the client sent nothing usable."""
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_HEAD:
            return None
    head, body = data.split(b'\r\n\r\n', 1)
    lines = head.decode('iso-8859-1').split('\r\n')
    parts = lines[0].split(' ')
    if len(parts) != 3:
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(':')
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = min(int(headers.get('content-length') or 0), MAX_BODY)
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return Request(parts[0], parts[1], headers, body)


def http_response(status, body=b'', content_type='application/json', headers=None, reason='', content_length=None):
    """The bytes of one HTTP/1.1 answer. ``content_length`` may lie (a truncated body announces more than it sends)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    lines = ['HTTP/1.1 %d %s' % (status, reason or _REASONS.get(status, 'Unknown')),
             'Content-Length: %d' % (len(body) if content_length is None else content_length),
             # Every answer closes: the next request then opens a new connection, so counts stay exact.
             'Connection: close']
    if content_type:
        lines.append('Content-Type: %s' % content_type)
    lines.extend('%s: %s' % item for item in (headers or {}).items())
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('iso-8859-1') + body


_REASONS = {200: 'OK', 301: 'Moved Permanently', 302: 'Found', 307: 'Temporary Redirect', 308: 'Permanent Redirect',
            401: 'Unauthorized', 403: 'Forbidden', 429: 'Too Many Requests', 500: 'Internal Server Error',
            502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout'}


# --- behaviours -------------------------------------------------------------------------------------------------------

def send(data):
    """Answer with these bytes, then close normally."""
    def behaviour(server, conn, request):
        conn.sendall(data)
    return behaviour


def respond(status, body=b'', **kwargs):
    """Answer with a well-formed HTTP response (see http_response)."""
    return send(http_response(status, body, **kwargs))


def reset_after(data):
    """Send these bytes (for example the head and half a body), then reset the connection (RST, not FIN)."""
    def behaviour(server, conn, request):
        conn.sendall(data)
        # SO_LINGER with a zero timeout makes close() send RST, as a crashing proxy or a middlebox does.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    return behaviour


def silent(server, conn, request):
    """Read the request and never answer (a black-holing middlebox) until the server stops."""
    server.stopping.wait(server.lifetime)


def sequence(*behaviours):
    """The n-th request gets the n-th behaviour; the last one repeats (e.g. two 502s, then a good answer)."""
    def behaviour(server, conn, request):
        with server._lock:  # pylint: disable=protected-access
            index = min(len(server.requests), len(behaviours)) - 1
        behaviours[max(index, 0)](server, conn, request)
    return behaviour
