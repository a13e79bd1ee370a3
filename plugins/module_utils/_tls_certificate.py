# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""The few fields of a server certificate that tls_check and recipient_tls_info report, read by the ``cryptography``
library: subject and issuer (RFC 4514 strings), not_after (ISO 8601, UTC), days_left and subject_alt_names.

``cryptography`` is a dependency of ansible-core, so it is always there on the controller; an old managed host may
lack it. There :func:`peer_certificate` reports what the standard library can tell: the ``ssl`` module parses a
certificate only after it verified it (``getpeercert()``), so an unverified one has no details at all.

Private to this collection: its names may change at any time.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import traceback
import warnings

from ansible_collections.mailsec.sendgrid.plugins.module_utils._values import ISO_FORMAT, UTC

try:
    from cryptography import x509
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_ERROR = None
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_ERROR = traceback.format_exc()
else:
    # Servers still present such certificates; we only report them. (A filter, not catch_warnings(): probes run in
    # threads, and catch_warnings() is not thread-safe.)
    warnings.filterwarnings('ignore', message="Parsed a serial number which wasn't positive")

FIELDS = ('subject', 'issuer', 'not_after', 'days_left', 'subject_alt_names')

# The attribute names of the ssl module's certificate dict (OpenSSL's long names) as cryptography's
# Name.rfc4514_string() writes them: RFC 4514's short names, else the dotted OID.
_SSL_ATTRIBUTES = {
    'commonName': 'CN', 'localityName': 'L', 'stateOrProvinceName': 'ST', 'organizationName': 'O',
    'organizationalUnitName': 'OU', 'countryName': 'C', 'streetAddress': 'STREET', 'domainComponent': 'DC',
    'userId': 'UID', 'emailAddress': '1.2.840.113549.1.9.1', 'serialNumber': '2.5.4.5', 'surname': '2.5.4.4',
    'givenName': '2.5.4.42', 'title': '2.5.4.12', 'businessCategory': '2.5.4.15', 'postalCode': '2.5.4.17',
    'organizationIdentifier': '2.5.4.97', 'jurisdictionLocalityName': '1.3.6.1.4.1.311.60.2.1.1',
    'jurisdictionStateOrProvinceName': '1.3.6.1.4.1.311.60.2.1.2',
    'jurisdictionCountryName': '1.3.6.1.4.1.311.60.2.1.3',
}
# RFC 4514 section 2.4: characters escaped with a backslash anywhere in a value.
_SPECIAL = dict((char, '\\' + char) for char in '\\"+,;<>')
_SPECIAL['\0'] = '\\00'


def certificate_info(der, now=None):
    """subject, issuer, not_after, days_left and subject_alt_names of a DER certificate, read by cryptography; None
    when there is no certificate, it cannot be read, or cryptography is not installed."""
    if not der or not HAS_CRYPTOGRAPHY:
        return None
    try:
        cert = _load(der)
        not_after = getattr(cert, 'not_valid_after_utc', None)  # cryptography 42 and later
        if not_after is None:
            not_after = cert.not_valid_after.replace(tzinfo=UTC)  # naive, in UTC
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:  # version 1 certificates have no extensions at all
            names = []
        alt_names = [str(name.value) for name in names if isinstance(name, (x509.DNSName, x509.IPAddress))]
        return _fields(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), not_after, alt_names, now)
    except Exception:  # whatever a damaged certificate makes this cryptography version raise: it cannot be read
        return None


def peer_certificate(tls, now=None):
    """The certificate the peer of the TLS socket `tls` presented, as certificate_info() plus `parsed_by`, the reader
    that could read it: "cryptography", else "ssl" (the standard library, only for a certificate it verified); None
    without a certificate or when cryptography could not read it.

    Without cryptography, an unverified certificate has no details: every field is None, `parsed_by` too."""
    der = tls.getpeercert(binary_form=True)
    if not der:
        return None
    info = certificate_info(der, now)
    if info is not None:
        return dict(info, parsed_by='cryptography')
    info = _ssl_fields(tls.getpeercert(), now)
    if info is not None:
        return dict(info, parsed_by='ssl')
    if HAS_CRYPTOGRAPHY:
        return None
    return dict(dict.fromkeys(FIELDS), parsed_by=None)


def _load(der):
    try:
        return x509.load_der_x509_certificate(der)
    except TypeError:  # cryptography before 3.1 needs a backend
        from cryptography.hazmat.backends import default_backend
        return x509.load_der_x509_certificate(der, default_backend())


def _fields(subject, issuer, not_after, alt_names, now):
    now = now or datetime.datetime.now(UTC)
    return dict(
        subject=subject,
        issuer=issuer,
        not_after=not_after.strftime(ISO_FORMAT),
        # Rounded toward zero, so that a certificate expired 3.5 days ago is "3 days" ago, as people count.
        days_left=int((not_after - now).total_seconds() / 86400),
        subject_alt_names=alt_names,
    )


def _ssl_fields(cert, now):
    """certificate_info() of the ssl module's dict of a verified certificate; None when it is empty (the certificate
    was not verified) or incomplete."""
    if not cert or 'notAfter' not in cert:
        return None
    try:
        not_after = datetime.datetime.fromtimestamp(ssl.cert_time_to_seconds(cert['notAfter']), UTC)
        alt_names = [value if kind == 'DNS' else _ip_text(value)
                     for kind, value in cert.get('subjectAltName', ()) if kind in ('DNS', 'IP Address')]
        return _fields(_ssl_name(cert.get('subject', ())), _ssl_name(cert.get('issuer', ())), not_after, alt_names, now)
    except (ValueError, TypeError, KeyError, OverflowError):
        return None


def _ssl_name(rdns):
    """A name of the ssl module's dict as RFC 4514 writes it: the most specific RDN first, as cryptography does."""
    return ','.join('+'.join('%s=%s' % (_SSL_ATTRIBUTES.get(key, key), _escape(value)) for key, value in rdn)
                    for rdn in reversed(rdns))


def _escape(value):
    """An attribute value escaped as RFC 4514 section 2.4 says (and cryptography does)."""
    value = ''.join(_SPECIAL.get(char, char) for char in value)
    if value.startswith(('#', ' ')):
        value = '\\' + value
    if value.endswith(' '):
        value = value[:-1] + '\\ '
    return value


def _ip_text(value):
    """'2001:DB8:0:0:0:0:0:25\\n' (as older Pythons write an IPv6 address) -> '2001:db8::25'."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value.strip()
