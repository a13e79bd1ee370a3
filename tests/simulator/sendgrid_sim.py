"""Simulator of the part of the SendGrid v3 API that mailsec.sendgrid uses.

API endpoints:

* ``GET`` and ``PATCH /v3/user/settings/enforced_tls`` for the parent account, its subusers
  (``on-behalf-of: <username>``) and customer accounts (``on-behalf-of: account-id <id>``);
* ``GET /v3/subusers`` (``limit``, ``offset``, ``username``, ``include_region``);
* ``GET /v3/suppression/blocks`` (``start_time``, ``end_time``, ``limit``, ``offset``, ``email``; per account, newest
  first). Blocks are added with :meth:`Simulator.add_blocks`, or made by :meth:`Simulator.block_tls_when_required`:
  mail of that account to some recipient domains is blocked with "TLS required but not supported" from the moment a
  PATCH makes it require TLS, as SendGrid does when those domains cannot do TLS.

Control endpoints under ``/_sim/`` (no auth, no latency, not logged) let a simulator running in
another process be driven and read: ``GET /_sim/log[?summary=1]``, ``GET /_sim/state``,
``POST /_sim/reset-log``, ``/_sim/latency``, ``/_sim/inject``, ``/_sim/random-faults``,
``/_sim/fail-account``, ``/_sim/clear-faults``, ``/_sim/add-blocks``, ``/_sim/block-tls-when-required`` and
``/_sim/rate-limit``.

Rate limit (off unless configured: ``rate_limit=``, ``--rate-limit``, ``POST /_sim/rate-limit``): a fixed window of
``limit`` authenticated API requests per ``window`` seconds for the whole simulator (one key's counter, as SendGrid
keeps it). Every authenticated answer then carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and
``X-RateLimit-Reset`` (the window's end as an epoch second, or with ``reset_style="seconds"`` the seconds until it,
both rounded up), and a request beyond the limit is answered 429 ``too many requests``; the log summary counts those
in ``rate_limited``.

As a library::

    with Simulator(api_keys=("test-key",), subusers=3) as sim:
        requests.get(sim.url + ENFORCED_TLS_PATH, headers={"Authorization": "Bearer test-key", "on-behalf-of": "sub0001"})

As a program: ``python tests/simulator/sendgrid_sim.py --help``. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

ENFORCED_TLS_PATH = "/v3/user/settings/enforced_tls"
SUBUSERS_PATH = "/v3/subusers"
BLOCKS_PATH = "/v3/suppression/blocks"
# SendGrid's words in the block event of a message dropped by Enforced TLS (its Enforced TLS API description).
TLS_BLOCK_REASON = "TLS required but not supported"
CONTROL_PREFIX = "/_sim/"

# Account key of the parent account (requests without on-behalf-of). Methods that need an account also take None
# for it; inject() reads account=None as "any account", so there "" (PARENT) aims at the parent alone.
PARENT = ""

TLS_VERSIONS = (1.1, 1.2, 1.3)
BOOLEAN_FIELDS = ("require_tls", "require_valid_cert")
DEFAULT_SETTINGS = {"require_tls": False, "require_valid_cert": False, "version": 1.1}
COMPLIANT_SETTINGS = {"require_tls": True, "require_valid_cert": True, "version": 1.2}

# (weight, initial state) of the subusers that populate_subusers(drift_mixed=True) creates.
DRIFT_STATES = (
    (4, DEFAULT_SETTINGS),
    (3, COMPLIANT_SETTINGS),
    (1, {"require_tls": True, "require_valid_cert": False, "version": 1.1}),
    (1, {"require_tls": True, "require_valid_cert": True, "version": 1.1}),
    (1, {"require_tls": False, "require_valid_cert": False, "version": 1.2}),
    # Like the spec's own GET example: no version in the answer, so the documented default (1.1) applies.
    (1, {"require_tls": False, "require_valid_cert": False}),
)

REGIONS = ("global", "eu")
MAX_PAGE_SIZE = 500
MAX_BODY_BYTES = 1 << 20
FIRST_SUBUSER_ID = 1000001
RATE_LIMIT = 600  # value of X-RateLimit-Limit on 429 answers

MSG_NO_AUTH = "authorization required"
MSG_BAD_KEY = "The provided authorization grant is invalid, expired, or revoked"
MSG_FORBIDDEN = "access forbidden"

_ROUTES = {ENFORCED_TLS_PATH: ("GET", "PATCH"), SUBUSERS_PATH: ("GET",), BLOCKS_PATH: ("GET",)}
_NOT_JSON = object()  # marks a request body that is empty or does not parse as JSON


def error_body(status, message=None, field=None):
    """Error document in SendGrid's shapes: the spec's 500 schema for 5xx, its ErrorResponse otherwise."""
    message = message or HTTPStatus(status).phrase.lower()
    if status >= 500:
        return {"errors": [{"message": message}]}
    return {"errors": [{"field": field, "message": message}]}


class _ApiError(Exception):
    """An error answer; raised anywhere while handling a request and sent by the caller."""

    def __init__(self, status, message=None, *, field=None, body=None, headers=None):
        super().__init__(message)
        self.status = status
        self.body = error_body(status, message, field) if body is None else body
        self.headers = headers or {}


@dataclass
class _Fault:
    """An injected answer; method/path/account None match anything."""

    status: int
    remaining: int = 1
    method: str | None = None
    path: str | None = None
    account: str | None = None
    retry_after: object = None
    ratelimit_reset: int | None = None
    body: object = None

    def matches(self, method, path, account):
        return (self.method in (None, method)) and (self.path in (None, path)) and (self.account is None or self.account == account)

    def error(self):
        headers = {}
        if self.status == HTTPStatus.TOO_MANY_REQUESTS:
            headers.update({"X-RateLimit-Limit": str(RATE_LIMIT), "X-RateLimit-Remaining": "0"})
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.ratelimit_reset is not None:
            headers["X-RateLimit-Reset"] = str(int(self.ratelimit_reset))
        return _ApiError(self.status, body=self.body, headers=headers)


class _RandomFaults:
    """Seeded 429/500 answers; draws happen under the simulator lock so one client's sequence is reproducible."""

    def __init__(self, rate_429, rate_5xx, seed, retry_after):
        if not (0 <= rate_429 <= 1 and 0 <= rate_5xx <= 1 and rate_429 + rate_5xx <= 1):
            raise ValueError("rates must be within [0, 1] and add up to at most 1")
        self.rng = random.Random(seed)
        self.rate_429 = rate_429
        self.rate_5xx = rate_5xx
        self.retry_after = retry_after

    def draw(self):
        roll = self.rng.random()
        if roll < self.rate_429:
            return _Fault(HTTPStatus.TOO_MANY_REQUESTS, retry_after=self.retry_after)
        if roll < self.rate_429 + self.rate_5xx:
            return _Fault(HTTPStatus.INTERNAL_SERVER_ERROR)
        return None


def _settings_errors(body):
    """Yield (field, message) for each problem of a PATCH body (a dict), per the spec's schema plus no unknown fields."""
    for field, value in body.items():
        if field in BOOLEAN_FIELDS:
            if not isinstance(value, bool):
                yield field, f"{field} must be a boolean"
        elif field == "version":
            # bool is an int subclass and "1.2" is not a number: the spec wants a JSON number from the enum.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in TLS_VERSIONS:
                yield field, "version must be one of the numbers 1.1, 1.2, 1.3"
        else:
            yield field, f"unknown field {field!r}"


def _int_param(query, name, default, low, high=None):
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer {bounds}", field=name)
    return value


def _bool_param(query, name):
    raw = query.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise _ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be true or false", field=name)
    return raw == "true"


def _email_matches(pattern, email):
    """The spec's email filter: a prefix, where % (sent as %25) stands for any run of characters."""
    if not pattern:
        return True
    parts = pattern.lower().split("%")
    email = email.lower()
    if not email.startswith(parts[0]):
        return False
    position = len(parts[0])
    for part in parts[1:]:
        found = email.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return True


def _parse_json(raw):
    try:
        return json.loads(raw) if raw else _NOT_JSON
    except ValueError:
        return _NOT_JSON


def _logged_body(raw, parsed):
    """The request body as the log keeps it: parsed JSON, else the raw text, None when there was none."""
    if not raw:
        return None
    return raw.decode("utf-8", "replace") if parsed is _NOT_JSON else parsed


class Simulator:
    """SendGrid API simulator: state, request log and fault injection, served over HTTP/1.1 once started."""

    def __init__(self, api_keys=("test-key",), subusers=None, latency=0.0, seed=0, rate_limit=None, rate_window=1.0, reset_style="epoch"):
        """subusers: a count (named sub0001, ...) or an iterable of usernames. seed drives populate_subusers().
        rate_limit (requests per rate_window seconds, None: no limit) and reset_style: see set_rate_limit()."""
        self.api_keys = frozenset((api_keys,) if isinstance(api_keys, str) else api_keys)
        self.latency = latency
        self.seed = seed
        self._lock = threading.Lock()
        self._accounts = {PARENT: dict(DEFAULT_SETTINGS)}
        self._subusers = {}
        self._next_id = FIRST_SUBUSER_ID
        self._log = []
        self._faults = []
        self._failed = {}
        self._random = None
        self._blocks = {}  # account key -> list of block records
        self._tls_blockers = {}  # account key -> (recipient domains, blocks per domain)
        self._server = None
        self._thread = None
        self._rate = None  # (limit, window, reset style, start of the first window) or None
        self._window = (None, 0)  # (index of the current window, requests counted in it)
        self._rate_limited = 0
        self.set_rate_limit(rate_limit, rate_window, reset_style)
        if isinstance(subusers, int):
            self.populate_subusers(subusers)
        elif subusers is not None:
            for username in subusers:
                self.add_subuser(username)

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def start(self, port=0, host="127.0.0.1"):
        """Listen (port 0 picks a free one) and serve from a daemon thread; return the base URL."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = _Server((host, port), self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="sendgrid-sim", daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self):
        if self._server is None:
            raise RuntimeError("simulator not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self):
        """Stop listening and drop open keep-alive connections. State and log are kept."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self):
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    # --- accounts and state -----------------------------------------------------------------------------------------

    def add_subuser(self, username, *, user_id=None, email=None, disabled=False, region="global", settings=None):
        """Create a subuser; settings None means the documented defaults. Returns its /v3/subusers item with region."""
        if not username or any(char.isspace() for char in username):
            raise ValueError(f"invalid username {username!r}")
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}")
        with self._lock:
            if username in self._accounts:
                raise ValueError(f"account {username!r} already exists")
            if user_id is None:
                user_id = self._next_id
            self._next_id = max(self._next_id, user_id + 1)
            record = {"disabled": bool(disabled), "email": email or f"{username}@example.com", "id": user_id, "username": username, "region": region}
            self._subusers[username] = record
            self._accounts[username] = dict(DEFAULT_SETTINGS if settings is None else settings)
            return dict(record)

    def add_customer(self, account_id, settings=None):
        """Create a customer account, reached with ``on-behalf-of: account-id <account_id>``. Returns its account key."""
        key = f"account-id {account_id}"
        with self._lock:
            if key in self._accounts:
                raise ValueError(f"account {key!r} already exists")
            self._accounts[key] = dict(DEFAULT_SETTINGS if settings is None else settings)
        return key

    def tamper_subuser(self, username, **fields):
        """Change fields of a subuser's /v3/subusers item to anything, valid or not: for tests of a hostile API answer."""
        with self._lock:
            self._subusers[username].update(fields)

    def populate_subusers(self, count, *, eu_every=0, disabled_every=0, drift_mixed=False):
        """Add `count` subusers named sub0001, ... (numbering goes on from the subusers already there).

        Every eu_every-th is in region "eu", every disabled_every-th is disabled (0: none). With drift_mixed their
        initial states are drawn from DRIFT_STATES with random.Random(self.seed), else they start on the defaults.
        Returns the new usernames.
        """
        rng = random.Random(self.seed)
        weights, states = zip(*DRIFT_STATES)
        first = len(self._subusers) + 1
        names = []
        for number in range(first, first + count):
            username = f"sub{number:04d}"
            self.add_subuser(
                username,
                region="eu" if eu_every and number % eu_every == 0 else "global",
                disabled=bool(disabled_every and number % disabled_every == 0),
                settings=rng.choices(states, weights)[0] if drift_mixed else None,
            )
            names.append(username)
        return names

    def settings(self, account=None):
        """Stored state of the parent (None), a subuser username or "account-id <id>"; KeyError if unknown."""
        with self._lock:
            return dict(self._accounts[self._key(account)])

    def set_settings(self, account, settings):
        """Replace an account's stored state as is: no validation, so fields may be left out (or be odd on purpose)."""
        key = self._key(account)
        with self._lock:
            if key not in self._accounts:
                raise KeyError(account)
            self._accounts[key] = dict(settings)

    def state(self):
        """Every account's stored state: {"parent": {...}, "subusers": {username: {...}}, "customers": {key: {...}}}."""
        with self._lock:
            return {
                "parent": dict(self._accounts[PARENT]),
                "subusers": {name: dict(self._accounts[name]) for name in self._subusers},
                "customers": {key: dict(value) for key, value in self._accounts.items() if key.startswith("account-id ")},
            }

    @staticmethod
    def _key(account):
        return PARENT if account is None else account

    # --- blocks (suppressions) --------------------------------------------------------------------------------------

    def add_blocks(self, account, blocks):
        """Add block records to an account (None: the parent). Each is a dict with email and optionally reason, status,
        created (epoch seconds; default now). Returns how many the account holds."""
        key = self._key(account)
        now = int(time.time())
        records = []
        for block in blocks:
            if not isinstance(block, dict) or not isinstance(block.get("email"), str) or "@" not in block["email"]:
                raise ValueError(f"a block needs an email address, got {block!r}")
            created = block.get("created", now)
            if isinstance(created, bool) or not isinstance(created, int) or created < 0:
                raise ValueError(f"created must be epoch seconds, got {created!r}")
            records.append({"created": created, "email": block["email"], "reason": str(block.get("reason", "")),
                            "status": str(block.get("status", "4.0.0"))})
        with self._lock:
            if key not in self._accounts:
                raise KeyError(account)
            self._blocks.setdefault(key, []).extend(records)
            return len(self._blocks[key])

    def block_tls_when_required(self, account, domains=("legacy.example",), per_domain=1):
        """From now on, each PATCH that makes the account require TLS (require_tls false -> true) adds ``per_domain``
        blocks "TLS required but not supported" for each of ``domains``, created at that moment."""
        key = self._key(account)
        if isinstance(domains, str) or not domains or per_domain < 1:
            raise ValueError("domains must be a non-empty list and per_domain at least 1")
        with self._lock:
            if key not in self._accounts:
                raise KeyError(account)
            self._tls_blockers[key] = (list(domains), int(per_domain))
        return {"account": key, "domains": list(domains), "per_domain": int(per_domain)}

    def blocks(self, account=None):
        """The block records of an account, as stored (oldest first)."""
        with self._lock:
            return [dict(record) for record in self._blocks.get(self._key(account), ())]

    def _tls_blocks_after_patch(self, key, was_required):
        # Called under the lock: the mail to domains without TLS is dropped from the moment the policy requires TLS.
        blocker = self._tls_blockers.get(key)
        if blocker is None or was_required or not self._accounts[key].get("require_tls"):
            return
        domains, per_domain = blocker
        now = int(time.time())
        records = self._blocks.setdefault(key, [])
        for domain in domains:
            for number in range(per_domain):
                records.append({"created": now, "email": f"user{len(records) + 1}@{domain}", "reason": TLS_BLOCK_REASON,
                                "status": "4.0.0"})

    # --- request log ------------------------------------------------------------------------------------------------

    @property
    def requests(self):
        """Snapshot of the API request log, oldest first (control requests are not logged)."""
        with self._lock:
            return list(self._log)

    def clear_log(self):
        """Empty the request log; return how many entries it held."""
        with self._lock:
            count = len(self._log)
            self._log.clear()
            self._rate_limited = 0
        return count

    def count(self, method=None, path=None):
        """Number of logged API requests with that method and/or path."""
        method = method and method.upper()
        with self._lock:
            return sum(1 for entry in self._log if method in (None, entry["method"]) and path in (None, entry["path"]))

    def log_summary(self):
        """Counts of logged API requests: total, by method and by status."""
        by_method, by_status = {}, {}
        with self._lock:
            for entry in self._log:
                by_method[entry["method"]] = by_method.get(entry["method"], 0) + 1
                by_status[str(entry["status"])] = by_status.get(str(entry["status"]), 0) + 1
            summary = {"total": len(self._log), "by_method": by_method, "by_status": by_status}
            if self._rate is not None or self._rate_limited:
                summary["rate_limited"] = self._rate_limited
            return summary

    # --- faults and latency -----------------------------------------------------------------------------------------

    def inject(self, status, count=1, *, method=None, path=None, account=None, retry_after=None, ratelimit_reset=None, body=None):
        """Answer the next `count` authenticated API requests that match with `status`.

        method/path/account None match any (account PARENT matches the parent only). retry_after is sent as the
        Retry-After header verbatim (seconds, or an HTTP date string); ratelimit_reset as X-RateLimit-Reset (epoch
        seconds). body replaces the default error document: str bodies are sent verbatim, anything else as JSON.
        Pending injections are used first-come first-served.
        """
        HTTPStatus(status)  # ValueError for a code that is not a real HTTP status
        if count < 1:
            raise ValueError("count must be at least 1")
        fault = _Fault(status, count, method and method.upper(), path, account, retry_after, ratelimit_reset, body)
        with self._lock:
            self._faults.append(fault)

    def fail_account(self, account, status=403, message=None):
        """Answer every API request made for that account (None: the parent) with `status`, until clear_faults()."""
        if message is None:
            message = MSG_FORBIDDEN if status == HTTPStatus.FORBIDDEN else HTTPStatus(status).phrase.lower()
        with self._lock:
            self._failed[self._key(account)] = (status, message)

    def random_faults(self, rate_429=0.0, rate_5xx=0.0, seed=0, retry_after=1):
        """Answer each API request with 429 (probability rate_429, with Retry-After unless None) or 500 (rate_5xx)."""
        faults = _RandomFaults(rate_429, rate_5xx, seed, retry_after) if rate_429 or rate_5xx else None
        with self._lock:
            self._random = faults

    def clear_faults(self):
        """Drop pending injections, failed accounts and random faults."""
        with self._lock:
            self._faults.clear()
            self._failed.clear()
            self._random = None

    def set_rate_limit(self, limit=None, window=1.0, reset_style="epoch"):
        """Allow ``limit`` API requests per fixed window of ``window`` seconds from now on (None: no limit, no headers).
        reset_style "epoch" or "seconds": how X-RateLimit-Reset tells the window's end."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError("limit must be an integer >= 1 or null")
        if isinstance(window, bool) or not isinstance(window, (int, float)) or window <= 0:
            raise ValueError("window must be a number of seconds > 0")
        if reset_style not in ("epoch", "seconds"):
            raise ValueError('reset_style must be "epoch" or "seconds"')
        with self._lock:
            self._rate = None if limit is None else (limit, float(window), reset_style, time.time())
            self._window = (None, 0)
        return {"limit": limit, "window": window, "reset_style": reset_style}

    def _spend_rate(self, headers):
        """Count one request in the current window and put the rate-limit headers in ``headers``; 429 when spent."""
        with self._lock:
            if self._rate is None:
                return
            limit, window, style, start = self._rate
            now = time.time()
            index = int((now - start) // window)
            count = self._window[1] + 1 if self._window[0] == index else 1
            self._window = (index, count)
            end = start + (index + 1) * window
            if count > limit:
                self._rate_limited += 1
        headers.update({"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(max(0, limit - count)),
                        "X-RateLimit-Reset": str(math.ceil(end) if style == "epoch" else math.ceil(end - now))})
        if count > limit:
            raise _ApiError(HTTPStatus.TOO_MANY_REQUESTS, "too many requests", headers=dict(headers))

    def _set_latency(self, seconds):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError("seconds must be a number >= 0")
        self.latency = seconds
        return {"seconds": seconds}

    # --- request handling (called by the HTTP handler; usable without a socket too) --------------------------------

    def handle_api_request(self, method, url, headers, raw, client_port=None):
        """Answer one API request: (status, body, extra headers). url is a urlsplit() result, raw the body bytes."""
        arrived = time.time()
        latency = self.latency
        if latency > 0:
            time.sleep(latency)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        on_behalf_of = (headers.get("on-behalf-of") or "").strip() or None
        parsed = _parse_json(raw)
        rate = {}
        try:
            body = self._route(method, url.path, query, headers, on_behalf_of, raw, parsed, rate)
            status, extra = HTTPStatus.OK, dict(rate)
        except _ApiError as exc:
            status, body, extra = exc.status, exc.body, {**rate, **exc.headers}
        entry = {
            "method": method,
            "path": url.path,
            "query": query,
            "headers": {name.lower(): value for name, value in headers.items()},
            "on_behalf_of": on_behalf_of,
            "body": _logged_body(raw, parsed),
            "status": int(status),
            "time": arrived,
            "client_port": client_port,
        }
        with self._lock:
            self._log.append(entry)
        return status, body, extra

    def _route(self, method, path, query, headers, on_behalf_of, raw, parsed, rate):
        self._authenticate(headers.get("Authorization"))
        self._spend_rate(rate)
        allowed = _ROUTES.get(path)
        if allowed is None:
            raise _ApiError(HTTPStatus.NOT_FOUND, "not found")
        if method not in allowed:
            raise _ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed", headers={"Allow": ", ".join(allowed)})
        account = PARENT if on_behalf_of is None else on_behalf_of
        # Rate limits and server errors come before any account lookup, as they would at SendGrid's edge.
        self._check_faults(method, path, account)
        self._check_account(account)
        if path == SUBUSERS_PATH:
            if account != PARENT:
                raise _ApiError(HTTPStatus.FORBIDDEN, MSG_FORBIDDEN)
            return self._list_subusers(query)
        if path == BLOCKS_PATH:
            return self._list_blocks(account, query)
        if method == "PATCH":
            return self._patch_settings(account, headers, raw, parsed)
        return self.settings(account)

    def _authenticate(self, authorization):
        if not authorization:
            raise _ApiError(HTTPStatus.UNAUTHORIZED, MSG_NO_AUTH)
        scheme, _sep, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.api_keys:
            raise _ApiError(HTTPStatus.UNAUTHORIZED, MSG_BAD_KEY)

    def _check_faults(self, method, path, account):
        with self._lock:
            fault = next((fault for fault in self._faults if fault.matches(method, path, account)), None)
            if fault is not None:
                fault.remaining -= 1
                if not fault.remaining:
                    self._faults.remove(fault)
            elif self._random is not None:
                fault = self._random.draw()
        if fault is not None:
            raise fault.error()

    def _check_account(self, account):
        with self._lock:
            failure = self._failed.get(account)
            known = account in self._accounts
        if failure is not None:
            raise _ApiError(failure[0], failure[1])
        if not known:
            raise _ApiError(HTTPStatus.FORBIDDEN, MSG_FORBIDDEN)

    def _list_subusers(self, query):
        limit = _int_param(query, "limit", MAX_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        offset = _int_param(query, "offset", 0, 0)
        include_region = _bool_param(query, "include_region")
        prefix = query.get("username", "")
        with self._lock:
            matching = sorted((record for record in self._subusers.values() if record["username"].startswith(prefix)), key=lambda record: record["id"])
            page = [dict(record) for record in matching[offset:offset + limit]]
        if not include_region:
            for item in page:
                del item["region"]
        return page

    def _list_blocks(self, account, query):
        limit = _int_param(query, "limit", MAX_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        offset = _int_param(query, "offset", 0, 0)
        start = _int_param(query, "start_time", None, 0)
        end = _int_param(query, "end_time", None, 0)
        pattern = query.get("email")
        with self._lock:
            records = list(self._blocks.get(account, ()))
        # Both ends inclusive, as the spec says; newest first.
        matching = [record for record in records if (start is None or record["created"] >= start) and (end is None or record["created"] <= end)
                    and _email_matches(pattern, record["email"])]
        matching.sort(key=lambda record: record["created"], reverse=True)
        return [dict(record) for record in matching[offset:offset + limit]]

    def _patch_settings(self, account, headers, raw, parsed):
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if raw and content_type != "application/json":
            raise _ApiError(HTTPStatus.BAD_REQUEST, "Content-Type must be application/json")
        if raw and parsed is _NOT_JSON:
            raise _ApiError(HTTPStatus.BAD_REQUEST, "request body is not valid JSON")
        if not isinstance(parsed, dict):
            raise _ApiError(HTTPStatus.BAD_REQUEST, "request body must be a JSON object")
        errors = [{"field": field, "message": message} for field, message in _settings_errors(parsed)]
        if errors:
            raise _ApiError(HTTPStatus.BAD_REQUEST, body={"errors": errors})
        with self._lock:
            state = self._accounts[account]
            was_required = bool(state.get("require_tls"))
            state.update(parsed)
            self._tls_blocks_after_patch(account, was_required)
            return dict(state)

    def handle_control_request(self, method, url, raw):
        """Answer one /_sim/ request: (status, body, extra headers)."""
        name = url.path[len(CONTROL_PREFIX):]
        try:
            if method == "GET" and name == "log":
                summary = dict(parse_qsl(url.query)).get("summary", "0").lower() in ("1", "true")
                return HTTPStatus.OK, self.log_summary() if summary else self.requests, {}
            if method == "GET" and name == "state":
                return HTTPStatus.OK, self.state(), {}
            actions = {
                "reset-log": lambda: {"cleared": self.clear_log()},
                "latency": self._set_latency,
                "inject": self.inject,
                "random-faults": self.random_faults,
                "fail-account": self.fail_account,
                "clear-faults": self.clear_faults,
                "add-blocks": lambda account=None, blocks=(): {"blocks": self.add_blocks(account, blocks)},
                "block-tls-when-required": self.block_tls_when_required,
                "rate-limit": self.set_rate_limit,
            }
            if method == "POST" and name in actions:
                args = _parse_json(raw) if raw else {}
                if not isinstance(args, dict):
                    raise ValueError("body must be a JSON object")
                return HTTPStatus.OK, actions[name](**args) or {"ok": True}, {}
        except (TypeError, ValueError, KeyError) as exc:
            return HTTPStatus.BAD_REQUEST, error_body(HTTPStatus.BAD_REQUEST, str(exc)), {}
        return HTTPStatus.NOT_FOUND, error_body(HTTPStatus.NOT_FOUND, "not found"), {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sendgrid-sim"
    # Buffer each answer into one write and disable Nagle: otherwise the header block and the body go out as two
    # small segments and Nagle plus delayed ACK can stall every keep-alive exchange by tens of milliseconds.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, *args):
        """Silence the default one-line-per-request stderr log."""

    def version_string(self):
        return self.server_version

    def _dispatch(self):
        url = urlsplit(self.path)
        try:
            raw = self._read_body()
        except _ApiError as exc:
            # The body was not read, so the connection cannot carry another request.
            self._send(exc.status, exc.body, {**exc.headers, "Connection": "close"})
            return
        simulator = self.server.simulator
        if url.path.startswith(CONTROL_PREFIX):
            status, body, headers = simulator.handle_control_request(self.command, url, raw)
        else:
            status, body, headers = simulator.handle_api_request(self.command, url, self.headers, raw, self.client_address[1])
        self._send(status, body, headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise _ApiError(HTTPStatus.LENGTH_REQUIRED, "chunked request bodies are not supported; send Content-Length")
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
        if size > MAX_BODY_BYTES:
            raise _ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        return self.rfile.read(size)

    def _send(self, status, body, headers):
        data = (body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many clients connect at once in fleet runs; the default backlog of 5 would drop SYNs and add 1 s retransmits.
    request_queue_size = 128

    def __init__(self, address, simulator):
        self.simulator = simulator
        self._connections = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self):
        """Wake handler threads parked on idle keep-alive connections so a stopped simulator answers nothing."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        # Clients hanging up (or stop() cutting them off) are routine here; anything else is a simulator bug.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _write_atomically(path, text):
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


def _parse_args(argv):
    parser = argparse.ArgumentParser(description="Serve the SendGrid API simulator until SIGTERM or SIGINT.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--api-key", dest="api_keys", metavar="KEY", nargs="+", action="extend", help="accepted API key(s); default: test-key")
    parser.add_argument("--subusers", type=int, default=0, metavar="N", help="create N subusers sub0001...")
    parser.add_argument("--eu-every", type=int, default=0, metavar="K", help='every K-th subuser is in region "eu"')
    parser.add_argument("--disabled-every", type=int, default=0, metavar="K", help="every K-th subuser is disabled")
    parser.add_argument("--drift-mixed", action="store_true", help="seeded mix of default, compliant and partly compliant subuser states")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="milliseconds added to every API request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate-limit", type=int, metavar="N", help="allow N API requests per window (default: no limit, no rate-limit headers)")
    parser.add_argument("--rate-window", type=float, default=1.0, metavar="SECONDS", help="length of the fixed rate-limit window")
    parser.add_argument("--reset-style", choices=("epoch", "seconds"), default="epoch",
                        help="X-RateLimit-Reset as an epoch second or as seconds until the reset")
    parser.add_argument("--url-file", metavar="PATH", help="write the base URL here once listening")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse_args(argv)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *signal_args: stopping.set())
    simulator = Simulator(api_keys=args.api_keys or ("test-key",), latency=args.latency_ms / 1000, seed=args.seed,
                          rate_limit=args.rate_limit, rate_window=args.rate_window, reset_style=args.reset_style)
    simulator.populate_subusers(args.subusers, eu_every=args.eu_every, disabled_every=args.disabled_every, drift_mixed=args.drift_mixed)
    url = simulator.start(port=args.port, host=args.host)
    if args.url_file:
        _write_atomically(args.url_file, url)
    print(url, flush=True)
    stopping.wait()
    simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
