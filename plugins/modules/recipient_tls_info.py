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
      - Seconds to wait for each network step with one MX host (connection, each SMTP answer, each handshake) and for
        each DNS query. An MX that does not answer at all costs about this long.
    type: float
    default: 10
  concurrency:
    description:
      - How many MX hosts (and DNS look-ups) are tested at the same time.
    type: int
    default: 16
notes:
  - The test runs on the managed host; use C(delegate_to=localhost) or C(connection=local) to test from the controller.
  - Many networks and cloud providers block outgoing port 25. An MX this host cannot reach (timeout, refused, no route)
    is reported as V(unknown), never as V(blocked); run the preview from a host that can reach port 25.
  - SendGrid does not publish its exact checks. This module assumes that C(require_valid_cert) means a chain to a trusted
    root, a subject alternative name matching the MX host (a C(*.) wildcard covers one label) and a current validity
    period, and that C(version) applies to the STARTTLS handshake. The result is a prediction from this host's view.
  - The policy variables of M(mailsec.sendgrid.enforced_tls) left unset mean SendGrid's defaults here
    (C(require_tls=false), C(require_valid_cert=false), C(version=1.1)), under which nothing is blocked.
requirements:
  - dnspython (Python library)
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
          blocked, timeout) or DNS failed; run the preview from a host that can reach port 25.
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
    mx:
      description: The MX hosts tested, by preference.
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
          description: The address tested (the first IPv4 address, else IPv6); null if the name has none.
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
          description: Why the MX could not be tested to the end (V(dns), V(timeout), V(refused), V(unreachable),
            V(smtp_error), V(connection_closed), V(tls_error)); null otherwise.
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

import ipaddress
import traceback
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mailsec.sendgrid.plugins.module_utils.enforced_tls import normalize_version
from ansible_collections.mailsec.sendgrid.plugins.module_utils.tls_probe import MXProber, mx_unreachable

try:
    import dns.exception
    import dns.nameserver
    import dns.rdatatype
    import dns.resolver
    HAS_DNSPYTHON = True
    DNSPYTHON_ERROR = None
except ImportError:
    HAS_DNSPYTHON = False
    DNSPYTHON_ERROR = traceback.format_exc()

SETTINGS = ('require_tls', 'require_valid_cert', 'version')
VERDICTS = ('delivered', 'blocked', 'unknown', 'undeliverable')


def parse_nameserver(text):
    """'192.0.2.1' -> ('192.0.2.1', 53); '192.0.2.1:5353'; '[2001:db8::1]:53'; '2001:db8::1'. ValueError otherwise."""
    text = text.strip()
    host, port = text, 53
    if text.startswith('['):
        host, sep, rest = text[1:].partition(']')
        if not sep or (rest and not rest.startswith(':')):
            raise ValueError('nameserver %r: expected [IPv6]:port' % text)
        port = rest[1:] or 53
    elif text.count(':') == 1:
        host, port = text.split(':')
    try:
        ipaddress.ip_address(host)
        port = int(port)
    except ValueError:
        raise ValueError('nameserver %r must be an IP address, IP:port or [IPv6]:port' % text) from None
    if not 1 <= port <= 65535:
        raise ValueError('nameserver %r: port must be 1-65535' % text)
    return host, port


def wanted_domains(domains, recipients):
    """The domains to test, lower case, each once, in order; plus a list of problems."""
    problems, result = [], []
    for item in list(domains or []) + [r.rpartition('@')[2] if '@' in r else None for r in recipients or []]:
        if item is None:
            problems.append('every recipient must be an e-mail address (with "@")')
            continue
        domain = item.strip().rstrip('.').lower()
        if not domain or ' ' in domain or '..' in domain:
            problems.append('%r is not a domain name' % item)
        elif domain not in result:
            result.append(domain)
    return result, problems


def mx_verdict(profile, policy):
    """(verdict, reason, blocked_by) of one tested MX under the policy."""
    name = profile['host']
    if profile.get('address') is None:
        return 'undeliverable', '%s: %s' % (name, profile['error']), []
    if mx_unreachable(profile):
        return 'unknown', profile['error'], []
    needs_tls = policy['require_tls'] or policy['require_valid_cert']
    if not needs_tls:
        return 'delivered', '%s: the policy requires no TLS, so mail goes with or without it' % name, []
    tls_setting = 'require_tls' if policy['require_tls'] else 'require_valid_cert'
    if profile['starttls_offered'] is False:
        return 'blocked', '%s does not offer STARTTLS: "TLS required but not supported"' % name, [tls_setting]
    if profile['tls_best'] is None:
        if profile['error_code'] and profile['error_code'] != 'tls_error':
            return 'unknown', profile['error'], []
        return 'blocked', '%s: no TLS handshake succeeded (%s)' % (name, profile['error']), [tls_setting]
    reasons, blocked_by = [], []
    minimum = policy['version']
    if not any(ok for version, ok in profile['tls_versions'].items() if version >= minimum):
        reasons.append('speaks at best TLS %s, older than the required TLS %s' % (profile['tls_best'], minimum))
        blocked_by.append('version')
    cert = profile['certificate'] or {}
    if policy['require_valid_cert']:
        problems = []
        if cert.get('trusted') is False:
            problems.append('is not trusted (%s)' % cert.get('untrusted_reason'))
        if not cert.get('name_matches'):
            names = ', '.join(cert.get('subject_alt_names') or []) or 'no DNS names'
            problems.append('is not valid for the name %s (it lists %s)' % (name, names))
        if cert.get('expired'):
            problems.append('expired on %s' % cert.get('not_after'))
        if cert.get('trusted') is None and not problems:
            return 'unknown', '%s: the certificate could not be verified (%s)' % (name, cert.get('untrusted_reason')), []
        if problems:
            reasons.append('its certificate ' + ' and '.join(problems))
            blocked_by.append('require_valid_cert')
    if blocked_by:
        return 'blocked', '%s %s' % (name, '; '.join(reasons)), blocked_by
    return 'delivered', '%s accepts TLS %s%s' % (
        name, profile['tls_best'], ' with a valid certificate' if policy['require_valid_cert'] else ''), []


def domain_verdict(domain, mxs, dns_problem=None):
    """The domain's entry from its judged MX entries (or from a DNS problem: (verdict, reason))."""
    entry = dict(domain=domain, mx=mxs, blocked_by=[])
    if dns_problem:
        entry.update(verdict=dns_problem[0], reason=dns_problem[1])
        return entry
    by_verdict = {verdict: [mx for mx in mxs if mx['verdict'] == verdict] for verdict in VERDICTS}
    # One MX that passes delivers; else one this host could not test makes the outcome unknown.
    for verdict in ('delivered', 'unknown', 'blocked', 'undeliverable'):
        if by_verdict[verdict]:
            entry.update(verdict=verdict, reason='; '.join(mx['reason'] for mx in by_verdict[verdict]))
            break
    if entry['verdict'] == 'blocked':
        entry['blocked_by'] = [setting for setting in SETTINGS if any(setting in mx['blocked_by'] for mx in mxs)]
        if len(mxs) > 1:
            entry['reason'] = 'every MX fails the policy: ' + entry['reason']
    return entry


def make_resolver(nameservers, timeout):
    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
    resolver.lifetime = timeout
    resolver.timeout = timeout
    return resolver


def _addresses(resolver, name):
    """The A addresses, then AAAA, of a name (empty if none); DNSException other than 'none' propagates."""
    found = []
    for rdtype in ('A', 'AAAA'):
        try:
            found += [rdata.address for rdata in resolver.resolve(name, rdtype, search=False)]
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            continue
    return found


def resolve_domain(resolver, domain):
    """(list of {host, preference, address}, None) or (None, (verdict, reason)) for a DNS problem."""
    try:
        try:
            answer = resolver.resolve(domain, 'MX', search=False)
            records = sorted((rdata.preference, rdata.exchange.to_text(omit_final_dot=True).lower()) for rdata in answer)
        except dns.resolver.NoAnswer:
            records = [(None, domain)]  # RFC 5321 5.1: no MX, the domain itself is the implicit MX
        if len(records) == 1 and records[0][1] in ('', '.'):
            return None, ('undeliverable', '%s has a null MX record (RFC 7505): it accepts no mail' % domain)
        hosts = []
        for preference, host in records:
            addresses = _addresses(resolver, host)
            hosts.append(dict(host=host, preference=preference, address=addresses[0] if addresses else None))
        if records[0][0] is None and hosts[0]['address'] is None:
            return None, ('undeliverable', '%s has neither MX nor A/AAAA records: it accepts no mail' % domain)
        return hosts, None
    except dns.resolver.NXDOMAIN:
        return None, ('undeliverable', '%s does not exist (NXDOMAIN): mail to it fails whatever the policy' % domain)
    except dns.exception.DNSException as exc:
        return None, ('unknown', 'The DNS look-up of %s failed (%s): check nameservers' % (domain, exc))


def preview(domains, policy, resolver, prober, concurrency):
    """Resolve, probe each distinct MX once, judge: the list of domain entries."""
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(domains)))) as pool:
        resolved = list(pool.map(lambda domain: resolve_domain(resolver, domain), domains))
    targets = sorted({(mx['host'], mx['address']) for hosts, problem in resolved if hosts for mx in hosts if mx['address']})
    profiles = {}
    if targets:
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(targets)))) as pool:
            profiles = dict(zip(targets, pool.map(lambda target: prober.profile(*target), targets)))
    entries = []
    for domain, (hosts, problem) in zip(domains, resolved):
        mxs = []
        for mx in hosts or []:
            if mx['address']:
                profile = dict(profiles[(mx['host'], mx['address'])], preference=mx['preference'])
            else:
                profile = dict(mx, starttls_offered=None, tls_versions={}, tls_best=None, certificate=None,
                               error_code='dns', error='the MX host has no A or AAAA record')
            verdict, reason, blocked_by = mx_verdict(profile, policy)
            mxs.append(dict(profile, verdict=verdict, reason=reason, blocked_by=blocked_by))
        entries.append(domain_verdict(domain, mxs, problem))
    return entries


def summarize(entries):
    summary = dict(domains=len(entries), **{verdict: 0 for verdict in VERDICTS})
    summary['blocked_by'] = {setting: 0 for setting in SETTINGS}
    for entry in entries:
        summary[entry['verdict']] += 1
        for setting in entry['blocked_by']:
            summary['blocked_by'][setting] += 1
    return summary


def main():
    module = AnsibleModule(
        argument_spec=dict(
            domains=dict(type='list', elements='str'),
            recipients=dict(type='list', elements='str'),
            require_tls=dict(type='bool', default=False),
            require_valid_cert=dict(type='bool', default=False),
            version=dict(type='raw', default='1.1'),
            nameservers=dict(type='list', elements='str'),
            smtp_port=dict(type='int', default=25),
            ca_path=dict(type='path'),
            timeout=dict(type='float', default=10.0),
            concurrency=dict(type='int', default=16),
        ),
        required_one_of=[('domains', 'recipients')],
        supports_check_mode=True,
    )
    params = module.params
    if not HAS_DNSPYTHON:
        module.fail_json(msg=missing_required_lib('dnspython'), exception=DNSPYTHON_ERROR)
    domains, problems = wanted_domains(params['domains'], params['recipients'])
    try:
        version = normalize_version(params['version'])
    except ValueError as exc:
        problems.append(str(exc))
        version = None
    nameservers = []
    for text in params['nameservers'] or []:
        try:
            nameservers.append(parse_nameserver(text))
        except ValueError as exc:
            problems.append(str(exc))
    if not 1 <= params['smtp_port'] <= 65535:
        problems.append('smtp_port must be 1-65535, got %d' % params['smtp_port'])
    if params['timeout'] <= 0:
        problems.append('timeout must be a positive number of seconds, got %g' % params['timeout'])
    if not 1 <= params['concurrency'] <= 256:
        problems.append('concurrency must be 1-256, got %d' % params['concurrency'])
    if not domains and not problems:
        problems.append('no domain to test: domains and recipients are empty')
    if problems:
        module.fail_json(msg='; '.join(problems))
    policy = dict(require_tls=params['require_tls'], require_valid_cert=params['require_valid_cert'], version=version)
    try:
        prober = MXProber(port=params['smtp_port'], timeout=params['timeout'], ca_path=params['ca_path'])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    entries = preview(domains, policy, make_resolver(nameservers, params['timeout']), prober, params['concurrency'])
    module.exit_json(changed=False, policy=policy, summary=summarize(entries), domains=entries)


if __name__ == '__main__':
    main()
