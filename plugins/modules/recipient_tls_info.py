#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: recipient_tls_info
short_description: Preview which recipient domains an Enforced TLS policy would block
version_added: 0.1.0
description:
  - For each recipient domain, resolves its MX hosts (or, without MX records, the domain's own A/AAAA records, as SMTP
    does), connects to each on port 25, sends C(EHLO) and C(STARTTLS), and records whether STARTTLS is offered, which
    TLS versions (1.0 to 1.3) can be negotiated, and whether the certificate is trusted, names the MX host and is
    current.
  - Only the O(max_mx_hosts) most preferred MX hosts of a domain are tested (lowest preference first, then by name),
    as a sending MTA tries only a few. Each is tested at one address - its first public IPv4 address, else its first
    public IPv6 address.
  - MX hosts whose addresses are all non-public (loopback, private, link-local and the like, or IPv6 addresses embedding
    such an IPv4 address) are V(unknown) without being contacted, since SendGrid cannot reach them from the Internet; see O(allow_private).
  - From that it predicts, for the policy given by O(require_tls), O(require_valid_cert) and O(version), whether
    SendGrid would deliver mail to the domain or block it (drop it with a block event "TLS required but not supported").
  - A domain is V(delivered) when at least one of its MX hosts satisfies the policy (SendGrid, like any sending MTA,
    tries the next MX when one fails).
  - Nothing is sent beyond C(EHLO), C(STARTTLS) and the TLS handshakes, then the connection is closed; no mail is sent.
  - Read-only; never reports C(changed). Does not talk to SendGrid at all.
author:
  - mailsec.sendgrid maintainers (@mailsec)
extends_documentation_fragment:
  - mailsec.sendgrid.api.attributes
  - mailsec.sendgrid.api.info_module
options:
  domains:
    description:
      - Recipient domains to test, such as V(example.com). Duplicates and case differences are ignored.
      - At least one of O(domains) and O(recipients) is required.
    type: list
    elements: str
  recipients:
    description:
      - Recipient e-mail addresses; only their domains (after the last C(@)) are tested, each once.
    type: list
    elements: str
  require_tls:
    description:
      - The policy's C(require_tls) - recipients must accept STARTTLS with at least O(version).
    type: bool
    default: false
  require_valid_cert:
    description:
      - The policy's C(require_valid_cert) - recipients must present a certificate that is trusted (by O(ca_path), else
        this host's CA store), valid for the MX host name, and not expired. It implies TLS with at least O(version).
    type: bool
    default: false
  version:
    description:
      - The policy's minimum TLS version, V("1.1"), V("1.2") or V("1.3"); a YAML float such as V(1.2) is accepted too.
      - It matters only when O(require_tls) or O(require_valid_cert) is true, as for SendGrid.
    type: raw
    default: "1.1"
  nameservers:
    description:
      - DNS servers to ask, each an IP address, V(IP:port) or V([IPv6]:port). Defaults to this host's resolver
        configuration (C(/etc/resolv.conf)).
    type: list
    elements: str
  smtp_port:
    description:
      - The TCP port of every MX host. Real MX hosts listen on V(25); change it only for tests and special networks.
    type: int
    default: 25
  ca_path:
    description:
      - A PEM file of CA certificates to trust instead of this host's store when judging certificates.
    type: path
  timeout:
    description:
      - Seconds to wait for each network step - each DNS query (with its retries), the connection to an MX host, each
        read of an SMTP answer, each TLS handshake. An MX that does not answer at all costs about this long.
      - It also sets the overall limits, so that a server answering every step just in time (a tarpit dripping its
        greeting byte by byte), a TLS handshake that never ends, or slow DNS answers cannot hold the test - every
        connection to one MX host ends within 4 times O(timeout) (it makes up to five, one per TLS version and one to
        verify the certificate), and one domain within 6 times O(timeout) (one step for its MX look-up, one for the
        A and AAAA look-ups of its MX hosts, made side by side, then the 4 for its MX hosts, tested side by side).
      - An MX host that did not finish within these limits, or whose TLS handshake never completed, is V(unknown) with
        error code V(timeout), never V(blocked).
      - The whole run over N domains therefore takes at most ceil(N / O(concurrency)) x (6 x O(timeout) + 0.5)
        seconds (0.5 s of grace per domain for the threads), plus the start of the module. For 100 domains with the
        defaults - at most 7 x 60.5 s, about 7 minutes; most domains take far less.
    type: float
    default: 10
  concurrency:
    description:
      - How many domains are tested at the same time, from 1 to 256.
      - Each domain tests its MX hosts side by side, so up to O(concurrency) x O(max_mx_hosts) connections (and twice
        as many DNS queries) may be open at once; that product may be at most 256.
    type: int
    default: 16
  max_mx_hosts:
    description:
      - How many MX hosts of each domain are tested, the most preferred first, from 1 to 10. The others are counted in
        RV(domains[].mx_untested) and cost nothing - not even a DNS query - so that a domain with thousands of MX
        records costs no more than one with five.
      - Sending MTAs stop after a few too (Postfix tries 5 addresses); a domain whose tested MX hosts all fail the policy
        is V(blocked) even when untested ones might pass, and its reason says how many were not tested.
    type: int
    default: 5
  allow_private:
    description:
      - Whether to test MX hosts whose addresses are not public - unspecified, loopback, private (RFC 1918,
        C(fc00::/7)), link-local, multicast, shared (C(100.64.0.0/10)), documentation and other reserved ranges.
      - An IPv6 address with an embedded IPv4 address counts as non-public when any IPv4 address it embeds is one of
        these - IPv4-mapped (C(::ffff:0:0/96)), 6to4 (C(2002::/16), for example C(2002:7f00:1::1) for 127.0.0.1),
        Teredo (C(2001::/32), its server and its client) and NAT64 (C(64:ff9b::/96)). NAT64 local-use
        (C(64:ff9b:1::/48)) and the deprecated IPv4-compatible (C(::/96)) addresses are never public.
      - With V(false) (the default), such an MX host is not contacted; it is V(unknown) with error code
        V(private_address), since SendGrid's servers on the Internet cannot reach it. This also keeps a recipient
        domain's DNS from aiming this host's connections at its own internal network. An MX host with both public and
        non-public addresses is tested at its first public one either way.
      - Set to V(true) only for tests and private networks.
    type: bool
    default: false
notes:
  - The test runs on the managed host; use C(delegate_to=localhost) or C(connection=local) to test from the controller.
  - Many networks and cloud providers block outgoing port 25. An MX this host cannot reach (timeout, refused, no route)
    is reported as V(unknown), never as V(blocked); run the preview from a host that can reach port 25.
  - Everything an MX host or DNS server sends is untrusted - its answers are bounded in size (SMTP replies of at most
    100 lines of 2048 bytes) and in time (see O(timeout)).
  - SendGrid does not publish its exact checks. This module assumes that C(require_valid_cert) means a chain to a trusted
    root, a subject alternative name matching the MX host (a C(*.) wildcard covers one label) and a current validity
    period, and that C(version) applies to the STARTTLS handshake. The result is a prediction from this host's view.
  - The policy variables of M(mailsec.sendgrid.enforced_tls) left unset mean SendGrid's defaults here
    (C(require_tls=false), C(require_valid_cert=false), C(version=1.1)), under which nothing is blocked.
requirements:
  - dnspython (Python library)
  - cryptography (Python library, to read the certificates; ansible-core needs it too, so the controller has it)
seealso:
  - module: mailsec.sendgrid.enforced_tls
  - module: mailsec.sendgrid.tls_check
"""

EXAMPLES = r"""
- name: Which of our biggest recipient domains would a strict policy block?
  mailsec.sendgrid.recipient_tls_info:
    domains: [example.com, example.org]
    require_tls: true
    require_valid_cert: true
    version: "1.2"
  delegate_to: localhost
  register: impact

- name: Name the blocked domains and why
  ansible.builtin.debug:
    msg: "{{ item.domain }}: {{ item.reason }}"
  loop: "{{ impact.domains | selectattr('verdict', 'equalto', 'blocked') | list }}"

- name: Test the domains of some addresses, with a given DNS server
  mailsec.sendgrid.recipient_tls_info:
    recipients: [alice@example.com, bob@example.net]
    require_tls: true
    nameservers: ["192.0.2.53", "192.0.2.54:5353"]
    timeout: 5
"""

RETURN = r"""
policy:
  description: The policy judged, C(version) as a string.
  returned: always
  type: dict
  sample: {"require_tls": true, "require_valid_cert": true, "version": "1.2"}
summary:
  description: How many domains got each verdict, and how many blocked domains each setting blocks.
  returned: always
  type: dict
  sample: {"domains": 120, "delivered": 110, "blocked": 3, "unknown": 7, "undeliverable": 0,
           "blocked_by": {"require_tls": 1, "require_valid_cert": 2, "version": 0}}
domains:
  description: One entry per domain, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    domain:
      description: The domain, in lower case.
      type: str
      sample: example.com
    verdict:
      description:
        - V(delivered) - at least one MX satisfies the policy.
        - V(blocked) - every MX that this host could test fails the policy, and none was unreachable.
        - V(unknown) - no MX satisfies the policy and at least one could not be reached from this host (port 25
          blocked, timeout, a non-public address) or DNS failed; run the preview from a host that can reach port 25.
        - V(undeliverable) - the domain does not exist (NXDOMAIN), has a null MX, or no MX host has an address;
          mail to it fails whatever the policy.
      type: str
      sample: blocked
    reason:
      description: The verdict in words.
      type: str
      sample: "mx.example.com: the certificate is not trusted (self-signed certificate)"
    blocked_by:
      description: The policy settings that block the domain (V(require_tls), V(require_valid_cert), V(version)); empty unless blocked.
      type: list
      elements: str
      sample: [require_valid_cert]
    mx_untested:
      description: How many MX hosts of the domain were not tested, being beyond the O(max_mx_hosts) most preferred.
      type: int
      sample: 0
    mx:
      description: The MX hosts tested (at most O(max_mx_hosts)), by preference.
      type: list
      elements: dict
      contains:
        host:
          description: The MX host name (the domain itself without MX records).
          type: str
        preference:
          description: The MX preference; null for the implicit MX.
          type: int
        address:
          description: The address tested (the first public IPv4 address, else public IPv6; with
            O(allow_private=true), else the first address of any kind); null if the name has none.
          type: str
        starttls_offered:
          description: Whether C(STARTTLS) was offered after C(EHLO); null if the dialogue did not get that far.
          type: bool
        tls_versions:
          description: For V("1.0"), V("1.1"), V("1.2") and V("1.3"), whether a handshake limited to that version
            succeeded; null where not tested.
          type: dict
          sample: {"1.0": false, "1.1": false, "1.2": true, "1.3": true}
        tls_best:
          description: The newest TLS version negotiated, such as V("1.3"); null if none.
          type: str
        certificate:
          description: The certificate presented (subject, issuer, not_after, days_left, subject_alt_names as in
            M(mailsec.sendgrid.tls_check)), with C(trusted), C(untrusted_reason), C(name_matches) and C(expired); null
            without a handshake.
          type: dict
        error_code:
          description:
            - Why the MX could not be tested to the end; null otherwise.
            - V(dns) - the MX host has no A or AAAA record (its verdict is V(undeliverable)).
            - V(dns_error) - the look-up of its address failed or took longer than O(timeout).
            - V(private_address) - all its addresses are non-public, and O(allow_private) is false; it was not contacted.
            - V(timeout) - no answer within O(timeout), a TLS handshake that never completed, or the test did not end
              within its overall limit (see O(timeout)).
            - V(refused), V(unreachable) - this host cannot connect to it.
            - V(smtp_error), V(connection_closed), V(tls_error) - the dialogue failed.
          type: str
        error:
          description: That reason in words.
          type: str
        verdict:
          description: This MX's verdict, as the domain's.
          type: str
        reason:
          description: This MX's verdict in words.
          type: str
        blocked_by:
          description: The settings this MX fails.
          type: list
          elements: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mailsec.sendgrid.plugins.module_utils._recipient_preview import (
    DNSPYTHON_ERROR, HAS_DNSPYTHON, OPTION_DEFAULTS, run_preview)
from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_certificate import CRYPTOGRAPHY_ERROR, HAS_CRYPTOGRAPHY


def main():
    module = AnsibleModule(
        argument_spec=dict(
            domains=dict(type='list', elements='str'),
            recipients=dict(type='list', elements='str'),
            require_tls=dict(type='bool', default=OPTION_DEFAULTS['require_tls']),
            require_valid_cert=dict(type='bool', default=OPTION_DEFAULTS['require_valid_cert']),
            version=dict(type='raw', default=OPTION_DEFAULTS['version']),
            nameservers=dict(type='list', elements='str'),
            smtp_port=dict(type='int', default=OPTION_DEFAULTS['smtp_port']),
            ca_path=dict(type='path'),
            timeout=dict(type='float', default=OPTION_DEFAULTS['timeout']),
            concurrency=dict(type='int', default=OPTION_DEFAULTS['concurrency']),
            max_mx_hosts=dict(type='int', default=OPTION_DEFAULTS['max_mx_hosts']),
            allow_private=dict(type='bool', default=OPTION_DEFAULTS['allow_private']),
        ),
        required_one_of=[('domains', 'recipients')],
        supports_check_mode=True,
    )
    if not HAS_DNSPYTHON:
        module.fail_json(msg=missing_required_lib('dnspython'), exception=DNSPYTHON_ERROR)
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib('cryptography'), exception=CRYPTOGRAPHY_ERROR)
    try:
        result = run_preview(module.params)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
