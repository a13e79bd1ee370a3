# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""The preview of recipient_tls_info: which recipient domains an Enforced TLS policy would block.

:class:`Preview` resolves each domain's MX hosts with dnspython, has an MXProber (_tls_mx) test them, and judges each
MX (:func:`mx_verdict`) and each domain (:func:`domain_verdict`) under the policy; :func:`summarize` counts the
verdicts. Also the parsing of the module's domains, recipients and nameservers.

Private to this collection: its names may change at any time.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout, wait

from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_common import Deadline
from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_mx import MX_LIMIT_STEPS, MXProber, mx_unreachable
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import DEFAULTS, FIELDS, normalize_version

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

VERDICTS = ('delivered', 'blocked', 'unknown', 'undeliverable')

# The time one domain may take, in multiples of timeout: the MX look-up (one step), the address look-ups of its MX
# hosts (side by side: one step), then the tests of its MX hosts (side by side: MX_LIMIT_STEPS each).
DNS_STEPS = 2
DOMAIN_LIMIT_STEPS = DNS_STEPS + MX_LIMIT_STEPS
# Seconds a domain waits past its deadline for a test that should have ended with it (thread scheduling only).
_GRACE = 0.5


def worst_case_seconds(domains, timeout, concurrency):
    """The documented bound of a run over `domains` domains, bookkeeping aside: domains are tested `concurrency` at a
    time, and each takes at most DOMAIN_LIMIT_STEPS times timeout (plus _GRACE)."""
    return math.ceil(domains / concurrency) * (DOMAIN_LIMIT_STEPS * timeout + _GRACE)


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


# Prefixes that carry an IPv4 address and that ipaddress does not unwrap itself (it knows IPv4-mapped, 6to4, Teredo).
_NAT64 = ipaddress.ip_network('64:ff9b::/96')  # RFC 6052: the IPv4 address in the last 32 bits
# RFC 8215: an operator may place the IPv4 address anywhere from bit 48 to bit 96 of this prefix, so where it sits
# cannot be told from the address; and the prefix is for one network's own translator, which SendGrid cannot use.
_NAT64_LOCAL_USE = ipaddress.ip_network('64:ff9b:1::/48')
_IPV4_COMPATIBLE = ipaddress.ip_network('::/96')  # RFC 4291 2.5.5.1, deprecated: no network routes it
# Forms whose IPv6 address no one on the Internet can reach, whatever IPv4 address they carry.
_UNREACHABLE_FORMS = {'NAT64 local-use': 'NAT64 local-use (64:ff9b:1::/48)',
                      'IPv4-compatible': 'deprecated IPv4-compatible (::/96)'}


def embedded_ipv4(address):
    """(form, IPv4 addresses) an IPv6 address carries: ('IPv4-mapped', (a,)), ('6to4', (a,)), ('Teredo', (server,
    client)), ('NAT64', (a,)), ('IPv4-compatible', (a,)), or ('NAT64 local-use', ()) since where the IPv4 address
    sits in 64:ff9b:1::/48 depends on the operator's prefix length; (None, ()) for any other address, IPv4 included.
    A connection to such an address ends at (or is relayed through) the IPv4 address it carries."""
    address = ipaddress.ip_address(address)
    if address.version != 6:
        return None, ()
    if address.ipv4_mapped:
        return 'IPv4-mapped', (address.ipv4_mapped,)
    if address.sixtofour:
        return '6to4', (address.sixtofour,)
    if address.teredo:
        return 'Teredo', address.teredo
    if address in _NAT64:
        return 'NAT64', (ipaddress.IPv4Address(int(address) & 0xffffffff),)
    if address in _NAT64_LOCAL_USE:
        return 'NAT64 local-use', ()
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are the unspecified and loopback addresses
        return 'IPv4-compatible', (ipaddress.IPv4Address(int(address)),)
    return None, ()


def _kind(address):
    for kind in ('unspecified', 'loopback', 'link_local', 'multicast', 'site_local', 'reserved', 'private'):
        if getattr(address, 'is_' + kind, False):
            return kind.replace('_', '-')
    if not address.is_global:  # 100.64.0.0/10 (carrier-grade NAT), and whatever else this Python knows is not global
        return 'non-global'
    return None


def non_public(text):
    """Why SendGrid's servers, on the Internet, cannot reach an address ('loopback', 'private', ...); None when it
    is public. An IPv6 address that carries IPv4 addresses (:func:`embedded_ipv4`) is public only when each of them
    is: 2002:7f00:1::1 (6to4) leads to 127.0.0.1. An IPv4-mapped address counts as the IPv4 address it carries."""
    address = ipaddress.ip_address(text)
    form, carried = embedded_ipv4(address)
    if form is None:
        return _kind(address)
    if form == 'IPv4-mapped':
        # A dual-stack socket connects to the IPv4 address itself.
        return _kind(carried[0])
    if form in _UNREACHABLE_FORMS:
        return _UNREACHABLE_FORMS[form]
    # The prefixes of these forms (2002::/16, 2001::/32, 64:ff9b::/96) are routed on the Internet by definition,
    # whatever this Python's ipaddress says of them (its answers differ between versions).
    for ipv4 in carried:
        kind = _kind(ipv4)
        if kind:
            return '%s address embedding %s, %s %s' % (form, ipv4, 'an' if kind[0] in 'aeiou' else 'a', kind)
    return None


def mx_verdict(profile, policy):
    """(verdict, reason, blocked_by) of one tested MX under the policy."""
    name = profile['host']
    if profile.get('address') is None:
        if profile['error_code'] == 'dns':
            return 'undeliverable', '%s: %s' % (name, profile['error']), []
        return 'unknown', '%s: %s' % (name, profile['error']), []
    if mx_unreachable(profile) or profile['error_code'] == 'private_address':
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
    acceptable = [ok for version, ok in profile['tls_versions'].items() if version >= minimum]
    if not any(acceptable):
        if None in acceptable:
            # Not tested (a stalled handshake, or a version this host cannot offer): no proof that it would fail.
            return 'unknown', '%s speaks TLS %s, but whether it accepts TLS %s or newer could not be tested' % (
                name, profile['tls_best'], minimum), []
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


def domain_verdict(domain, mxs, dns_problem=None, untested=0):
    """The domain's entry from its judged MX entries (or from a DNS problem: (verdict, reason)); `untested` MX hosts
    were left out by max_mx_hosts."""
    entry = dict(domain=domain, mx=mxs, blocked_by=[], mx_untested=untested)
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
        entry['blocked_by'] = [setting for setting in FIELDS if any(setting in mx['blocked_by'] for mx in mxs)]
        if len(mxs) > 1:
            entry['reason'] = 'every MX fails the policy: ' + entry['reason']
    if untested and entry['verdict'] != 'delivered':
        entry['reason'] += ' (%d more MX hosts, of lower preference, were not tested)' % untested
    return entry


def make_resolver(nameservers, timeout):
    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
    resolver.lifetime = timeout
    resolver.timeout = timeout
    return resolver


def _look_up(resolver, name, rdtype, deadline):
    """The addresses of one type of a name (empty if none), within one step of the deadline; DNSException or
    socket.timeout (the deadline passed before it started) when the look-up failed."""
    try:
        answer = resolver.resolve(name, rdtype, search=False, lifetime=deadline.step())
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return []
    return [rdata.address for rdata in answer]


class Preview:
    """Resolves, tests and judges recipient domains, each within DOMAIN_LIMIT_STEPS times timeout.

    Domains are tested `concurrency` at a time. For each, the MX look-up comes first, then the A and AAAA look-ups
    of its `max_mx_hosts` most preferred MX hosts side by side, then the tests of those hosts side by side. An MX
    host shared by several domains is tested once. The pools are large enough that no domain waits for a thread.
    """

    def __init__(self, policy, resolver, prober, timeout, concurrency=16, max_mx_hosts=5, allow_private=False):
        self.policy = policy
        self.resolver = resolver
        self.prober = prober
        self.timeout = timeout
        self.concurrency = concurrency
        self.max_mx_hosts = max_mx_hosts
        self.allow_private = allow_private
        self._profiles = {}  # (host, address): Future of its profile, shared by the domains it serves
        self._lock = threading.Lock()
        self._lookups = self._probes = None  # thread pools, sized in run() by the number of domains

    def run(self, domains):
        """The list of domain entries, in the order of `domains`."""
        if not domains:
            return []
        workers = min(self.concurrency, len(domains))
        self._lookups = ThreadPoolExecutor(max_workers=2 * self.max_mx_hosts * workers)
        self._probes = ThreadPoolExecutor(max_workers=self.max_mx_hosts * workers)
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(self.domain, domains))
        finally:
            # Everything has ended with its deadline; do not wait for a late thread on the way out.
            self._lookups.shutdown(wait=False)
            self._probes.shutdown(wait=False)

    def domain(self, domain):
        """One domain's entry, within DOMAIN_LIMIT_STEPS times timeout from now."""
        deadline = Deadline(DOMAIN_LIMIT_STEPS * self.timeout, self.timeout)
        hosts, problem, untested = self.resolve(domain, deadline)
        if problem:
            return domain_verdict(domain, [], problem)
        waiting = [(mx, self._profile(mx, deadline)) for mx in hosts]
        mxs = []
        for mx, future in waiting:
            profile = dict(self._result(mx, future, deadline), preference=mx['preference'])
            verdict, reason, blocked_by = mx_verdict(profile, self.policy)
            mxs.append(dict(profile, verdict=verdict, reason=reason, blocked_by=blocked_by))
        return domain_verdict(domain, mxs, untested=untested)

    def resolve(self, domain, deadline):
        """(list of {host, preference, address, error_code, error}, None, untested) of the most preferred MX hosts,
        or (None, (verdict, reason), 0) for a DNS problem of the domain itself."""
        try:
            try:
                answer = self.resolver.resolve(domain, 'MX', search=False, lifetime=deadline.step())
                best = {}
                for rdata in answer:
                    name = rdata.exchange.to_text(omit_final_dot=True).lower()
                    best[name] = min(rdata.preference, best.get(name, rdata.preference))
                records = sorted((preference, name) for name, preference in best.items())
            except dns.resolver.NoAnswer:
                records = [(None, domain)]  # RFC 5321 5.1: no MX, the domain itself is the implicit MX
        except dns.resolver.NXDOMAIN:
            return None, ('undeliverable', '%s does not exist (NXDOMAIN): mail to it fails whatever the policy' % domain), 0
        except dns.exception.DNSException as exc:
            return None, ('unknown', 'The DNS look-up of %s failed (%s): check nameservers' % (domain, exc)), 0
        if len(records) == 1 and records[0][1] in ('', '.'):
            return None, ('undeliverable', '%s has a null MX record (RFC 7505): it accepts no mail' % domain), 0
        records = [record for record in records if record[1] not in ('', '.')]
        # Like a sending MTA (Postfix tries 5), test only the most preferred hosts: 2,000 MX records cost no more.
        chosen = records[:self.max_mx_hosts]
        lookups = {(name, rdtype): self._lookups.submit(_look_up, self.resolver, name, rdtype, deadline)
                   for _preference, name in chosen for rdtype in ('A', 'AAAA')}
        wait(lookups.values(), timeout=max(0.0, deadline.remaining()) + _GRACE)
        hosts = [self._host(name, preference, lookups[(name, 'A')], lookups[(name, 'AAAA')])
                 for preference, name in chosen]
        if records[0][0] is None and hosts[0]['error_code'] == 'dns':
            return None, ('undeliverable', '%s has neither MX nor A/AAAA records: it accepts no mail' % domain), 0
        return hosts, None, len(records) - len(chosen)

    def _host(self, name, preference, *lookups):
        """The MX entry of `name` from its A and AAAA look-ups: the address to test (the first public IPv4 address,
        else IPv6; with allow_private the first of any), or why there is none."""
        host = dict(host=name, preference=preference, address=None, error_code=None, error=None)
        addresses, failures = [], []
        for future in lookups:
            try:
                addresses += future.result(timeout=0)
            except FutureTimeout:
                failures.append('no answer within %g seconds' % self.timeout)
            except (dns.exception.DNSException, OSError) as exc:
                failures.append(str(exc) or exc.__class__.__name__)
        public = [address for address in addresses if non_public(address) is None]
        if public or (addresses and self.allow_private):
            host['address'] = (public or addresses)[0]
        elif addresses:
            kind = non_public(addresses[0])
            host.update(address=addresses[0], error_code='private_address', error=(
                '%s has only non-public addresses (%s is a %s address): SendGrid cannot reach it from the Internet; '
                'set allow_private to test it anyway' % (name, addresses[0], kind)))
        elif failures:
            host.update(error_code='dns_error', error='the look-up of its address failed (%s)' % '; '.join(failures))
        else:
            host.update(error_code='dns', error='the MX host has no A or AAAA record')
        return host

    def _profile(self, mx, deadline):
        """A Future of the MX's profile, started now unless another domain started it; None when it is not tested."""
        if mx['address'] is None or mx['error_code']:
            return None
        key = (mx['host'], mx['address'])
        with self._lock:
            if key not in self._profiles:
                self._profiles[key] = self._probes.submit(self.prober.profile, mx['host'], mx['address'], deadline.end)
            return self._profiles[key]

    def _result(self, mx, future, deadline):
        untested = dict(mx, port=self.prober.port, greeting=None, starttls_offered=None, tls_versions={},
                        tls_best=None, certificate=None)
        if future is None:
            return untested
        try:
            return dict(future.result(timeout=max(0.0, deadline.remaining()) + _GRACE))
        except FutureTimeout:
            # Another domain's test of this MX, started under that domain's deadline, is still running.
            untested.update(error_code='timeout', error='The test of %s did not end within the time limit of its '
                            'domain (%g seconds)' % (mx['host'], deadline.limit))
            return untested


def summarize(entries):
    summary = dict(domains=len(entries), **{verdict: 0 for verdict in VERDICTS})
    summary['blocked_by'] = {setting: 0 for setting in FIELDS}
    for entry in entries:
        summary[entry['verdict']] += 1
        for setting in entry['blocked_by']:
            summary['blocked_by'][setting] += 1
    return summary


# -- the preview as the module and the role's guardrail run it --------------------------------------------------------

MAX_MX_HOSTS = (1, 10)
CONCURRENCY = (1, 256)
MAX_CONNECTIONS = 256
# The module's option defaults, which the role's guardrail shares (an unset policy setting is SendGrid's default).
OPTION_DEFAULTS = dict(domains=None, recipients=None, **DEFAULTS, nameservers=None, smtp_port=25, ca_path=None, timeout=10.0,
                       concurrency=16, max_mx_hosts=5, allow_private=False)


def option_problems(params):
    """What is wrong with the options that need more than their type, each naming the option and what it allows."""
    problems = []
    if not 1 <= params['smtp_port'] <= 65535:
        problems.append('smtp_port must be 1-65535, got %d' % params['smtp_port'])
    if params['timeout'] <= 0:
        problems.append('timeout must be a positive number of seconds, got %g' % params['timeout'])
    for option, (low, high) in (('concurrency', CONCURRENCY), ('max_mx_hosts', MAX_MX_HOSTS)):
        if not low <= params[option] <= high:
            problems.append('%s must be %d-%d, got %d' % (option, low, high, params[option]))
    if not problems and params['concurrency'] * params['max_mx_hosts'] > MAX_CONNECTIONS:
        # Each tested MX host is a thread with an open connection: keep the controller's share bounded.
        problems.append('concurrency x max_mx_hosts must be at most %d (connections open at once), got %d x %d'
                        % (MAX_CONNECTIONS, params['concurrency'], params['max_mx_hosts']))
    return problems


def run_preview(params):
    """The whole preview for recipient_tls_info's options (unset ones take OPTION_DEFAULTS): {policy, summary, domains}.

    ValueError names every bad option, before any look-up. dnspython and cryptography must be importable (the callers
    name the missing library their own way).
    """
    params = dict(OPTION_DEFAULTS, **{key: value for key, value in params.items() if value is not None})
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
    problems += option_problems(params)
    if not domains and not problems:
        problems.append('no domain to test: domains and recipients are empty')
    if problems:
        raise ValueError('; '.join(problems))
    policy = dict(require_tls=params['require_tls'], require_valid_cert=params['require_valid_cert'], version=version)
    prober = MXProber(port=params['smtp_port'], timeout=params['timeout'], ca_path=params['ca_path'])
    entries = Preview(policy, make_resolver(nameservers, params['timeout']), prober, params['timeout'],
                      params['concurrency'], params['max_mx_hosts'], params['allow_private']).run(domains)
    return dict(policy=policy, summary=summarize(entries), domains=entries)
