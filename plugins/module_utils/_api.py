# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""The one HTTP client of the collection.

Every plugin (modules, the fleet action, the inventory plugin) talks to SendGrid
through :class:`SendGridClient`, so connection options, TLS policy, retries and
error messages behave the same everywhere. Nothing here imports Ansible's module
machinery: the inventory and action plugins use it on the controller too. Masking secrets is
``_redact``'s, and how a request travels (TLS contexts, the deadline watchdog, the bounded read) ``_transport``'s.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import math
import random
import re
import time
from urllib.parse import urlsplit

from ansible.module_utils.basic import env_fallback

from ansible_collections.mailsec.sendgrid.plugins.module_utils._pacing import Pace, RequestWaits, parse_reset
from ansible_collections.mailsec.sendgrid.plugins.module_utils._redact import redact
from ansible_collections.mailsec.sendgrid.plugins.module_utils._text import escape_text, shorten
# The watchdog, its deadline and the bounded body read are the transport's; the client's retry loop is their one user.
from ansible_collections.mailsec.sendgrid.plugins.module_utils._transport import (
    _CURRENT, _WATCHDOG, HAS_REQUESTS, REQUESTS_IMPORT_ERROR, _BearerAuth, _DeadlineAdapter, _DeadlineExpired,
    _read_body, _TLS12Adapter)

try:
    import requests
except ImportError:  # pragma: no cover - HAS_REQUESTS is false then, and the client refuses to start
    pass

COLLECTION_VERSION = '0.1.0'
USER_AGENT = 'mailsec.sendgrid/%s (Ansible collection)' % COLLECTION_VERSION

REGION_URLS = {
    'global': 'https://api.sendgrid.com',
    'eu': 'https://api.eu.sendgrid.com',
}
DEFAULT_REGION = 'global'

# Statuses worth another try: rate limiting and transient server/proxy trouble.
RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))
# Upper bound of any single wait, whatever a server asks for; with max_retries
# this bounds the total time one request can spend waiting.
MAX_WAIT = 60.0
BACKOFF_BASE = 0.5

# Bounds of what a server (SendGrid, a proxy, or whatever answers at api_url) can make the client hold or show.
# A settings answer is a few hundred bytes and a page of 500 subusers or blocks under 100 KiB: 4 MiB leaves room.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# Of an error answer only the start is read: its message is shown cut anyway.
MAX_ERROR_BODY_BYTES = 64 * 1024
# Pages one paged read may take (200 pages of 500: 100,000 items) unless its caller raises it (the max_pages options).
MAX_PAGES = 200
# Bytes a paged read may take per page on average (so 50 MiB for 200 pages): a page of 500 subusers or blocks is
# 50 to 100 KiB, and a server that sends pages near MAX_RESPONSE_BYTES cannot fill the memory with max_pages of them.
MAX_PAGE_AVERAGE_BYTES = 256 * 1024
# Characters of one message from a server (errors[].message, a non-JSON excerpt), of all of them together, and how
# many messages are shown; counted after masking and escaping, so a cut never leaves part of a key.
MAX_MESSAGE_CHARS = 300
MAX_MESSAGES_CHARS = 1000
MAX_MESSAGES = 10

CONNECTION_ARGUMENT_SPEC = dict(
    api_key=dict(type='str', no_log=True, fallback=(env_fallback, ['SENDGRID_API_KEY'])),
    region=dict(type='str', choices=list(REGION_URLS), default=DEFAULT_REGION, fallback=(env_fallback, ['SENDGRID_REGION'])),
    api_url=dict(type='str', fallback=(env_fallback, ['SENDGRID_API_URL'])),
    on_behalf_of=dict(type='str'),
    timeout=dict(type='float', default=30.0),
    validate_certs=dict(type='bool', default=True),
    max_retries=dict(type='int', default=5),
)


def _sleep(seconds):
    time.sleep(seconds)


class SendGridError(Exception):
    """Anything that went wrong talking to SendGrid, as one readable sentence."""


class SendGridConfigError(SendGridError):
    """Bad connection options: raised before any HTTP request is made."""


class SendGridAPIError(SendGridError):
    """SendGrid (or something in between) answered with an error status."""

    def __init__(self, status, reason, method, path, on_behalf_of, messages, retries=0):
        self.status = status
        self.method = method
        self.path = path
        self.on_behalf_of = on_behalf_of
        self.messages = messages
        self.retries = retries
        text = 'SendGrid API error: HTTP %s%s on %s' % (status, ' %s' % reason if reason else '', request_label(method, path, on_behalf_of))
        if messages:
            text += ': ' + shorten('; '.join(messages), MAX_MESSAGES_CHARS)
        if retries:
            text += ' (after %d retries)' % retries
        super().__init__(text)


def is_loopback(host):
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_base_url(region=None, api_url=None, prefix=''):
    """Base URL from api_url (wins) or region; refuses plain HTTP except to this machine."""
    if api_url:
        parts = urlsplit(api_url)
        # First, and without echoing the URL: the messages below print it, and it would carry the password.
        # (requests would also send user:password as Basic auth instead of the key.)
        if parts.username is not None or parts.password is not None:
            raise SendGridConfigError("%sapi_url must not carry a user name or password (user:password@); the API key is "
                                      "the only credential" % prefix)
        if parts.scheme not in ('https', 'http') or not parts.hostname:
            raise SendGridConfigError(
                "%sapi_url must be an https:// URL (http:// only for a loopback host such as 127.0.0.1), got %r" % (prefix, api_url))
        if parts.scheme == 'http' and not is_loopback(parts.hostname):
            raise SendGridConfigError(
                "%sapi_url %r uses plain http:// to a host that is not loopback; the API key would cross the network "
                "unencrypted. Use https://, or http:// only to 127.0.0.1, ::1 or localhost" % (prefix, api_url))
        if parts.query or parts.fragment:
            raise SendGridConfigError("%sapi_url must not carry a query string or fragment, got %r" % (prefix, api_url))
        return api_url.rstrip('/')
    region = region or DEFAULT_REGION
    check_region(region, prefix)
    return REGION_URLS[region]


def check_region(region, prefix=''):
    if region not in REGION_URLS:
        raise SendGridConfigError("%sregion must be one of %s, got %r" % (prefix, ', '.join(REGION_URLS), region))


def check_connection_params(params, prefix=''):
    """Validate the shared connection options; raise SendGridConfigError naming the option.

    Called by every plugin before its first request so that bad input never costs an HTTP call.
    ``prefix`` names the options as the caller's users know them (the role's variables).
    """
    normalize_api_key(params.get('api_key'), prefix + 'api_key')
    # Here too, not only in resolve_base_url: a wrong region is refused even where api_url wins over it.
    if params.get('region') not in (None, ''):
        check_region(params['region'], prefix)
    resolve_base_url(params.get('region'), params.get('api_url'), prefix)
    check_on_behalf_of(params.get('on_behalf_of'), prefix + 'on_behalf_of')
    timeout = params.get('timeout')
    # inf passes "> 0" but overflows the socket layer (an OverflowError, not a clean failure); nan fails "> 0".
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise SendGridConfigError('%stimeout must be a number of seconds greater than 0, got %r' % (prefix, timeout))
    retries = params.get('max_retries')
    if retries is not None and not 0 <= retries <= 100:
        raise SendGridConfigError('%smax_retries must be an integer from 0 to 100, got %r' % (prefix, retries))


# What a SendGrid key may hold once surrounding whitespace is gone: printable ASCII, nothing else.
_KEY_CHARACTERS = re.compile(r'[!-~]+')


def normalize_api_key(value, name='api_key'):
    """The key as SendGrid knows it: surrounding whitespace removed, anything else unusual refused.

    A vault file, a YAML block scalar or ``echo KEY | ansible-vault encrypt_string`` leave a newline at the
    end; SendGrid keys never contain whitespace, so stripping is safe. Any other control, space or
    non-ASCII character would make the HTTP layer fail with the header (the key) in its message: refused
    here, naming the character's code point only, never the value.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SendGridConfigError('%s is required: set it or the SENDGRID_API_KEY environment variable' % name)
    if not isinstance(value, str):
        raise SendGridConfigError('%s must be a string, got %s' % (name, type(value).__name__))
    key = value.strip()
    if not _KEY_CHARACTERS.fullmatch(key):
        bad = sorted({'U+%04X' % ord(c) for c in key if not '!' <= c <= '~'})
        raise SendGridConfigError(
            '%s contains %s: a SendGrid API key is printable ASCII without spaces or control characters '
            '(surrounding whitespace is removed; the value is not shown)' % (name, ', '.join(bad)))
    return key


def check_concurrency(value, name='concurrency'):
    """How many accounts a batch works on at once: an integer from 1 to 64 (ValueError names the option)."""
    try:
        if isinstance(value, (bool, float)):
            raise ValueError
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError('%s must be an integer from 1 to 64, got %r' % (name, value))
    if not 1 <= number <= 64:
        raise ValueError('%s must be an integer from 1 to 64, got %d' % (name, number))
    return number


def check_on_behalf_of(value, name):
    """Refuse (SendGridConfigError naming ``name``) what cannot be an account: empty, padded, or holding a control,
    format (bidi, zero-width) or other non-printable character, which would travel in the on-behalf-of header."""
    if value is None:
        return
    if not isinstance(value, str) or not value.strip():
        raise SendGridConfigError(
            '%s must be a subuser username or "account-id <id>"; leave it out to address the parent account '
            '(an empty string is not allowed)' % name)
    if value != value.strip() or any(c in value for c in '\r\n'):
        raise SendGridConfigError('%s must not contain leading/trailing spaces or line breaks, got %r' % (name, value))
    if not value.isprintable():
        bad = sorted({'U+%04X' % ord(c) for c in value if not c.isprintable()})
        raise SendGridConfigError(
            '%s contains %s: a subuser username or "account-id <id>" holds no control, format or other non-printable '
            'character, got "%s"' % (name, ', '.join(bad), escape_text(value)))


# The pause after a 429 and the pacing from X-RateLimit-* shared by every worker of one client (_pacing.py): the
# account's rate limit is exhausted, not one request's, so every worker waits until it resets.
Throttle = Pace


def _retry_after(response):
    """Seconds a 429 asks us to wait: Retry-After (seconds or HTTP date), else X-RateLimit-Reset (epoch or seconds)."""
    value = response.headers.get('Retry-After')
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
            except (TypeError, ValueError, IndexError, OverflowError):
                pass
    now = time.time()
    reset = parse_reset(response.headers.get('X-RateLimit-Reset'), now)
    return None if reset is None else max(0.0, reset - now)


def _shown(text, secrets=(), limit=MAX_MESSAGE_CHARS):
    """A server's words as people may see them: masked first, then control and format characters escaped, then cut
    (cutting first could leave the start of a key that the masking no longer recognises)."""
    return shorten(escape_text(redact(text if isinstance(text, str) else str(text), secrets)), limit)


def _excerpt(text, limit=200, secrets=()):
    """``text`` on one line, masked, escaped and cut to ``limit`` characters."""
    return _shown(' '.join(redact(text, secrets).split()), secrets, limit)


def _body_text(response, body):
    try:
        return body.decode(response.encoding or 'utf-8', 'replace')
    except LookupError:  # a charset Python does not know
        return body.decode('utf-8', 'replace')


def _json(body):
    """The decoded JSON body; ValueError when it is not JSON (nested too deeply for the parser counts as not JSON)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError('nested too deeply') from None


def _error_messages(response, body, secrets=()):
    """SendGrid's own words from an error body: errors[].message (with field), else a short body excerpt.

    At most MAX_MESSAGES, each masked, escaped and cut to MAX_MESSAGE_CHARS."""
    try:
        data = _json(body)
    except ValueError:
        data = None
    messages = []
    if isinstance(data, dict) and isinstance(data.get('errors'), list):
        items = [item for item in data['errors'] if isinstance(item, dict)]
        for item in items:
            message = item.get('message') or ''
            if item.get('field'):
                message = '%s (field: %s)' % (message, item['field']) if message else 'field: %s' % item['field']
            if message:
                messages.append(_shown(message, secrets))
        if len(messages) > MAX_MESSAGES:
            messages[MAX_MESSAGES:] = ['and %d more messages' % (len(messages) - MAX_MESSAGES)]
    if not messages:
        text = _body_text(response, body).strip()
        if text:
            kind = response.headers.get('Content-Type', 'unknown content type')
            messages.append('non-JSON answer (%s): %s' % (_shown(kind.split(';')[0], secrets, 100), _excerpt(text, 200, secrets)))
    return messages


class SendGridClient:
    """Talks to SendGrid's v3 API with the collection's connection options.

    Thread-safe: the fleet path shares one client (one connection pool, one
    rate-limit pause) between its workers.
    """

    def __init__(self, api_key, region=None, api_url=None, timeout=30.0, validate_certs=True, max_retries=5,
                 pool_size=10, sleep=None, pace=None):
        check_connection_params(dict(api_key=api_key, region=region, api_url=api_url, timeout=timeout,
                                     max_retries=max_retries))
        # The raw value too: it may differ from the key sent (a trailing newline) and is what a user would grep for.
        self._secrets = (api_key, normalize_api_key(api_key))
        if not HAS_REQUESTS:
            raise SendGridConfigError('the Python library "requests" is required')
        self.base_url = resolve_base_url(region, api_url)
        self.timeout = timeout
        self.max_retries = max_retries
        # pace: the Pace of the role's per-subuser mode, shared by the run's worker processes; else this client's own.
        self.throttle = pace or Pace()
        # Looked up at call time so tests can observe (and skip) the waits.
        self._sleep = sleep or _sleep
        self._session = requests.Session()
        # Proxies and CA bundles from the environment are honoured (corporate HTTPS proxies, custom CAs), but
        # never a .netrc (see _BearerAuth), and no proxy for a loopback URL: plain http:// is only allowed there
        # because the key stays on this machine, and a proxy from HTTP_PROXY would receive it in clear.
        self._session.trust_env = True
        self._session.auth = _BearerAuth(self._secrets[1])
        self._proxies = None
        if is_loopback(urlsplit(self.base_url).hostname):
            self._proxies = dict.fromkeys(('http', 'https', 'all', 'http://', 'https://', 'all://'))
        adapter = _TLS12Adapter(validate_certs=validate_certs, pool_connections=2, pool_maxsize=max(pool_size, 1))
        self._session.mount('https://', adapter)
        self._session.mount('http://', _DeadlineAdapter(pool_connections=2, pool_maxsize=max(pool_size, 1)))
        self._session.verify = validate_certs
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's verify=False (they are set in many
        # images and execution environments); only a per-request verify=False wins. True stays None so the bundles apply.
        self._verify = None if validate_certs else False
        self._session.headers.update({
            'Accept': 'application/json',
            'User-Agent': USER_AGENT,
        })
        if not validate_certs:
            # The module reports the risk once as an Ansible warning; urllib3's per-request warning is noise.
            import urllib3
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def close(self):
        self._session.close()

    def redact(self, text):
        """``text`` without this client's key (see ``_redact.redact``)."""
        return redact(text, self._secrets)

    def request(self, method, path, on_behalf_of=None, params=None, body=None):
        """Send one API request (with retries) and return the decoded JSON answer.

        Every error leaves through ``redact``: a server may echo the Authorization header in its error body,
        and an exception from the HTTP layer may quote a header value.
        """
        return self._sized_request(method, path, on_behalf_of, params, body)[0]

    def _sized_request(self, method, path, on_behalf_of=None, params=None, body=None):
        """``request``, returning (decoded answer, size of the answer in bytes)."""
        try:
            check_on_behalf_of(on_behalf_of, 'on_behalf_of')
            return self._request(method, path, on_behalf_of, params, body)
        except SendGridError as exc:
            exc.args = (self.redact(str(exc)),)
            if isinstance(exc, SendGridAPIError):
                exc.messages = [self.redact(message) for message in exc.messages]
            raise
        except (ValueError, UnicodeError, TypeError) as exc:
            # Not a transport failure: a header or body the HTTP layer refused to encode. Its text may quote the
            # header, so only the class name and a masked excerpt; "from None" keeps the original off any traceback.
            raise SendGridError(self.redact('SendGrid API request not sent: %s on %s: %s' % (
                type(exc).__name__, request_label(method, self.base_url + path, on_behalf_of), _excerpt(str(exc), 200, self._secrets)))) from None

    def _request(self, method, path, on_behalf_of, params, body):
        headers = {}
        if on_behalf_of:
            headers['on-behalf-of'] = on_behalf_of
        url = self.base_url + path
        retries = 0
        waits = RequestWaits()  # pacing: what this request waited for the rate limit (not counted in max_retries)
        while True:
            waits.add(self.throttle.before(self._sleep, waits.patient))
            # Each attempt has its own deadline: the connection, the headers and the whole body within `timeout`.
            deadline = _WATCHDOG.start(self.timeout)
            _CURRENT.deadline = deadline
            response = None
            answer, cut = b'', False
            try:
                response = self._session.request(
                    method, url, params=params, json=body, headers=headers, timeout=self.timeout, allow_redirects=False,
                    verify=self._verify, proxies=self._proxies, stream=True)
                status = response.status_code
                # pacing: every answer's X-RateLimit-* headers; a 429 that says when its window resets is waited out
                # without spending max_retries (up to RATE_LIMIT_WAITS of them and RATE_LIMIT_PATIENCE seconds).
                reset_wait = self.throttle.after(response.headers, status)
                excused = status == 429 and waits.excuse(reset_wait)
                if status in RETRY_STATUSES and (excused or retries < self.max_retries):
                    wait = _retry_after(response) if status == 429 else None
                else:
                    wait = None
                    # Of an error answer, its start is enough (its message is cut anyway): read that much, whatever its size.
                    answer, cut = _read_body(response, MAX_RESPONSE_BYTES, deadline) if status < 300 else _read_body(
                        response, MAX_ERROR_BODY_BYTES, deadline, refuse_declared=False)
                if deadline.expired:
                    # Cut by the watchdog: what was read may look complete (headers cut short end like headers).
                    raise _DeadlineExpired()
            except (requests.exceptions.RequestException, _DeadlineExpired) as exc:
                timed_out = deadline.expired or isinstance(exc, _DeadlineExpired)
                if retries < self.max_retries and (timed_out or _is_retryable_exception(exc)):
                    self._sleep(self._backoff(retries))
                    retries += 1
                    continue
                if timed_out:
                    raise SendGridError(_describe_deadline(deadline, method, path, self.base_url, on_behalf_of, retries)) from None
                raise SendGridError(_describe_exception(exc, method, path, self.base_url, on_behalf_of, retries,
                                                        self._secrets)) from None
            finally:
                _CURRENT.deadline = None
                _WATCHDOG.stop(deadline)
                if response is not None:
                    response.close()
            if status in RETRY_STATUSES and (excused or retries < self.max_retries):
                wait = min(MAX_WAIT, self._backoff(retries) if wait is None else wait)
                if status == 429:
                    self.throttle.pause(wait)
                else:
                    self._sleep(wait)
                retries += 0 if excused else 1
                continue
            if cut and status < 300:
                raise SendGridError(_describe_too_large(method, path, on_behalf_of))
            return self._decode(response, answer, method, path, on_behalf_of, retries), len(answer)

    def _backoff(self, attempt):
        # Exponential with full jitter, so that workers that failed together do not retry together.
        return min(MAX_WAIT, BACKOFF_BASE * (2 ** attempt)) * random.uniform(0.5, 1.0)

    def _decode(self, response, body, method, path, on_behalf_of, retries):
        status = response.status_code
        if 300 <= status < 400:
            # Never follow: the Authorization header must not travel to wherever we are sent.
            raise SendGridAPIError(status, response.reason, method, path, on_behalf_of, [
                'redirect to %s refused (the API key is never sent to another location)' % _shown(response.headers.get(
                    'Location', 'an unnamed location'), self._secrets)], retries)
        if status >= 400:
            messages = _error_messages(response, body, self._secrets)
            if status == 429:
                messages.append('rate limit still exceeded after %d retries' % retries)
            # A 429's retries are in its message already; a 5xx says how often it was tried, as transport errors do.
            raise SendGridAPIError(status, response.reason, method, path, on_behalf_of, messages,
                                   0 if status == 429 else retries)
        if not body:
            raise SendGridAPIError(status, response.reason, method, path, on_behalf_of,
                                   ['empty answer where a JSON body was expected'], retries)
        try:
            return _json(body)
        except ValueError:
            raise SendGridAPIError(status, response.reason, method, path, on_behalf_of, [
                'answer is not valid JSON (%s): %s' % (
                    _shown(response.headers.get('Content-Type', 'no content type').split(';')[0], self._secrets, 100),
                    _excerpt(_body_text(response, body), 200, self._secrets))],
                retries)

    def paginate(self, path, params=None, limit=500, on_behalf_of=None, max_pages=MAX_PAGES):
        """Yield the items of a list endpoint paged with limit/offset, until a short page.

        At most ``max_pages`` requests: a server that keeps answering full pages (or the same page again, which
        is refused at once) ends in a SendGridError naming the limit, not in a loop that eats the machine's memory.
        """
        if max_pages < 1:
            raise SendGridConfigError('max_pages must be an integer of 1 or more, got %r' % (max_pages,))
        offset = 0
        previous = None
        # All pages together are bounded too: each page may be up to MAX_RESPONSE_BYTES, but max_pages of them are
        # not kept in memory; a page of 500 real items is well under MAX_PAGE_AVERAGE_BYTES.
        budget = max_pages * MAX_PAGE_AVERAGE_BYTES
        for _number in range(max_pages):
            page_params = dict(params or {}, limit=limit, offset=offset)
            page, size = self._sized_request('GET', path, on_behalf_of=on_behalf_of, params=page_params)
            budget -= size
            if budget < 0:
                raise SendGridError(
                    '%s: the pages so far hold more than %d MiB (max_pages x %d KiB on average); stopped. If the '
                    'account really holds that much, raise the max_pages option' % (
                        request_label('GET', path, on_behalf_of), max_pages * MAX_PAGE_AVERAGE_BYTES // 2 ** 20, MAX_PAGE_AVERAGE_BYTES // 1024))
            if not isinstance(page, list):
                raise SendGridError('%s answered %s where a JSON list was expected' % (request_label('GET', path), type(page).__name__))
            if len(page) >= limit and page == previous:
                raise SendGridError(
                    '%s answered the same page of %d items at offset %d as at offset %d: the server ignores the '
                    'offset, so the list would never end; stopped' % (request_label('GET', path, on_behalf_of), len(page), offset, offset - limit))
            yield from page
            if len(page) < limit:
                return
            previous = page
            offset += limit
        raise SendGridError(
            '%s: still full pages after %d pages of %d items (the page cap, max_pages=%d); stopped. If the '
            'account really holds more, raise the max_pages option' % (request_label('GET', path, on_behalf_of), max_pages, limit, max_pages))


def request_label(method, url, on_behalf_of=None):
    """How every message names a request: "METHOD url", and the account when it is made on behalf of one."""
    return '%s %s%s' % (method, url, ' (on behalf of %s)' % on_behalf_of if on_behalf_of else '')


def _describe_too_large(method, path, on_behalf_of):
    return ('SendGrid API answer refused: %s answered more than %d MiB, the limit of one answer (settings and pages '
            'of 500 items are far smaller; the answer was not read further)' % (
                request_label(method, path, on_behalf_of), MAX_RESPONSE_BYTES // (1024 * 1024)))


def _describe_deadline(deadline, method, path, base_url, on_behalf_of, retries):
    text = ('SendGrid API unreachable: timed out on %s: no complete answer within %g s (timeout bounds the '
            'connection and the whole answer)' % (request_label(method, base_url + path, on_behalf_of), deadline.seconds))
    if retries:
        text += ' (after %d retries)' % retries
    return text


def _is_retryable_exception(exc):
    # A TLS or certificate failure will not heal by retrying; a reset or timeout may.
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                            requests.exceptions.ChunkedEncodingError))


# urllib3 prefixes its reasons with the pool or connection ("HTTPConnectionPool(host='x', port=443): "); the URL is
# named in our own words already.
_POOL_PREFIX = re.compile(r"^HTTPS?Connection(?:Pool)?\(host=[^)]*\): ")


def _root_reason(exc):
    """The innermost reason of a requests exception: "[Errno 111] Connection refused", not three nested wrappers."""
    reason = exc.args[0] if exc.args else exc
    # MaxRetryError (urllib3 retries are off, so it only wraps the one failure) carries the real cause in .reason.
    reason = getattr(reason, 'reason', None) or reason
    return _POOL_PREFIX.sub('', str(reason))


def _describe_exception(exc, method, path, base_url, on_behalf_of, retries, secrets=()):
    """A readable sentence for a transport failure, from our own words and the exception's innermost reason.

    That reason can quote a request header (an invalid header value is reported with the value), so the
    caller masks the sentence before it leaves the client."""
    if isinstance(exc, requests.exceptions.SSLError):
        reason = 'TLS handshake or certificate verification failed (TLS 1.2 or newer and a trusted certificate are required)'
    elif isinstance(exc, requests.exceptions.Timeout):
        reason = 'timed out'
    elif isinstance(exc, requests.exceptions.ConnectionError):
        reason = 'connection failed'
    elif isinstance(exc, requests.exceptions.ChunkedEncodingError):
        reason = 'connection broken while reading the answer'
    else:
        reason = 'request failed'
    detail = _excerpt(_root_reason(exc), 300, secrets)
    text = 'SendGrid API unreachable: %s on %s: %s' % (reason, request_label(method, base_url + path, on_behalf_of), detail)
    if retries:
        text += ' (after %d retries)' % retries
    return text


def connection_argument_spec(**extra):
    """The shared connection options plus a module's own (Ansible copies nothing: a fresh dict each call)."""
    spec = {name: dict(option) for name, option in CONNECTION_ARGUMENT_SPEC.items()}
    spec.update(extra)
    return spec


def client_from_module(module, pool_size=10):
    """A client for an AnsibleModule's connection options, or a clean fail_json (never a traceback)."""
    if not HAS_REQUESTS:
        from ansible.module_utils.basic import missing_required_lib
        module.fail_json(msg=missing_required_lib('requests'), exception=REQUESTS_IMPORT_ERROR)
    params = module.params
    try:
        check_connection_params(params)
        # no_log masks the value as given; the key actually sent may be shorter (a trailing newline removed).
        module.no_log_values.add(normalize_api_key(params['api_key']))
        client = SendGridClient(
            api_key=params['api_key'], region=params['region'], api_url=params['api_url'], timeout=params['timeout'],
            validate_certs=params['validate_certs'], max_retries=params['max_retries'], pool_size=pool_size)
    except SendGridConfigError as exc:
        module.fail_json(msg=str(exc))
    if not params['validate_certs']:
        module.warn('validate_certs is false: the SendGrid API certificate is not verified, so the API key could be '
                    'sent to an impostor. Use it only against a test endpoint you control.')
    return client
