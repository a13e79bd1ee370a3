# -*- coding: utf-8 -*-
"""recipient_tls_info through ansible-playbook: an MX whose only address is an IPv6 address carrying a loopback IPv4
address (6to4, NAT64, Teredo, IPv4-mapped) is not public, so without allow_private it is not tested.

The DNS server on 127.0.0.1 hands out those addresses; the module must judge them from the answer alone. Whether it
contacted one is read from the result (the reason code private_address and the reason's words), never by letting it
connect: 2002:7f00:1::1 would leave this machine for a 6to4 relay on the Internet. Only the IPv4-mapped address, which
a dual-stack socket turns into 127.0.0.1 itself, has a listener that counts connections.
"""

from __future__ import annotations

# pylint: disable=redefined-outer-name  # pytest fixtures arrive as arguments of the same name

import ipaddress

import pytest

from tests.dns_server import DNSServer, SilentListener, free_port_on
from tests.tls_servers import LOOPBACK

TIMEOUT = 1.0
# Domain: (the only address of its MX, the words the reason must hold).
CARRIERS = {
    'sixtofour.test': ('2002:7f00:1::1', '2002:7f00:1::1 is a 6to4 address embedding 127.0.0.1, a loopback address'),
    'nat64.test': ('64:ff9b::7f00:1', '64:ff9b::7f00:1 is a NAT64 address embedding 127.0.0.1, a loopback address'),
    # Teredo server 127.0.0.1, client 8.8.8.8 (stored inverted).
    'teredo.test': ('2001:0:7f00:1:8000:63bf:f7f7:f7f7', 'a Teredo address embedding 127.0.0.1, a loopback address'),
    'mapped.test': ('::ffff:127.0.0.1', '::ffff:127.0.0.1 is a loopback address'),
}


def _hex_groups(address):
    """Eight groups of hex digits: Python 3.13 writes an IPv4-mapped address with a dotted quad even when exploded,
    which the DNS test server's dnslib cannot parse."""
    number = int(ipaddress.ip_address(address))
    return ':'.join('%04x' % ((number >> shift) & 0xffff) for shift in range(112, -16, -16))


@pytest.fixture(scope='module')
def carriers():
    records = {}
    for domain, (address, _reason) in CARRIERS.items():
        records[domain] = [('MX', (10, 'mx.' + domain))]
        # dnslib reads IPv6 addresses in hexadecimal only.
        records['mx.' + domain] = [('AAAA', _hex_groups(address))]
    dns = DNSServer(records).start()
    port = free_port_on([LOOPBACK])
    listener = SilentListener(LOOPBACK, port).start()
    yield dns, listener, port
    listener.stop()
    dns.stop()


def preview(run_playbook, carriers, domains, allow_private):
    dns, _listener, port = carriers
    task = {'mailsec.sendgrid.recipient_tls_info': dict(
        domains=domains, nameservers=[dns.nameserver], smtp_port=port,
        timeout=TIMEOUT, allow_private=allow_private, require_tls=True), 'register': 'impact'}
    run = run_playbook(tasks=[dict(name='Preview', **task)], save=['impact'], check=True)
    assert run.rc == 0, run.output
    return {entry['domain']: entry for entry in run.results['impact']['domains']}


def test_an_mx_on_an_ipv6_address_carrying_a_loopback_address_is_unknown_and_not_tested(run_playbook, carriers):
    listener = carriers[1]
    by_domain = preview(run_playbook, carriers, list(CARRIERS), allow_private=False)
    for domain, (address, reason) in CARRIERS.items():
        entry = by_domain[domain]
        (mx,) = entry['mx']
        assert (entry['verdict'], mx['error_code']) == ('unknown', 'private_address'), entry
        assert ipaddress.ip_address(mx['address']) == ipaddress.ip_address(address)
        assert reason in entry['reason'] and 'SendGrid cannot reach it' in entry['reason']
        assert mx['starttls_offered'] is None and mx['greeting'] is None and mx['tls_versions'] == {}
    assert listener.connections == 0


def test_allow_private_tests_it(run_playbook, carriers):
    # The other side of the test above: the listener does see the module when it is allowed to connect.
    listener = carriers[1]
    before = listener.connections
    by_domain = preview(run_playbook, carriers, ['mapped.test'], allow_private=True)
    (mx,) = by_domain['mapped.test']['mx']
    assert mx['error_code'] == 'timeout' and by_domain['mapped.test']['verdict'] == 'unknown'
    assert listener.connections > before
