# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""Enforced TLS settings: how to read, compare and converge them, for one account or many.

Both modules and the fleet action plugin go through :func:`converge` / :func:`read`
and :func:`run_batch`, so a single account and a thousand behave the same way.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor


from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import SendGridError, check_on_behalf_of
from ansible_collections.mailsec.sendgrid.plugins.module_utils._values import strict_boolean

PATH = '/v3/user/settings/enforced_tls'
FIELDS = ('require_tls', 'require_valid_cert', 'version')
VERSIONS = ('1.1', '1.2', '1.3')
# SendGrid documents these defaults; a field missing from an answer means its default.
DEFAULTS = {'require_tls': False, 'require_valid_cert': False, 'version': '1.1'}

POLICY_ARGUMENT_SPEC = dict(
    require_tls=dict(type='bool'),
    require_valid_cert=dict(type='bool'),
    # raw, not str: a YAML float 1.2 is accepted without Ansible's str-conversion warning.
    version=dict(type='raw'),
)


def normalize_version(value, name='version'):
    """'1.2', 1.2 (a YAML float) -> '1.2'; anything else is a ValueError naming the option."""
    text = None
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip()
    if text not in VERSIONS:
        raise ValueError('%s must be one of "1.1", "1.2", "1.3" (a string, or a YAML float such as 1.2), got %r'
                         % (name, value))
    return text


def desired_state(options, name_prefix=''):
    """The fields the user asked for (None means "not managed"), validated and normalized."""
    desired = {}
    for field in FIELDS:
        value = options.get(field)
        if value is None:
            continue
        if field == 'version':
            value = normalize_version(value, name_prefix + field)
        elif not isinstance(value, bool):
            raise ValueError('%s%s must be a boolean (true or false), got %r' % (name_prefix, field, value))
        desired[field] = value
    return desired


def account_items(items):
    """O(accounts) of both modules: plain usernames or dicts, as dicts {on_behalf_of[, policy fields]}.

    Both modules take the same shapes, so one list serves both (enforced_tls_info ignores the policy keys).
    """
    allowed = ('on_behalf_of',) + FIELDS
    accounts = []
    for index, item in enumerate(items):
        name = 'accounts[%d]' % index
        if isinstance(item, str):
            check_on_behalf_of(item, name)
            item = dict(on_behalf_of=item)
        elif not isinstance(item, dict):
            raise ValueError('%s must be a subuser username or a dict with the keys %s, got %r' % (name, ', '.join(allowed), item))
        unknown = sorted(set(item) - set(allowed))
        if unknown:
            raise ValueError('%s has unsupported key(s) %s; allowed: %s' % (name, ', '.join(unknown), ', '.join(allowed)))
        item = dict(item)
        check_on_behalf_of(item.get('on_behalf_of'), name + '.on_behalf_of')
        for field in ('require_tls', 'require_valid_cert'):
            if field in item:
                item[field] = strict_boolean(item[field], '%s.%s' % (name, field))
        accounts.append(item)
    return accounts


def parse_settings(answer, method):
    """SendGrid's answer as {require_tls, require_valid_cert, version}: defaults filled, types checked."""
    if not isinstance(answer, dict):
        raise SendGridError('%s %s answered %s where a JSON object was expected' % (method, PATH, _json_type(answer)))
    state = {}
    for field in FIELDS:
        if field not in answer or answer[field] is None:
            continue
        value = answer[field]
        if field == 'version':
            try:
                if isinstance(value, bool):
                    raise ValueError
                state[field] = normalize_version(float(value))
            except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float
                raise SendGridError('%s %s answered version %r where 1.1, 1.2 or 1.3 was expected' % (method, PATH, value))
        elif isinstance(value, bool):
            state[field] = value
        else:
            raise SendGridError('%s %s answered %s %r where a boolean was expected' % (method, PATH, field, value))
    return state


def _json_type(value):
    return {list: 'a JSON list', str: 'a JSON string', type(None): 'null'}.get(type(value), type(value).__name__)


def plan(current, desired):
    """The PATCH body: only requested fields that differ. Unrequested fields are never compared."""
    return {field: value for field, value in desired.items() if current[field] != value}


def to_api(changes):
    # The API's version is a JSON number (the OpenAPI spec's enum 1.1/1.2/1.3); we keep it a string everywhere else.
    return {field: float(value) if field == 'version' else value for field, value in changes.items()}


def read(client, on_behalf_of=None):
    """Current settings of one account (exactly one GET)."""
    current = dict(DEFAULTS)
    current.update(parse_settings(client.request('GET', PATH, on_behalf_of=on_behalf_of), 'GET'))
    return current


def converge(client, desired, on_behalf_of=None, check_mode=False, record=None):
    """Read, compare, and (unless check mode) write only what differs. Returns the account's result.

    ``record(previous)``, when given, is a context manager around the write that keeps the previous values of the
    fields written (the fleet's snapshot): entered before the PATCH, so nothing is written unrecorded.
    """
    before = read(client, on_behalf_of)
    changes = plan(before, desired)
    after = dict(before, **changes)
    result = dict(changed=bool(changes), before=before, enforced_tls=after, changes=changes,
                  status=('would_change' if check_mode else 'changed') if changes else 'compliant')
    if changes and not check_mode:
        with record({field: before[field] for field in changes}) if record else contextlib.nullcontext() as recorded:
            # The state after comes from the PATCH answer: a GET right after a write may still show the old state.
            after.update(parse_settings(client.request('PATCH', PATH, on_behalf_of=on_behalf_of, body=to_api(changes)),
                                        'PATCH'))
        if recorded is not None:
            result['snapshot'] = recorded
    return result


def run_batch(work, accounts, concurrency):
    """Run ``work(account)`` for every account with at most ``concurrency`` in flight.

    One account's failure never stops the others: it becomes that account's result,
    ``{'failed': True, 'status': 'failed', 'msg': ...}``. Results keep the input order.
    """
    def one(account):
        try:
            result = work(account)
            result['failed'] = False
        except SendGridError as exc:
            result = dict(failed=True, changed=False, status='failed', msg=str(exc))
        result['on_behalf_of'] = account.get('on_behalf_of')
        return result

    if len(accounts) <= 1 or concurrency <= 1:
        # One account (a subuser host's own task) or no concurrency: a thread pool would only add its start-up.
        return [one(account) for account in accounts]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(accounts))) as pool:
        return list(pool.map(one, accounts))


def failures_message(failed, total, what='accounts', verb='failed'):
    """'2 of 40 accounts failed: a: why; b: why' -- the one wording of a batch's failures."""
    return '%d of %d %s %s: %s' % (len(failed), total, what, verb, '; '.join('%s: %s' % item for item in failed.items()))


def account_label(on_behalf_of):
    return on_behalf_of or 'the parent account'


def diff_entry(result, full=False):
    """--diff output for one account; the header names the account when there are several."""
    entry = dict(before=result['before'], after=result['enforced_tls'])
    if full:
        entry['before_header'] = entry['after_header'] = account_label(result.get('on_behalf_of'))
    return entry
