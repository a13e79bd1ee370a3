# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""How the client's requests travel: TLS 1.2+ contexts built once per process, a deadline for each request attempt
that a watchdog enforces on the sockets themselves, and a bounded read of an answer's body.

Apart from the client (what to send, retries, error messages), so that each can be read on its own; nothing here
knows SendGrid. Controller code (the fleet action) calls prime_trust before Ansible forks its workers.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
import traceback

try:
    import requests
    from requests.adapters import HTTPAdapter
    from requests.auth import AuthBase
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.util.ssl_ import create_urllib3_context
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised by the missing_required_lib test
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()
    HTTPAdapter = AuthBase = HTTPConnection = HTTPSConnection = HTTPConnectionPool = HTTPSConnectionPool = object

_READ_CHUNK = 64 * 1024


_CONTEXTS = {}  # (validate_certs, CA file, CA directory) -> a TLS 1.2+ context, for the life of the process
_CONTEXTS_LOCK = threading.Lock()


def tls_context(validate_certs=True, ca_file=None, ca_dir=None):
    """A TLS 1.2+ SSLContext, built (its CA certificates loaded) once per process and shared by the process's clients.

    Building one costs about 0.8 ms of CPU in a new worker process and loading a CA bundle about 16 ms (certifi's), and
    urllib3 loads the bundle again for every new connection: one per subuser host in the role's per-host mode, where
    every task runs in a new worker process. Contexts built in the ``ansible-playbook`` process itself (see prime_trust)
    are inherited by the workers it forks.
    """
    key = (bool(validate_certs), ca_file, ca_dir)
    with _CONTEXTS_LOCK:
        if key not in _CONTEXTS:
            # It must agree with validate_certs: urllib3 cannot set CERT_NONE on a context that checks host names
            # (ValueError), and without it a context of its own would still verify.
            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED if validate_certs else ssl.CERT_NONE)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if ca_file or ca_dir:
                context.load_verify_locations(cafile=ca_file, capath=ca_dir)
            _CONTEXTS[key] = context
        return _CONTEXTS[key]


def default_ca_file():
    """The CA bundle requests verifies with when nothing else is said: REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, else certifi's."""
    return os.environ.get('REQUESTS_CA_BUNDLE') or os.environ.get('CURL_CA_BUNDLE') or requests.utils.DEFAULT_CA_BUNDLE_PATH


def prime_trust():
    """Build the contexts and load the default CA bundle now (in the process that forks the workers).

    A bundle that cannot be loaded is left for the request that needs it to name.
    """
    if HAS_REQUESTS:
        try:
            tls_context(True)
            tls_context(False)
            ca = default_ca_file()
            if os.path.isfile(ca):
                tls_context(True, ca_file=ca)
            elif os.path.isdir(ca):
                tls_context(True, ca_dir=ca)
        except Exception:  # whatever the bundle makes ssl raise: the request that needs it loads it again and names it
            pass


class _DeadlineExpired(Exception):
    """Raised inside the HTTP layer when a request's deadline is over before it could use its connection."""


class _Deadline:
    """When one request attempt must be over, and the connections and sockets it uses (the watchdog cuts them then)."""

    __slots__ = ('at', 'seconds', 'connections', 'expired')

    def __init__(self, seconds):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.connections = []
        self.expired = False


class _Watchdog:
    """One daemon thread per process that shuts down the socket of every request attempt whose deadline is over.

    requests' timeout applies to each socket operation: a server that sends a byte every second, in the headers or the
    body, resets it forever. Shutting the socket down from outside wakes the blocked read at once, wherever it is
    (connection set-up, TLS handshake, headers, body), so an attempt ends at its deadline.
    """

    def __init__(self):
        self._condition = threading.Condition()
        self._deadlines = set()
        self._thread = None

    def start(self, seconds):
        deadline = _Deadline(seconds)
        with self._condition:
            self._deadlines.add(deadline)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name='sendgrid-deadlines', daemon=True)
                self._thread.start()
            self._condition.notify()
        return deadline

    def stop(self, deadline):
        with self._condition:
            self._deadlines.discard(deadline)

    def watch(self, deadline, connection):
        with self._condition:
            if deadline.expired:
                raise _DeadlineExpired()
            # The socket too: http.client hands it to the response and forgets it when the answer closes the connection.
            for item in (connection, getattr(connection, 'sock', None)):
                if item is not None and item not in deadline.connections:
                    deadline.connections.append(item)

    def _run(self):
        with self._condition:
            while True:
                now = time.monotonic()
                for deadline in [deadline for deadline in self._deadlines if deadline.at <= now]:
                    self._deadlines.discard(deadline)
                    deadline.expired = True
                    for item in deadline.connections:
                        _cut(item if isinstance(item, socket.socket) else getattr(item, 'sock', None))
                self._condition.wait(min((d.at for d in self._deadlines), default=now + 3600) - now)


def _cut(sock):
    # socket.socket's own shutdown, also for an SSLSocket: its override would drop the TLS state under the reading
    # thread's feet; the raw shutdown just makes that read see the end of the stream.
    if isinstance(sock, socket.socket):
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # closed meanwhile: the request is over anyway


_WATCHDOG = _Watchdog()
_CURRENT = threading.local()  # .deadline: the deadline of the request attempt this thread is making


def _new_watchdog_after_fork():
    # A forked worker (Ansible forks for every host) inherits the object but not the thread, maybe a held lock. Started
    # afresh in place, not replaced: the client holds this very object (it imports it by name).
    _WATCHDOG.__init__()  # pylint: disable=unnecessary-dunder-call


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_new_watchdog_after_fork)


def _watch(connection):
    deadline = getattr(_CURRENT, 'deadline', None)
    if deadline is not None:
        _WATCHDOG.watch(deadline, connection)


class _WatchedConnection:
    """Registers the connection with the current request attempt's deadline whenever that attempt uses it
    (a new connection, or one reused from the pool)."""

    def connect(self):
        _watch(self)
        return super().connect()

    def request(self, *args, **kwargs):
        _watch(self)
        return super().request(*args, **kwargs)

    def getresponse(self, *args, **kwargs):
        _watch(self)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def _watch_pools(manager):
    # Only urllib3's own pools are replaced (a SOCKS proxy manager has pools of its own: those keep the per-read bound).
    classes = getattr(manager, 'pool_classes_by_scheme', None)
    if isinstance(classes, dict) and classes.get('http') is HTTPConnectionPool and classes.get('https') is HTTPSConnectionPool:
        manager.pool_classes_by_scheme = dict(classes, http=_WatchedHTTPPool, https=_WatchedHTTPSPool)
    return manager


class _DeadlineAdapter(HTTPAdapter):
    """An adapter whose connections the watchdog can cut at a request attempt's deadline."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, *args, **kwargs):
        return _watch_pools(super().proxy_manager_for(*args, **kwargs))


class _TLS12Adapter(_DeadlineAdapter):
    """HTTPS adapter that never negotiates below TLS 1.2 (SendGrid accepts only TLS 1.2+), CA bundles loaded once."""

    def __init__(self, validate_certs=True, **kwargs):
        self._ssl_context = tls_context(validate_certs)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs['ssl_context'] = self._ssl_context
        return super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, *args, **kwargs):
        kwargs['ssl_context'] = self._ssl_context
        return super().proxy_manager_for(*args, **kwargs)

    def cert_verify(self, conn, url, verify, cert):
        """requests names the CA bundle to verify with; hand the pool a context that has it loaded already instead."""
        try:
            super().cert_verify(conn, url, verify, cert)  # OSError when the bundle it names does not exist
        except OSError as exc:
            raise requests.exceptions.SSLError(str(exc)) from None
        ca_file, ca_dir = getattr(conn, 'ca_certs', None), getattr(conn, 'ca_cert_dir', None)
        if ca_file or ca_dir:
            try:
                conn.conn_kw['ssl_context'] = tls_context(True, ca_file, ca_dir)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise requests.exceptions.SSLError('the CA bundle %s cannot be loaded: %s' % (ca_file or ca_dir, exc)) from None
            # Or urllib3 would load them into that context again for each new connection.
            conn.ca_certs = conn.ca_cert_dir = None


class _BearerAuth(AuthBase):
    """Sets the key on each request. Being the session's auth, it also keeps requests from reading a .netrc
    (it does so whenever no auth is set), which would replace the key with an unrelated password."""

    def __init__(self, api_key):
        self._header = 'Bearer %s' % api_key

    def __call__(self, request):
        request.headers['Authorization'] = self._header
        return request


def _read_body(response, limit, deadline, refuse_declared=True):
    """The body's bytes, read in chunks up to ``limit`` bytes: (bytes, True) when there was more (then it is cut).

    With ``refuse_declared``, a Content-Length over the limit ends it before reading anything. The watchdog ends a
    read that outlives the deadline; the check between chunks is a second line for connections it does not know
    (a SOCKS proxy's)."""
    length = response.headers.get('Content-Length', '')
    if refuse_declared and length.isdigit() and int(length) > limit:
        return b'', True
    chunks = []
    size = 0
    for chunk in response.iter_content(_READ_CHUNK):
        if time.monotonic() > deadline.at:
            raise _DeadlineExpired()
        if size + len(chunk) > limit:
            chunks.append(chunk[:limit - size])
            return b''.join(chunks), True
        size += len(chunk)
        chunks.append(chunk)
    return b''.join(chunks), False
