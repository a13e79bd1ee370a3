# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""Recipient MX profiles for recipient_tls_info: what a sending MTA such as SendGrid's would find at a recipient's
MX - STARTTLS, each TLS version that can be negotiated, and whether the certificate would pass verification.

Unlike the endpoint test of tls_check, :class:`MXProber` connects to an address the caller resolved (with its own DNS
servers) and checks the certificate against the MX name. Certificates are read by ``cryptography`` (see
_tls_certificate), which recipient_tls_info requires.

Private to this collection: its names may change at any time.
"""

from __future__ import annotations

import ssl
import warnings

from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_certificate import certificate_info
from ansible_collections.mailsec.sendgrid.plugins.module_utils._values import utc_now
from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_common import (
    TIMEOUTS, TLS_PROTOCOLS, Deadline, PeerClosed, ProbeFailure, Session, over_time, ssl_message)

# The overall time limit of one recipient MX host, in multiples of `timeout` (the wait for one network step): its five
# connections (one per TLS version, one verifying the certificate).
MX_LIMIT_STEPS = 4
MX_TLS_VERSIONS = tuple(TLS_PROTOCOLS)
# X509_V_FLAG_NO_CHECK_TIME: verify the chain without its dates; expiry is reported on its own.
_NO_CHECK_TIME = 0x200000
_UNREACHABLE_CODES = ('timeout', 'refused', 'unreachable')
_STALLED = 'stalled'  # MXProber._handshake: the handshake got no answer within one step (not a refusal)


def mx_context(tls_version=None, ca_path=None, verify=False):
    """A client context for recipient MX tests: limited to `tls_version` ("1.0".."1.3", min = max) when given,
    with every cipher allowed (TLS 1.0/1.1 need security level 0 on OpenSSL 3); with `verify`, checking the
    chain against `ca_path` (else the system store) but neither the dates nor the name. ValueError when the
    CA file cannot be loaded or this host cannot offer the version."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if verify:
        try:
            if ca_path:
                context.load_verify_locations(cafile=ca_path)
            else:
                context.load_default_certs()
        except (OSError, ssl.SSLError) as exc:
            raise ValueError('Cannot load the CA bundle ca_path=%s: %s' % (ca_path, ssl_message(exc))) from exc
        context.verify_mode = ssl.CERT_REQUIRED
        context.verify_flags |= _NO_CHECK_TIME
    else:
        context.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            if tls_version:
                context.minimum_version = TLS_PROTOCOLS[tls_version]
                context.maximum_version = TLS_PROTOCOLS[tls_version]
        context.set_ciphers('DEFAULT:@SECLEVEL=0')
    except (ValueError, ssl.SSLError) as exc:
        raise ValueError('This host cannot offer TLS %s: %s' % (tls_version, ssl_message(exc))) from exc
    return context


def name_matches(name, alt_names):
    """Whether a DNS `name` is covered by a certificate's subject alternative names (RFC 6125: a wildcard
    only as the whole left-most label, matching exactly one label)."""
    name = name.rstrip('.').lower()
    labels = name.split('.')
    for pattern in alt_names or ():
        pattern = pattern.rstrip('.').lower()
        if pattern == name:
            return True
        if pattern.startswith('*.') and len(labels) > 2 and pattern[2:] == '.'.join(labels[1:]):
            return True
    return False


class MXProber:
    """Profiles recipient MX servers: `profile(name, address)` never raises for network or TLS trouble.

    Builds its contexts once (thread-safe to share); ValueError when `ca_path` cannot be loaded.
    """

    def __init__(self, port=25, timeout=10.0, ca_path=None):
        self.port = port
        self.timeout = timeout
        self.contexts = {}
        for tls_version in MX_TLS_VERSIONS:
            try:
                self.contexts[tls_version] = mx_context(tls_version)
            except ValueError:
                self.contexts[tls_version] = None  # this host cannot test that version
        self.verifying = {tls_version: mx_context(tls_version, ca_path=ca_path, verify=True)
                          for tls_version, context in self.contexts.items() if context is not None}

    def profile(self, name, address, until=None):
        """{starttls_offered, tls_versions, tls_best, certificate, error_code, error} of the MX `name` at `address`.

        error_code is None, or one of the tls_check reason codes when the MX could not be tested to the end
        (timeout, refused, unreachable: this host cannot reach it; smtp_error, connection_closed, tls_error).
        All connections to the MX share one deadline: MX_LIMIT_STEPS times timeout from now, or `until` (a
        time.monotonic() value) when that comes first; past it, error_code is timeout. A TLS handshake that stalls
        leaves its version null (not tested) rather than failed; if no version succeeded, error_code is timeout.
        """
        deadline = Deadline(MX_LIMIT_STEPS * self.timeout, self.timeout, until)
        result = dict(host=name, address=address, port=self.port, greeting=None, starttls_offered=None,
                      tls_versions={tls_version: None for tls_version in MX_TLS_VERSIONS}, tls_best=None,
                      certificate=None, error_code=None, error=None)
        der = None
        stalled = []
        for tls_version in reversed(MX_TLS_VERSIONS):
            context = self.contexts[tls_version]
            if context is None:
                continue
            outcome = self._handshake(name, address, context, result, deadline)
            if outcome == 'stop':
                return result
            if outcome == _STALLED:
                stalled.append('TLS ' + tls_version)
                continue
            result['tls_versions'][tls_version] = outcome is not None
            if outcome is not None and der is None:
                der = outcome
                result['tls_best'] = tls_version
        if der is None:
            if stalled:
                # A handshake that never ends is not a refusal: a middlebox may be holding the connection.
                result.update(error_code='timeout', error='%s offers STARTTLS, but the TLS handshake (%s) did not '
                              'complete within %g seconds: a firewall or proxy in between may hold the connection.' % (
                                  self._where(name, address), ', '.join(stalled), self.timeout))
            elif not result['error_code']:
                result.update(error_code='tls_error', error='%s offers STARTTLS, but no TLS handshake succeeded with '
                              'any version from TLS 1.0 to 1.3.' % self._where(name, address))
            return result
        info = certificate_info(der) or {}
        trusted, why = self._trusted(name, address, result['tls_best'], deadline)
        result['certificate'] = dict(
            info, trusted=trusted, untrusted_reason=why,
            name_matches=name_matches(name, info.get('subject_alt_names')),
            expired=bool(info) and info['not_after'] <= utc_now())
        return result

    def _where(self, name, address):
        return '%s (%s) port %d' % (name, address, self.port)

    def _handshake(self, name, address, context, result, deadline):
        """The server's DER certificate after STARTTLS and a handshake under `context`; None when that handshake
        failed; _STALLED when it did not complete within one step; 'stop' when the MX cannot be tested any further
        (the reason is in result)."""
        where = self._where(name, address)
        session = Session(name, self.port, 'smtp_starttls', deadline, result, address=address, where=where)
        try:
            sock = session.connect()
        except TIMEOUTS:
            if deadline.passed:
                result.update(error_code='timeout', error=over_time(session, 'MX host', MX_LIMIT_STEPS))
            else:
                result.update(error_code='timeout', error='No answer from %s within %g seconds: port %d is probably '
                              'blocked between this host and the MX (many networks block outgoing port 25).' % (
                                  where, self.timeout, self.port))
            return 'stop'
        except ConnectionRefusedError:
            result.update(error_code='refused', error='The connection to %s was refused: port %d may be blocked from '
                          'this host, or nothing listens there.' % (where, self.port))
            return 'stop'
        except OSError as exc:
            result.update(error_code='unreachable', error='%s cannot be reached from this host (%s).' % (
                where, exc.strerror or exc))
            return 'stop'
        try:
            if not session.starttls_prelude(sock):
                return 'stop'
            with session.handshake(sock, context) as tls:
                return tls.getpeercert(binary_form=True) or b''
        except ssl.SSLError as exc:
            if isinstance(exc, ssl.SSLCertVerificationError):
                result['verify_error'] = exc.verify_message or ssl_message(exc)
            return None
        except TIMEOUTS:
            if deadline.passed:
                result.update(error_code='timeout', error=over_time(session, 'MX host', MX_LIMIT_STEPS))
                return 'stop'
            if session.phase == 'handshake':
                return _STALLED
            result.update(error_code='timeout', error='%s accepted the connection but stopped answering (%s) within '
                          '%g seconds: a firewall or proxy in between may hold port %d.' % (
                              where, session.phase, self.timeout, self.port))
            return 'stop'
        except ProbeFailure as failure:
            result.update(error_code=failure.code, error=failure.reason)
            return 'stop'
        except (OSError, PeerClosed) as exc:
            if session.phase == 'handshake':
                return None
            result.update(error_code='connection_closed', error='%s closed the connection during the SMTP %s (%s).' % (
                where, session.phase, exc.__class__.__name__))
            return 'stop'
        finally:
            sock.close()

    def _trusted(self, name, address, tls_version, deadline):
        """(trusted, why not) of the server's chain, by one more handshake that verifies it (dates excepted);
        trusted is None when that handshake could not be completed."""
        facts = {}
        outcome = self._handshake(name, address, self.verifying[tls_version], facts, deadline)
        if outcome == 'stop':
            return None, facts.get('error')
        if outcome == _STALLED:
            return None, 'the TLS handshake that verifies it did not complete within %g seconds' % self.timeout
        if outcome is not None:
            return True, None
        return False, facts.get('verify_error') or 'the TLS handshake failed when the certificate was verified'


def mx_unreachable(profile):
    """Whether this host could not talk to the MX at all (so that a verdict about it is unknown)."""
    return profile['error_code'] in _UNREACHABLE_CODES
