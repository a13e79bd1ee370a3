# -*- coding: utf-8 -*-
"""A small authoritative DNS server on 127.0.0.1 (dnslib, UDP, a free port) and a world of recipient MX servers.

`DNSServer` answers from a dict of records, NXDOMAIN for names it does not know and NOERROR with no answer for
a known name without records of the asked type, as a real authoritative server does.
`MXWorld` starts SMTP servers (aiosmtpd, from tests.tls_servers) each on its own loopback address (127.0.0.N),
all on one port, so that a single `smtp_port` reaches every MX, as port 25 does on the Internet.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

from dnslib import AAAA, MX, QTYPE, RCODE, RR, A, DNSLabel
from dnslib.server import BaseResolver, DNSServer as _DNSLibServer

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink

from tests.tls_servers import CONNECTION_TIMEOUT, Certificates, DripServer, StartTLSStallServer, server_context

LOOPBACK = '127.0.0.1'
# aiosmtpd logs every handshake the prober aborts on purpose (one per TLS version it tries).
logging.getLogger('mail.log').setLevel(logging.CRITICAL)


class _Resolver(BaseResolver):
    def __init__(self, records, delays):
        super().__init__()
        self.records = records
        self.delays = delays
        self.queries = []

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip('.').lower()
        qtype = QTYPE[request.q.qtype]
        self.queries.append((name, qtype))
        # dnslib answers each query in a thread of its own, so a slow name delays no other.
        time.sleep(self.delays.get(name, 0))
        if name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for rtype, value in self.records[name]:
            if rtype != qtype:
                continue
            if rtype == 'MX':
                preference, exchange = value
                rdata = MX(DNSLabel(exchange + '.' if exchange != '.' else '.'), preference)
            else:
                rdata = A(value) if rtype == 'A' else AAAA(value)
            reply.add_answer(RR(request.q.qname, getattr(QTYPE, rtype), rdata=rdata, ttl=60))
        return reply


class DNSServer:
    """records: {name: [('MX', (preference, exchange)), ('A', '127.0.0.2'), ...]}; `nameserver` is 'IP:port'.

    delays: {name: seconds} to wait before answering any query for that name, like a slow authoritative server.
    Answers go over UDP at any size (no truncation), so that 2,000 MX records fit in one answer.
    """

    def __init__(self, records, delays=None):
        self.resolver = _Resolver({name.lower(): values for name, values in records.items()},
                                  {name.lower(): delay for name, delay in (delays or {}).items()})
        self._server = _DNSLibServer(self.resolver, address=LOOPBACK, port=0, logger=_QuietLogger())

    @property
    def nameserver(self):
        return '%s:%d' % self._server.server.server_address

    def start(self):
        self._server.start_thread()
        return self

    def stop(self):
        self._server.stop()
        self._server.server.server_close()


class _QuietLogger:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def free_port_on(addresses):
    """A port free on every one of `addresses` (the kernel's choice on the first, checked on the others)."""
    for _attempt in range(20):
        with socket.create_server((addresses[0], 0)) as first:
            port = first.getsockname()[1]
            try:
                for address in addresses[1:]:
                    socket.create_server((address, port)).close()
            except OSError:
                continue
            return port
    raise RuntimeError('no common free port on %s' % addresses)


class SilentListener:
    """Accepts connections on (address, port) and never says a word, like a tarpit or a black-holing middlebox."""

    def __init__(self, address, port):
        self._listener = socket.create_server((address, port))
        self._listener.settimeout(0.1)
        self._stopping = threading.Event()
        self._held = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self):
        self._thread.start()
        return self

    @property
    def connections(self):
        """How many connections it accepted."""
        return len(self._held)

    def _accept(self):
        while not self._stopping.is_set():
            try:
                conn = self._listener.accept()[0]
            except socket.timeout:
                continue
            self._held.append(conn)

    def stop(self):
        self._stopping.set()
        self._thread.join(CONNECTION_TIMEOUT)
        for conn in self._held:
            conn.close()
        self._listener.close()


class SMTPOn:
    """aiosmtpd on a given loopback address and port, offering STARTTLS when given a context."""

    def __init__(self, address, port, starttls_context=None):
        kwargs = dict(tls_context=starttls_context) if starttls_context else {}
        self._controller = Controller(Sink(), hostname=address, port=port, server_hostname='mx.test',
                                      ident='impact test ESMTP', **kwargs)

    def start(self):
        self._controller.start()
        return self

    def stop(self):
        self._controller.stop()


class MXWorld:
    """Recipient domains, each with one MX host `mx.<domain>` on its own 127.0.0.N, all on `port`.

    kinds: 'valid' (STARTTLS, certificate of the test CA for the MX name), 'untrusted' (STARTTLS, certificate of a CA
    nobody trusts), 'wrong_name' (test CA, but for another name), 'old_tls' (STARTTLS limited to TLS 1.0/1.1, valid
    certificate), 'plain' (no STARTTLS), 'silent' (accepts, never answers), 'closed' (nothing listens: refused),
    'drip' (an SMTP greeting dripped a byte at a time), 'tarpit' (an SMTP greeting of endless lines, one at a time),
    'stall' (agrees to STARTTLS, then never answers the TLS handshake).
    """

    def __init__(self, certificates, domains):
        self.certificates = certificates
        self.domains = dict(domains)
        self.addresses = {domain: '127.0.0.%d' % (index + 2) for index, domain in enumerate(self.domains)}
        self.port = free_port_on(list(self.addresses.values()))
        self.rogue_ca = trustme.CA(organization_name='nobody trusts this CA')
        self.servers = []
        self.by_domain = {}  # the MX server of each domain that has one
        records = {}
        for domain, kind in self.domains.items():
            mx = 'mx.' + domain
            records[domain] = [('MX', (10, mx))]
            records[mx] = [('A', self.addresses[domain])]
            server = self._server(kind, mx, self.addresses[domain])
            if server:
                self.servers.append(server.start())
                self.by_domain[domain] = server
        self.records = records

    def _server(self, kind, name, address):
        if kind == 'closed':
            return None
        if kind == 'silent':
            return SilentListener(address, self.port)
        if kind == 'plain':
            return SMTPOn(address, self.port)
        if kind == 'drip':
            return DripServer(address=address, port=self.port)
        if kind == 'tarpit':
            return DripServer(prefix=b'', unit=b'220-please wait\r\n', interval=0.2, address=address, port=self.port)
        if kind == 'stall':
            return StartTLSStallServer(address=address, port=self.port)
        issuer = self.rogue_ca if kind == 'untrusted' else self.certificates.ca
        leaf = issuer.issue_cert('other.example' if kind == 'wrong_name' else name)
        if kind == 'old_tls':
            context = server_context(leaf, minimum=ssl.TLSVersion.TLSv1, maximum=ssl.TLSVersion.TLSv1_1)
        else:
            context = server_context(leaf)
        return SMTPOn(address, self.port, starttls_context=context)

    def stop(self):
        for server in self.servers:
            server.stop()


# The recipient domains every impact test knows, and the kind of MX each has (see MXWorld).
KINDS = {'good.test': 'valid', 'selfsigned.test': 'untrusted', 'oldtls.test': 'old_tls', 'plain.test': 'plain',
         'silent.test': 'silent', 'closed.test': 'closed', 'wrongname.test': 'wrong_name'}
# Seconds per network step for the tests: the silent MX costs about this long. Ten domains are probed at once against
# SMTP servers in the loaded test process (make test runs three such stages side by side): a late step would turn a
# verdict into "unknown".
TIMEOUT = 2.5


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """MXWorld of KINDS plus 'implicit.test' (no MX, an A record) and 'nullmx.test'; `nameserver` serves them all."""
    certificates = Certificates(tmp_path_factory.mktemp('certs'))
    mx_world = MXWorld(certificates, KINDS)
    records = dict(mx_world.records)
    records['implicit.test'] = [('A', mx_world.addresses['good.test'])]
    records['nullmx.test'] = [('MX', (0, '.'))]
    dns = DNSServer(records).start()
    mx_world.nameserver = dns.nameserver
    yield mx_world
    dns.stop()
    mx_world.stop()
