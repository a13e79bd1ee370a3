# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""The fleet engine's way to an account's write, shared by every entry point (per host, batch, restore): the run's
guardrail and preflight verdicts, one HTTP client per endpoint and key, the converge of module_utils/_enforced_tls.py
with its snapshot hook, and the outcome as an Ansible task result."""

from __future__ import annotations

import functools
import os
import re

from ansible.module_utils.basic import missing_required_lib
from ansible.utils.display import Display

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import SendGridClient, SendGridError, resolve_base_url
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import PATH, converge, run_batch
from ansible_collections.mailsec.sendgrid.plugins.module_utils._text import escape_text
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._fleet_hosts import IMPACT_OPTIONS, PREFIX
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._pace_shared import shared_pace
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._run_state import fingerprint, once_per_run, run_dir
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._snapshot import SnapshotError, recorder_for

display = Display()


def open_client(connection, pool_size=1):
    """The fleet's one place that builds an HTTP client (``connection``: an account's resolved connection).

    Its pace from X-RateLimit-* is the account's: with one account a task (the per-subuser mode, each host in its own
    worker process) it is shared by the run's workers through the run's private directory; batch mode's threads share
    the client's own."""
    pace = None
    if pool_size == 1:
        endpoint = resolve_base_url(connection.get('region'), connection.get('api_url'))
        pace = shared_pace(os.path.join(run_dir(), 'pace-%s' % fingerprint(endpoint, connection['api_key'])))
    return SendGridClient(pool_size=pool_size, pace=pace, **connection)


def converge_accounts(connection, group, check_mode, concurrency):
    """Converge (or, in check mode, only read) accounts that share an endpoint and key: {host: result}.

    An account is {host, on_behalf_of, desired, snapshot_dir}; with a snapshot_dir, each write is recorded first.
    """
    def work(account):
        try:
            return converge(client, account['desired'], account['on_behalf_of'], check_mode,
                            None if check_mode else _recorder(account))
        except SnapshotError as exc:
            # run_batch reports a SendGridError as that account's failure: a subuser whose previous settings could not
            # be recorded is not written, and fails like one SendGrid refused.
            raise SendGridError(str(exc))

    try:
        client = open_client(connection, concurrency)
    except SendGridError as exc:
        outcome = [dict(failed=True, changed=False, status='failed', msg=str(exc)) for dummy in group]
    else:
        try:
            outcome = run_batch(work, group, concurrency)
        finally:
            client.close()
    results = {}
    for account, result in zip(group, outcome):
        result.update(desired=account['desired'], on_behalf_of=account['on_behalf_of'])
        results[account['host']] = result
    return results


def _recorder(account):
    """The snapshot hook of one account's write (None: not recorded), in the run's snapshot file of its directory."""
    if not account.get('snapshot_dir'):
        return None
    connection = account['connection']
    recorder = recorder_for(run_dir(), account['snapshot_dir'], connection['api_key'])
    return functools.partial(recorder.record, account['host'], account['on_behalf_of'],
                             resolve_base_url(connection['region'], connection['api_url']), connection['region'])


def host_result(result, mode, task_check_mode):
    """One account's outcome as an Ansible task result: changed, diff, failed and msg under the host's own name."""
    result = dict(result)
    if result['failed']:
        result['changed'] = False
        return result
    result['compliant'] = not result['changes']
    result['differences'] = {field: dict(current=result['before'][field], desired=value)
                             for field, value in result['changes'].items()}
    # An audit never writes: it reports drift as a change only in check mode, where "changed" means "would change".
    result['changed'] = bool(result['changes']) and (mode == 'enforce' or task_check_mode)
    if result['changes']:
        result['diff'] = dict(before=result['before'], after=result['enforced_tls'])
    return result


def publish_snapshot(result, reports):
    """Custom stats (what set_stats publishes: AWX shows them as the job's artifacts) for the snapshot entries written.

    Per run, not per host: the path, and a count Ansible adds up over every task of the run (each entry counted once).
    """
    recorded = [report['snapshot'] for report in reports if report.get('snapshot')]
    if recorded:
        result['ansible_stats'] = dict(per_host=False, aggregate=True, data=dict(
            enforced_tls_snapshot=dict(path=recorded[-1]['path']),
            enforced_tls_snapshot_subusers=sum(1 for item in recorded if item['new'])))


# -- the preflight, once per endpoint and key for the whole ansible-playbook run --------------------------------------

def preflight_once(connection, host):
    """The run's verdict on an endpoint and key: {'ok', 'msg', 'host', 'endpoint'}; the first caller does the request."""
    # The key is never written down: only a salted hash of endpoint and key names the verdict's file.
    endpoint = resolve_base_url(connection.get('region'), connection.get('api_url'))

    def decide():
        verdict = dict(ok=True, msg='', host=host, endpoint=endpoint)
        try:
            client = open_client(connection)
            try:
                client.request('GET', PATH)
            finally:
                client.close()
        except SendGridError as exc:
            verdict.update(ok=False, msg='preflight of %s failed (it reads the parent account once for every subuser '
                                         'with this API key and endpoint): %s' % (endpoint, exc))
        return verdict
    return once_per_run('preflight-%s' % fingerprint(endpoint, connection['api_key']), decide)


def preflighted(account, host):
    """dict(failed=False), or the host's failure when the run's preflight of its endpoint and key failed."""
    verdict = preflight_once(account['connection'], host)
    if verdict['ok']:
        return dict(failed=False)
    if verdict['host'] == host:
        return dict(failed=True, changed=False, status='failed', msg=verdict['msg'])
    return dict(failed=True, changed=False, status='failed',
                msg='not attempted (no request was sent for this subuser): %s' % verdict['msg'])


# -- the impact guardrail, once per policy for the whole run ------------------------------------------------------------

def guarded(account):
    """The impact guardrail of the account's policy: dict(failed=False[, impact]) or the refusal, before any request."""
    if account['impact'] is None:
        return dict(failed=False)
    # Imported only for a guardrail: dnspython and cryptography in ansible-playbook's own process would make every
    # worker it forks, for every task of the run, a copy of a larger process.
    from ansible_collections.mailsec.sendgrid.plugins.module_utils._recipient_preview import DNSPYTHON_ERROR, HAS_DNSPYTHON
    from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_certificate import CRYPTOGRAPHY_ERROR, HAS_CRYPTOGRAPHY
    if not HAS_DNSPYTHON or not HAS_CRYPTOGRAPHY:
        missing, error = ('dnspython', DNSPYTHON_ERROR) if not HAS_DNSPYTHON else ('cryptography', CRYPTOGRAPHY_ERROR)
        return dict(failed=True, changed=False, status='failed', msg='the impact preview (%simpact_domains) needs %s; '
                    'nothing was written' % (PREFIX, missing_required_lib(missing)), exception=error)
    verdict = guardrail_once(account['impact'])
    if verdict['ok']:
        return dict(failed=False, impact=verdict['impact'])
    # The refusal names every blocked domain already; the preview was printed once.
    return dict(failed=True, changed=False, status='failed', msg=verdict['msg'])


def guardrail_once(impact):
    """The run's verdict on one policy's impact preview: {'ok', 'msg', 'impact'}; the first caller runs the preview.

    Every host of the run whose policy and guardrail variables are the same shares it (one preview, one set of DNS and
    SMTP probes per run), whichever hosts a condition selects and whatever the strategy: no host writes before it.
    """
    return once_per_run('guardrail-%s' % fingerprint(impact), lambda: _guardrail_verdict(impact))


_IMPACT_VARIABLES = {option: name for name, option in IMPACT_OPTIONS.items()}
_IMPACT_OPTION_NAMES = re.compile(r'\b(%s)\b' % '|'.join(_IMPACT_VARIABLES))


def _guardrail_verdict(impact):
    from ansible_collections.mailsec.sendgrid.plugins.module_utils._recipient_preview import run_preview
    try:
        preview = run_preview(impact['options'])
    except ValueError as exc:
        # The preview names its options as recipient_tls_info does; the user set the role's variables.
        text = _IMPACT_OPTION_NAMES.sub(lambda match: PREFIX + _IMPACT_VARIABLES[match.group(0)], str(exc))
        return dict(ok=False, msg='invalid guardrail variables, nothing was written: %s' % text)
    summary, entries = preview['summary'], preview['domains']
    kept = dict(summary=summary, policy=preview['policy'], domains=[
        {key: entry[key] for key in ('domain', 'verdict', 'reason', 'blocked_by')} for entry in entries])
    # Reasons quote MX host names and certificate texts from the network: escaped before anyone sees them.
    shown = '; '.join('%s: %s (%s)' % (escape_text(entry['domain']), entry['verdict'], escape_text(entry['reason']))
                      for entry in entries if entry['verdict'] != 'delivered')
    # Shown once per run and policy, by the worker that ran it (Ansible relays a worker's display to the run's output).
    display.display('Impact preview: %d of %d recipient domains would be blocked (at most %d allowed), %d unknown '
                    '(unreachable from this host)%s' % (summary['blocked'], summary['domains'], impact['max_blocked'],
                                                        summary['unknown'], '; ' + shown if shown else ''))
    if summary['blocked'] <= impact['max_blocked']:
        return dict(ok=True, msg='', impact=kept)
    blocked = '; '.join('%s (blocked by %s: %s)' % (
        escape_text(entry['domain']), ', '.join(entry['blocked_by']), escape_text(entry['reason']))
        for entry in entries if entry['verdict'] == 'blocked')
    return dict(ok=False, impact=kept, msg='Nothing was written: the policy would block %d of %d recipient domains '
                '(%smax_blocked is %d): %s' % (summary['blocked'], summary['domains'], PREFIX, impact['max_blocked'], blocked))
