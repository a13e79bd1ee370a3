#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: tls_check
short_description: Test whether this host can reach SendGrid (or any endpoint) over TLS 1.2 or newer
version_added: 0.1.0
description:
  - Connects from the managed host to HTTPS and SMTP endpoints the way a client would, performs a TLS handshake
    that allows nothing older than O(min_version), and reports whether it works, with the negotiated protocol
    and cipher and the server certificate's subject, issuer and expiry.
  - Without O(host), O(port), O(mode) and O(endpoints), tests SendGrid's three TLS 1.2 test endpoints, which accept
    nothing older than TLS 1.2 - V(https) U(https://tls12.api.sendgrid.com:443), V(smtp_starttls)
    C(tls12.smtp.sendgrid.net:587) and V(smtps) C(tls12.smtp.sendgrid.net:465).
  - Run it on the hosts that send mail or call the API (your production environment), not only on a workstation,
    whose operating system may support TLS 1.2 when the servers do not.
  - V(https) sends a real C(HEAD /) request over the tested connection and reports the status. V(smtp_starttls) reads
    the greeting, sends C(EHLO) and C(STARTTLS), then does the handshake. V(smtps) does the handshake at once and reads
    the greeting over TLS. No mail is sent and no credentials are used.
  - When an endpoint fails, RV(results[].reason_code) says why in a word and RV(results[].reason) in a sentence.
    A server that refuses TLS O(min_version) is contacted once more offering TLS 1.0 and 1.1 too, only to report which
    old version it speaks; that connection never counts as a success.
  - Also reports this host's TLS stack (Python, OpenSSL, C(requests), C(urllib3)), the components to upgrade when a test fails.
  - Uses the Python standard library, so it also works where C(requests) is missing. The server certificate is read
    by the C(cryptography) library when it is installed; without it, only the details of a certificate that passed
    verification are known (see RV(results[].certificate.parsed_by)).
author:
  - mailsec.sendgrid maintainers (@mailsec)
extends_documentation_fragment:
  - mailsec.sendgrid.api.attributes
  - mailsec.sendgrid.api.info_module
options:
  host:
    description:
      - Name or IP address of the endpoint to test.
      - Defaults to SendGrid's test host of the O(mode) - C(tls12.api.sendgrid.com) for V(https),
        C(tls12.smtp.sendgrid.net) for the SMTP modes.
    type: str
  port:
    description:
      - TCP port of the endpoint.
      - Defaults to the port of O(mode) - V(443) for V(https), V(587) for V(smtp_starttls), V(465) for V(smtps).
      - SendGrid also accepts STARTTLS on port V(25), but many networks and cloud providers block outgoing port 25,
        so that a test on it ends in a timeout even when TLS would work.
    type: int
  mode:
    description:
      - How to talk to the endpoint.
      - V(https) - TLS at once, then an HTTP C(HEAD /) request.
      - V(smtp_starttls) - plain-text SMTP, C(EHLO), C(STARTTLS), then TLS.
      - V(smtps) - SMTP over implicit TLS (TLS at once).
      - Defaults to V(https) when O(host) or O(port) is given.
    type: str
    choices: [https, smtp_starttls, smtps]
  endpoints:
    description:
      - Test several endpoints in one task, in parallel. Results come in the same order.
      - In each item, a missing C(host), C(port) or C(mode) falls back to O(host), O(port) or O(mode), and then to
        the defaults described for those options.
      - An empty list is refused.
    type: list
    elements: dict
    suboptions:
      host:
        description: Name or IP address of the endpoint.
        type: str
      port:
        description: TCP port of the endpoint.
        type: int
      mode:
        description: How to talk to the endpoint, as O(mode).
        type: str
        choices: [https, smtp_starttls, smtps]
  min_version:
    description:
      - The oldest TLS version the test allows. SendGrid requires V("1.2").
      - A server that only speaks older versions is reported with reason code C(tls_version), naming the version it speaks.
    type: str
    choices: ["1.2", "1.3"]
    default: "1.2"
  validate_certs:
    description:
      - Verify the server certificate (trusted issuer, name, validity dates). A failure is reported as C(cert_untrusted),
        C(cert_hostname) or C(cert_expired), with the certificate's details.
      - Set to V(false) to test only the TLS version and cipher, for example behind a TLS-inspecting proxy whose CA
        you do not have.
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file of CA certificates to trust instead of the system's store, for example the CA of a TLS-inspecting
        corporate proxy.
      - Ignored when O(validate_certs=false).
    type: path
  timeout:
    description:
      - Seconds to wait for each network step - the DNS look-up, the TCP connection, each read of an SMTP or HTTP
        answer, the TLS handshake.
      - It also bounds each endpoint's test as a whole, so that a server answering every step just in time (a tarpit
        dripping its greeting byte by byte) cannot hold it - the test of one endpoint, including the second connection
        that explains a failure, ends within 3 times O(timeout). A test cut short there fails with reason code
        C(timeout), unless the handshake had already succeeded (only the informational HTTP status or SMTPS greeting
        is then missing).
      - Endpoints are tested 8 at a time, so N endpoints take at most ceil(N / 8) x 3 x O(timeout) seconds in all.
    type: float
    default: 10
  fail_on_unsupported:
    description:
      - Fail the task when any endpoint fails the test. RV(results) is returned either way.
      - Set to V(false) to collect the results and decide later, for example to print a report first.
    type: bool
    default: true
notes:
  - The test runs on the managed host (use C(delegate_to) or C(connection=local) to test from the controller).
  - The HTTPS request and the SMTP greeting are reported for information; RV(results[].supported) depends on the TCP
    connection, the SMTP dialogue up to C(STARTTLS), and the TLS handshake (with certificate checks) only.
  - A C(tls_version) result behind a proxy or firewall that inspects TLS usually means that device, not the server,
    needs an upgrade, since SendGrid's endpoints all speak TLS 1.2.
seealso:
  - name: SendGrid - Support for TLS 1.2
    description: SendGrid's test endpoints and the components to check when a test fails.
    link: https://www.twilio.com/docs/sendgrid/for-developers/sending-email/support-for-tls-12
  - module: mailsec.sendgrid.enforced_tls
"""

EXAMPLES = r"""
# The same test as "curl https://tls12.api.sendgrid.com:443 --tlsv1.2", and
# "openssl s_client -connect tls12.smtp.sendgrid.net:587 -starttls smtp -tls1_2" and ":465 -tls1_2".
- name: Test SendGrid's TLS 1.2 endpoints from this host
  mailsec.sendgrid.tls_check:
  register: tls

- name: Show the negotiated protocol and cipher of each endpoint
  ansible.builtin.debug:
    msg: "{{ item.host }}:{{ item.port }} {{ item.protocol }} {{ item.cipher }}"
  loop: "{{ tls.results }}"

# Only the API, as "openssl s_client -connect tls12.api.sendgrid.com:443 -tls1_2" would.
- name: Test the HTTPS endpoint only
  mailsec.sendgrid.tls_check:
    mode: https

- name: Test SMTP with STARTTLS on port 25, which some networks block
  mailsec.sendgrid.tls_check:
    mode: smtp_starttls
    port: 25
    timeout: 5

- name: Test through a TLS-inspecting proxy whose CA the host does not trust by default
  mailsec.sendgrid.tls_check:
    ca_path: /etc/pki/corp-proxy-ca.pem

- name: Test your own relays, require TLS 1.3, and decide later
  mailsec.sendgrid.tls_check:
    min_version: "1.3"
    mode: smtp_starttls
    endpoints:
      - host: relay1.example.com
      - host: relay2.example.com
      - host: relay2.example.com
        mode: smtps
    fail_on_unsupported: false
  register: relays

- name: Name the relays that fail
  ansible.builtin.debug:
    msg: "{{ relays.results | rejectattr('supported') | map(attribute='reason') | list }}"
"""

RETURN = r"""
supported:
  description: Whether every tested endpoint passed.
  returned: success, or failure after testing
  type: bool
  sample: true
results:
  description: One entry per tested endpoint, in the order of O(endpoints) (or https, smtp_starttls, smtps by default).
  returned: success, or failure after testing
  type: list
  elements: dict
  contains:
    host:
      description: The host tested.
      type: str
      sample: tls12.api.sendgrid.com
    port:
      description: The port tested.
      type: int
      sample: 443
    mode:
      description: How the endpoint was tested.
      type: str
      sample: https
    supported:
      description: Whether a TLS handshake with at least O(min_version) (and, with O(validate_certs), a valid certificate) succeeded.
      type: bool
      sample: true
    protocol:
      description:
        - The negotiated TLS version.
        - With reason code C(tls_version), the old version the server speaks; with a certificate failure, the version
          negotiated without verification. Null if no handshake succeeded.
      type: str
      sample: TLSv1.3
    cipher:
      description: The negotiated cipher suite (OpenSSL name). Null if no handshake succeeded.
      type: str
      sample: TLS_AES_256_GCM_SHA384
    certificate:
      description:
        - The server certificate, also when it failed verification. Null if no handshake succeeded, or if the
          C(cryptography) library could not read the certificate.
        - Without C(cryptography) on the managed host, the details of a certificate that was not verified (a
          verification failure, or O(validate_certs=false)) are unknown - its fields are all null.
      type: dict
      contains:
        subject:
          description: The subject, as an RFC 4514 string.
          type: str
          sample: CN=tls12.api.sendgrid.com
        issuer:
          description: The issuer, as an RFC 4514 string.
          type: str
          sample: CN=Example Issuing CA,O=Example Trust,C=US
        not_after:
          description: End of validity, ISO 8601 in UTC.
          type: str
          sample: "2026-03-14T23:59:59Z"
        days_left:
          description: Whole days until RV(results[].certificate.not_after), rounded toward zero; negative once expired for a day or more.
          type: int
          sample: 112
        subject_alt_names:
          description: The DNS names and IP addresses the certificate is valid for.
          type: list
          elements: str
          sample: [tls12.api.sendgrid.com]
        parsed_by:
          description:
            - What read the certificate's details.
            - V(cryptography) - the C(cryptography) library, whenever it is installed on the managed host.
            - V(ssl) - Python's C(ssl) module, for a certificate that passed verification, when C(cryptography) is not
              installed (or cannot read it).
            - Null - neither could, so the other fields are null - C(cryptography) is not installed and the certificate
              was not verified.
          type: str
          sample: cryptography
    http_status:
      description: The HTTP status of a C(HEAD /) request sent over the tested connection; null if there was no answer.
      returned: when mode is V(https)
      type: int
      sample: 404
    greeting:
      description: The SMTP server's greeting (for V(smtps), read over TLS); null if there was none.
      returned: when mode is V(smtp_starttls) or V(smtps)
      type: str
      sample: 220 smtp.example.com ESMTP ready
    starttls_offered:
      description: Whether the server listed C(STARTTLS) in its C(EHLO) answer; null if it did not get that far.
      returned: when mode is V(smtp_starttls)
      type: bool
      sample: true
    reason_code:
      description:
        - Why the endpoint failed; null when it passed.
        - V(dns) - the name does not resolve, or its look-up took longer than O(timeout).
        - V(refused) - the connection was refused.
        - V(unreachable) - no route to the host or network.
        - V(timeout) - no answer within O(timeout), while connecting, in the SMTP dialogue or during the handshake;
          or the test did not end within 3 times O(timeout).
        - V(connection_closed) - the peer (often a proxy or firewall) closed or reset the connection.
        - V(smtp_error) - the SMTP server refused the dialogue, or did not speak SMTP.
        - V(starttls_not_offered) - the SMTP server did not offer STARTTLS.
        - V(tls_version) - the server speaks only TLS versions older than O(min_version).
        - V(cert_untrusted) - the certificate's issuer is not trusted (self-signed, unknown CA, TLS-inspecting proxy).
        - V(cert_hostname) - the certificate is not valid for O(host).
        - V(cert_expired) - the certificate (or one in its chain) expired, or is not valid yet.
        - V(tls_error) - any other TLS failure, such as no common cipher or a port that does not speak TLS.
      type: str
      sample: tls_version
    reason:
      description: Why the endpoint failed, as a sentence that says what to do; null when it passed.
      type: str
      sample: >-
        tls12.api.sendgrid.com:443 speaks at best TLS 1.1, older than the required TLS 1.2: the server, or a proxy
        or firewall inspecting TLS in between, must be upgraded.
local:
  description: The TLS stack of the host that ran the test - what to upgrade when a test fails.
  returned: always, unless Ansible rejects the options
  type: dict
  contains:
    openssl_version:
      description: The OpenSSL (or LibreSSL) version Python uses.
      type: str
      sample: OpenSSL 3.0.13 30 Jan 2024
    tls1_2:
      description: Whether that library can speak TLS 1.2.
      type: bool
      sample: true
    tls1_3:
      description: Whether that library can speak TLS 1.3.
      type: bool
      sample: true
    python:
      description: The Python version that ran the module.
      type: str
      sample: 3.11.2
    requests:
      description: The installed version of the C(requests) library, used by SendGrid's Python helper library; null if not installed.
      type: str
      sample: 2.32.3
    urllib3:
      description: The installed version of C(urllib3), which does TLS for C(requests); null if not installed.
      type: str
      sample: 2.2.3
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_endpoint import (
    MODES, TLS_VERSIONS, Prober, endpoint, local_stack, local_supports)

ENDPOINT_KEYS = ('host', 'port', 'mode')


def requested_endpoints(params):
    """The endpoints to test, every field filled in, following the fallbacks DOCUMENTATION describes."""
    defaults = {key: params[key] for key in ENDPOINT_KEYS}
    if params['endpoints'] is None:
        if any(value is not None for value in defaults.values()):
            return [endpoint(**defaults)]
        return [endpoint(mode=mode) for mode in MODES]
    return [endpoint(**{key: item[key] if item[key] is not None else defaults[key] for key in ENDPOINT_KEYS})
            for item in params['endpoints']]


def check_options(params, endpoints):
    """A list of problems with the options, as sentences."""
    problems = []
    if params['endpoints'] == []:
        problems.append('endpoints must not be empty (leave it out to test SendGrid\'s test endpoints)')
    for item in endpoints:
        if not item['host']:
            problems.append('host must not be empty (leave it out for SendGrid\'s test host)')
        if not 1 <= item['port'] <= 65535:
            problems.append('port %d of %s is not a TCP port (1-65535)' % (item['port'], item['host']))
    if params['timeout'] <= 0:
        problems.append('timeout must be a positive number of seconds, got %g' % params['timeout'])
    return problems


def main():
    endpoint_options = dict(host=dict(type='str'), port=dict(type='int'), mode=dict(type='str', choices=list(MODES)))
    module = AnsibleModule(
        argument_spec=dict(
            endpoints=dict(type='list', elements='dict', options=endpoint_options),
            min_version=dict(type='str', choices=list(TLS_VERSIONS), default='1.2'),
            validate_certs=dict(type='bool', default=True),
            ca_path=dict(type='path'),
            timeout=dict(type='float', default=10.0),
            fail_on_unsupported=dict(type='bool', default=True),
            **endpoint_options),
        supports_check_mode=True,
    )
    params = module.params
    local = local_stack()
    endpoints = requested_endpoints(params)
    problems = check_options(params, endpoints)
    if problems:
        module.fail_json(msg='; '.join(problems), local=local)
    if not local_supports(params['min_version']):
        module.fail_json(msg='This host cannot test TLS %s: its Python uses %s, which does not support it. Upgrade OpenSSL '
                         'and Python on this host.' % (params['min_version'], local['openssl_version']), local=local)
    try:
        prober = Prober(min_version=params['min_version'], validate_certs=params['validate_certs'],
                        timeout=params['timeout'], ca_path=params['ca_path'])
    except ValueError as exc:
        module.fail_json(msg=str(exc), local=local)

    results = prober.probe_many(endpoints)
    failed = [result for result in results if not result['supported']]
    outcome = dict(changed=False, supported=not failed, results=results, local=local)
    if failed and params['fail_on_unsupported']:
        module.fail_json(msg='%d of %d endpoints failed the TLS %s test: %s' % (
            len(failed), len(results), params['min_version'], ' '.join(result['reason'] for result in failed)), **outcome)
    module.exit_json(**outcome)


if __name__ == '__main__':
    main()
