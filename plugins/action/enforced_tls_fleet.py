# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The engine of the enforced_tls_policy role, on the controller (no module start-up per subuser).

Three ways to run, chosen by the role:

* per host (the default): the task runs for each subuser host in that host's own task run, so
  Ansible's host model (``when:``, includes, ``--limit``, ``serial:``, any strategy, the recap, retry
  files, AWX host events) holds. It reads that host's variables from ``task_vars``;
* ``mode: preflight`` (``run_once``): reads the parent account once per API endpoint and key, so a bad
  key or an unreachable API fails the run once instead of once per subuser;
* ``batch: true`` (``run_once``): converges every host of the play batch in one task, for fleets in
  the thousands. It resolves the other hosts' variables itself and refuses to run where it cannot
  know its scope (under ``when:``, a conditional include, a strategy other than linear).

The preflight verdict is shared by every worker process of one ``ansible-playbook`` run through files
in Ansible's per-run local temporary directory (removed when the run ends): whichever task reaches an
endpoint and key first checks it, under a lock, and every later task reuses the verdict.

Every write is recorded first in the run's snapshot file (plugin_utils/_snapshot.py: shared by the worker processes
under the same kind of lock); ``mode: check_snapshot`` (``run_once``) and ``mode: restore`` (per host) are the restore
playbook's, and the rollout playbook restores a batch with ``mode: restore``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.sentinel import Sentinel

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import (
    CONNECTION_ARGUMENT_SPEC, HAS_REQUESTS, SendGridClient, SendGridConfigError, SendGridError, check_concurrency,
    check_connection_params, normalize_api_key, prime_trust, redact_data, resolve_base_url)
from ansible_collections.mailsec.sendgrid.plugins.module_utils._text import escape_text
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import (
    FIELDS, PATH, converge, desired_state, failures_message, run_batch)
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._snapshot import (
    DEFAULT_DIR as DEFAULT_SNAPSHOT_DIR, SnapshotError, load as load_snapshot, locked, recorder_for, write_private_json)

# ansible-playbook's strategy imports this plugin in its own process before it forks the task's workers: the CA bundle
# loaded here (once, ~16 ms CPU) is inherited by the worker of every subuser host instead of loaded again by each.
prime_trust()

display = Display()

PREFIX = 'enforced_tls_policy_'
MODES = ('enforce', 'audit', 'preflight', 'restore', 'check_snapshot', 'journal')
DEFAULT_TIMEOUT = CONNECTION_ARGUMENT_SPEC['timeout']['default']
DEFAULT_MAX_RETRIES = CONNECTION_ARGUMENT_SPEC['max_retries']['default']
# Every enforced_tls_policy_* variable the role and playbooks know; any other is most likely a typo.
KNOWN = frozenset(FIELDS + ('api_key', 'region', 'api_url', 'on_behalf_of', 'timeout', 'max_retries', 'concurrency', 'hosts',
                            'mode', 'result', 'impact', 'impact_domains', 'max_blocked', 'impact_nameservers',
                            'impact_smtp_port', 'impact_ca_path', 'impact_timeout', 'impact_allow_private', 'batch', 'preflight',
                            'snapshot_dir'))
# The guardrail's role variables (enforced_tls_policy_impact_*) and the recipient_tls_info options they set.
IMPACT_OPTIONS = dict(impact_domains='domains', impact_nameservers='nameservers', impact_smtp_port='smtp_port',
                      impact_ca_path='ca_path', impact_timeout='timeout', impact_allow_private='allow_private')
DEFAULT_MODE_HINT = ('use the role\'s main entry point (not tasks_from=batch): the default per-subuser mode honours when:, '
                     'includes and every strategy')


BATCH_HINT = ('enforced_tls_policy_batch is true, but the role\'s main entry point converges each subuser in its own task run '
              '(as it did here): batch mode is the role\'s entry point tasks_from=batch, which ansible-playbook '
              'mailsec.sendgrid.enforce -e enforced_tls_policy_batch=true runs')


def _asks_for_batch(variables, templar):
    value = variables.get(PREFIX + 'batch')
    try:
        return not _unset(value) and boolean(templar.template(value), strict=False)
    except Exception:  # pylint: disable=broad-except  # a hint only: the variable is not used in this mode
        return False


def _unset(value):
    # Survey answers (AWX) arrive as '' when left empty: that means "not managed", like an undefined variable.
    return value is None or value == ''


class ActionModule(ActionBase):

    _supports_check_mode = True
    _supports_async = False
    # The task's own arguments (the policy comes from host variables). concurrency is checked by check_concurrency,
    # which names the role variable it comes from.
    ARGUMENT_SPEC = dict(
        mode=dict(type='str', choices=list(MODES), default='enforce'),
        batch=dict(type='bool', default=False),
        hosts=dict(type='list', elements='str'),
        concurrency=dict(type='raw', default=8),
        fail_on_error=dict(type='bool', default=True),
        fail_on_drift=dict(type='bool', default=False),
        snapshot=dict(type='str'),
        from_run=dict(type='bool', default=False),
    )

    def run(self, tmp=None, task_vars=None):
        super().run(tmp, task_vars)
        self._keys = set()  # every API key this task resolves, to be masked in its result
        # Ansible's own validation (public API): unknown arguments, choices and booleans, named as Ansible names them.
        args = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC)[1]
        mode, batch = args['mode'], args['batch'] or args['hosts'] is not None
        fail_on_error, fail_on_drift = args['fail_on_error'], args['fail_on_drift']
        if not HAS_REQUESTS:
            raise AnsibleActionFail(missing_required_lib('requests'))
        # An audit and a preflight only read, whatever the play's check mode says.
        check_mode = bool(self._task.check_mode) or mode not in ('enforce', 'restore')
        if mode in ('restore', 'check_snapshot') and batch:
            raise AnsibleActionFail('mode %s works per subuser host: batch and hosts are not supported with it' % mode)
        if mode == 'preflight':
            result = self._preflight_task(task_vars)
        elif mode == 'journal':
            result = journal_summary()
        elif mode == 'check_snapshot':
            result = self._check_snapshot_task(task_vars)
        elif mode == 'restore':
            result = self._restore_host(task_vars, check_mode)
        elif batch:
            result = self._run_batch(task_vars, args, mode, check_mode, fail_on_error)
        else:
            result = self._run_host(task_vars, mode, check_mode, fail_on_drift and mode == 'audit')
        # The client masks what it raises; this masks the result as a whole (the role prints it, the audit writes it
        # to reports, AWX stores it), with every key this task resolved, whatever no_log says.
        return redact_data(result, self._keys | {os.environ.get('SENDGRID_API_KEY')})

    # -- per host ---------------------------------------------------------------------------------------------------

    def _run_host(self, task_vars, mode, check_mode, fail_on_drift):
        host = task_vars['inventory_hostname']
        try:
            account, unknown = resolve_account(host, task_vars, self._templar)
            self._keys.add(account['connection']['api_key'])
        except ValueError as exc:
            return dict(failed=True, changed=False, msg='invalid Enforced TLS policy variables, nothing was sent to SendGrid: %s'
                        % exc)
        # The guardrail (enforce only) before anything is sent to SendGrid, then the preflight: each done once per run
        # by whichever host comes first, and its verdict shared by every host it covers, whatever the strategy.
        guard = result = self._guarded(account) if mode == 'enforce' else dict(failed=False)
        if not result['failed']:
            result = self._preflighted(account, host)
        if not result['failed']:
            result = self._converge_group(account['connection'], [account], check_mode, 1)[host]
        result = host_result(result, mode, bool(self._task.check_mode))
        result['host'] = host
        if guard.get('impact'):
            result['impact'] = guard['impact']
        _publish_snapshot(result, [result])
        if fail_on_drift and result.get('changes'):
            result.update(failed=True, msg='drifts from the policy: %s' % ', '.join(
                '%s is %s, the policy wants %s' % (field, d['current'], d['desired']) for field, d in result['differences'].items()))
        warnings = ['unknown variables ignored (a typo?): %s' % ', '.join(unknown)] if unknown else []
        if mode == 'enforce' and _asks_for_batch(task_vars, self._templar):
            warnings.append(BATCH_HINT)
        if warnings:
            # No host name in them: Ansible shows an identical warning once, not once per subuser.
            result['warnings'] = warnings
        return result

    # -- restore from a snapshot -----------------------------------------------------------------------------------

    def _snapshot_path(self):
        path = self._task.args.get('snapshot')
        if not isinstance(path, str) or not path.strip():
            raise AnsibleActionFail('snapshot is required with mode %s: the snapshot file to restore from (-e snapshot=FILE), '
                                    'got %r' % (self._task.args.get('mode'), path))
        # Relative to the directory ansible-playbook runs in, like the snapshot directory the role writes to.
        return os.path.abspath(os.path.expanduser(path.strip()))

    def _restore_account(self, host, task_vars):
        """The host's account for a restore: key, endpoint and the account written all from the host's own variables,
        never from a file (ValueError names the variable)."""
        # The policy variables are replaced: by the recorded values once the file is read (its key is needed to read
        # it), until then by a placeholder that is never sent.
        overlay = {PREFIX + field: _KEY_ONLY.get(field) for field in FIELDS}
        account, unknown = resolve_account(host, dict(task_vars, **overlay), self._templar)
        self._keys.add(account['connection']['api_key'])
        return account, unknown

    def _check_snapshot_task(self, task_vars):
        """Run once before a restore: the file is sound and every subuser it names is a host of the play."""
        path = self._snapshot_path()
        try:
            account = self._restore_account(task_vars['inventory_hostname'], task_vars)[0]
            document = load_snapshot(path, account['connection']['api_key'])
        except ValueError as exc:
            raise AnsibleActionFail('invalid connection variables, nothing was sent to SendGrid: %s' % exc)
        except SnapshotError as exc:
            raise AnsibleActionFail(str(exc))
        names = sorted(document['subusers'])
        in_play = set(task_vars.get('ansible_play_hosts_all') or ())
        missing = [name for name in names if name not in in_play]
        if missing and not task_vars.get('ansible_limit'):
            # Without --limit, a subuser the play cannot reach would silently keep the settings the snapshot undoes.
            raise AnsibleActionFail(
                'snapshot %s names %d subuser(s) that are not hosts of this play, so they could not be restored: %s. Use the '
                'inventory the snapshot was taken with, or --limit to restore only some subusers; nothing was sent to SendGrid'
                % (path, len(missing), ', '.join(missing)))
        selected = [name for name in names if name in in_play]
        result = dict(changed=False, snapshot=path, created=document['created'], subusers=selected, left_out=missing,
                      msg='snapshot %s (taken %s) holds %d subuser(s); %d of them in this play%s' % (
                          path, document['created'], len(names), len(selected),
                          ' (the others are left out by --limit)' if missing else ''))
        pending = sorted(name for name, entry in document['subusers'].items() if entry.get('pending'))
        if pending:
            # Harmless to restore (only what differs is written), but worth knowing: that run did not end normally.
            result['warnings'] = ['the run that wrote %s stopped while writing %s: restoring them writes only what differs'
                                  % (path, ', '.join(pending))]
        return result

    def _restored_document(self, account):
        """(path, document) to restore from: the file handed over (``snapshot``), or with ``from_run`` what this run
        recorded, checked against the end and seal the run noted in its private directory (the rollout)."""
        key = account['connection']['api_key']
        if not boolean(self._task.args.get('from_run', False), strict=False):
            path = self._snapshot_path()
            return path, load_snapshot(path, key)
        # The rollout's watch window is long: a file swapped meanwhile, even a sound journal of the same key, is refused.
        path, document = recorder_for(_run_dir(), account['snapshot_dir'], key).recorded()
        if self._task.args.get('snapshot') and self._snapshot_path() != path:
            raise SnapshotError('snapshot %s is not the file this run recorded (%s): it is not restored from' % (
                self._snapshot_path(), path))
        return path, document

    def _restore_host(self, task_vars, check_mode):
        """Converge one host back to the settings the snapshot recorded for it (GET, then a PATCH only if they differ)."""
        host = task_vars['inventory_hostname']
        try:
            account, unknown = self._restore_account(host, task_vars)
        except ValueError as exc:
            return dict(failed=True, changed=False, msg='invalid connection variables, nothing was sent to SendGrid: %s' % exc)
        try:
            path, document = self._restored_document(account)
        except SnapshotError as exc:
            return dict(failed=True, changed=False, host=host, msg=str(exc))
        entry = document['subusers'].get(host)
        if entry is None:
            return dict(changed=False, skipped=True, host=host, msg='%s is not in the snapshot %s: nothing to restore' % (host, path))
        if entry['on_behalf_of'] != account['on_behalf_of']:
            # A file never chooses the account: even one sealed under the key is refused rather than followed.
            accounts = _account_name(entry['on_behalf_of']), _account_name(account['on_behalf_of'])
            return dict(failed=True, changed=False, host=host, msg=(
                '%s: the snapshot %s records its settings for %s, but the host\'s variables address %s (%son_behalf_of, '
                'default the host name; \'\' = the parent account). A restore writes only the account of the host it runs '
                'for. Nothing was sent to SendGrid' % ((host, path) + accounts + (PREFIX,))))
        endpoint = resolve_base_url(account['connection']['region'], account['connection']['api_url'])
        if endpoint != entry['endpoint']:
            # The key goes where the host's variables say, never where a file says: a mismatch is refused, not followed.
            return dict(failed=True, changed=False, msg='%s was written on %s (snapshot %s), but its variables address %s; set '
                        '%sregion or %sapi_url to match. Nothing was sent to SendGrid' % (
                            host, entry['endpoint'], path, endpoint, PREFIX, PREFIX))
        # What desired_state would make of it: load_snapshot refuses "previous" in any other form.
        account.update(desired=dict(entry['previous']), snapshot_dir=None)  # a restore is not recorded again
        result = self._preflighted(account, host)
        if not result['failed']:
            result = self._converge_group(account['connection'], [account], check_mode, 1)[host]
        result = host_result(result, 'enforce', bool(self._task.check_mode))
        result.update(host=host, restored_from=path)
        if unknown:
            result['warnings'] = ['unknown variables ignored (a typo?): %s' % ', '.join(unknown)]
        return result

    # -- preflight --------------------------------------------------------------------------------------------------

    def _preflight_task(self, task_vars):
        host = task_vars['inventory_hostname']
        try:
            account = resolve_account(host, task_vars, self._templar)[0]
            self._keys.add(account['connection']['api_key'])
        except ValueError:
            # The per-host task names the variable under the host's own name; a preflight has nothing to check yet.
            return dict(changed=False, skipped=True, msg='no valid connection variables on %s: nothing to check' % host)
        verdict = preflight_once(account['connection'], host)
        if not verdict['ok']:
            return dict(failed=True, changed=False, msg=verdict['msg'])
        return dict(changed=False, msg='SendGrid answered the parent account read on %s' % verdict['endpoint'])

    def _guarded(self, account):
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

    def _preflighted(self, account, host):
        verdict = preflight_once(account['connection'], host)
        if verdict['ok']:
            return dict(failed=False)
        if verdict['host'] == host:
            return dict(failed=True, changed=False, status='failed', msg=verdict['msg'])
        return dict(failed=True, changed=False, status='failed',
                    msg='not attempted (no request was sent for this subuser): %s' % verdict['msg'])

    # -- batch ------------------------------------------------------------------------------------------------------

    def _run_batch(self, task_vars, args, mode, check_mode, fail_on_error):
        self._refuse_unscoped_batch()
        hosts = task_vars.get('ansible_play_batch') if args['hosts'] is None else args['hosts']
        try:
            concurrency = check_concurrency(args['concurrency'], PREFIX + 'concurrency')
        except ValueError as exc:
            raise AnsibleActionFail(str(exc))

        accounts, errors, unknown = [], [], set()
        for host, variables in self._host_vars(hosts):
            try:
                account, unknown_here = resolve_account(host, variables, self._templar.copy_with_new_env(available_variables=variables))
            except ValueError as exc:
                errors.append('%s: %s' % (host, exc))
                continue
            unknown.update(unknown_here)
            accounts.append(account)
            self._keys.add(account['connection']['api_key'])
        if errors:
            raise AnsibleActionFail('invalid Enforced TLS policy variables, nothing was sent to SendGrid:\n- ' + '\n- '.join(errors))

        results = {}
        if mode == 'enforce':
            for account in accounts:
                refused = self._guarded(account)
                if refused['failed']:
                    results[account['host']] = refused
        for connection, group in _by_connection(account for account in accounts if account['host'] not in results).items():
            verdict = self._preflighted(group[0], group[0]['host'])
            if verdict['failed']:
                results.update((account['host'], dict(verdict)) for account in group)
            else:
                results.update(self._converge_group(dict(connection), group, check_mode, concurrency))

        report = [dict(host_result(results[host], mode, bool(self._task.check_mode)), host=host) for host in hosts]
        failed = {r['host']: r['msg'] for r in report if r['failed']}
        # Under serial:, a failing task here would end the play for later batches too: failures are kept for the
        # run and reported by the role after the play's last batch.
        failed_all, last_batch, processed = record_batch(self._task.get_play(), hosts, failed, task_vars.get('ansible_play_hosts', hosts))
        result = dict(
            changed=mode == 'enforce' and any(r['changed'] for r in report),
            mode=mode,
            check_mode=check_mode,
            results=report,
            summary=_summary(report),
            failed_hosts=failed,
            failed_hosts_all=failed_all,
            last_batch=last_batch,
            diff=[dict(r['diff'], before_header=r['host'], after_header=r['host']) for r in report if r.get('diff')],
        )
        if unknown:
            result['warnings'] = ['unknown variables ignored (a typo?): %s' % ', '.join(sorted(unknown))]
        _publish_snapshot(result, report)
        summary = result['summary']
        result['msg'] = '%d compliant, %d changed, %d would change, %d failed' % tuple(
            len(summary[status]) for status in ('compliant', 'changed', 'would_change', 'failed'))
        display.display('Enforced TLS batch of %d subusers: %s' % (len(report), result['msg']))
        # Failing the task ends the play (a run_once task fails every host of it), so under serial: the failures of every
        # batch are named once, after the play's last batch; a task given its own hosts fails at once.
        failing, total = (failed, len(report)) if args['hosts'] is not None else (failed_all if last_batch else {}, processed)
        if failing and fail_on_error:
            result.update(failed=True, msg=failures_message(failing, total, 'subusers'))
        return result

    def _refuse_unscoped_batch(self):
        """Batch mode works on the whole play batch; refuse (before any request) where that is not the task's scope."""
        task = self._task
        if not task.run_once:
            raise AnsibleActionFail('batch mode must run with run_once: true (it converges every host of the play batch); '
                                    + DEFAULT_MODE_HINT)
        strategy = (task.get_play().strategy or C.DEFAULT_STRATEGY).rsplit('.', 1)[-1]
        if strategy != 'linear':
            raise AnsibleActionFail('batch mode (enforced_tls_policy_batch) is refused under the %r strategy: it works for '
                                    'the whole play batch at once, which only the linear strategy keeps together; %s'
                                    % (strategy, DEFAULT_MODE_HINT))
        conditions, include = _scope_conditions(task)
        if conditions:
            raise AnsibleActionFail('batch mode (enforced_tls_policy_batch) is refused under a when: condition (%s): it would '
                                    'converge every host of the play batch, including hosts the condition leaves out; %s'
                                    % ('; '.join(str(c) for c in conditions), DEFAULT_MODE_HINT))
        if include is not None:
            raise AnsibleActionFail('batch mode (enforced_tls_policy_batch) is refused inside %s with a loop: its scope is '
                                    'not the play batch; %s' % (include, DEFAULT_MODE_HINT))

    def _host_vars(self, names):
        """Each host's variables as Ansible would give them to a task of this play on that host."""
        manager = self._task.get_variable_manager()
        inventory = manager._inventory  # pylint: disable=protected-access
        play = self._task.get_play()
        for name in names:
            host = inventory.get_host(name)
            if host is None:
                raise AnsibleActionFail('hosts: %r is not in the inventory' % name)
            yield name, play_vars_for_host(manager, play, host, self._task, names)

    # -- shared -----------------------------------------------------------------------------------------------------

    def _converge_group(self, connection, group, check_mode, concurrency):
        """Converge (or, in check mode, only read) accounts that share an endpoint and key."""
        try:
            # Pacing by X-RateLimit-*: the per-subuser mode's worker processes share it through the run's directory;
            # batch mode's threads share the client's own.
            from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._pace_shared import shared_pace
            pace = shared_pace(os.path.join(_run_dir(), 'pace-%s' % _fingerprint(connection)[0])) if concurrency == 1 else None
            client = SendGridClient(pool_size=concurrency, pace=pace, **connection)
        except SendGridError as exc:
            outcome = [dict(failed=True, changed=False, status='failed', msg=str(exc)) for dummy in group]
        else:
            try:
                outcome = run_batch(lambda account: converge(client, account['desired'], account['on_behalf_of'], check_mode,
                                                             None if check_mode else _recorder(account)),
                                    group, concurrency)
            finally:
                client.close()
        results = {}
        for account, result in zip(group, outcome):
            result.update(desired=account['desired'], on_behalf_of=account['on_behalf_of'])
            results[account['host']] = result
        return results


def play_vars_for_host(manager, play, host, task, names):
    """VariableManager.get_vars for another host of the play (batch mode only).

    ``_hosts``/``_hosts_all`` spare Ansible from listing the play's hosts once per host (~0.3 s instead of
    minutes for 1,000 hosts); ansible-core calls them private, so an ansible-core without them gets the
    plain call, which is slower but gives the same variables.
    """
    try:
        return manager.get_vars(play=play, host=host, task=task, _hosts=names, _hosts_all=names)
    except TypeError:
        return manager.get_vars(play=play, host=host, task=task)


def _own(node, name):
    """A playbook object's own value of an attribute, not the one it inherits from its parents."""
    value = getattr(node, '_' + name, Sentinel)
    if value is Sentinel:  # ansible-core releases that keep attributes in a dict
        value = getattr(node, '_attributes', {}).get(name, Sentinel)
    return None if value is Sentinel else value


def _scope_conditions(task):
    """The when: conditions the task inherits (blocks, includes, imports, roles: entries), and a looping include."""
    conditions, include, seen = [], None, set()
    nodes = [task._parent, task._role]  # pylint: disable=protected-access
    while nodes:
        node = nodes.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        own = _own(node, 'when')
        if own:
            conditions.extend(own if isinstance(own, list) else [own])
        if _own(node, 'loop') is not None:
            include = getattr(node, 'action', 'an include')
        nodes.extend((getattr(node, '_parent', None), getattr(node, '_role', None)))
        nodes.extend(getattr(node, '_parents', None) or ())
        nodes.extend(getattr(node, '_dep_chain', None) or ())
    return conditions, include


def resolve_account(host, variables, templar):
    """One host's account, policy and connection from its enforced_tls_policy_* variables (ValueError names the variable)."""
    unknown = sorted(name for name in variables if name.startswith(PREFIX) and name[len(PREFIX):] not in KNOWN)

    def var(name, default=None):
        return templar.template(variables[PREFIX + name]) if PREFIX + name in variables else default

    try:
        policy = {field: var(field) for field in FIELDS}
        for field in ('require_tls', 'require_valid_cert'):
            policy[field] = _boolean(policy[field], PREFIX + field)
        desired = desired_state({k: v for k, v in policy.items() if not _unset(v)}, name_prefix=PREFIX)
        if not desired:
            raise ValueError('no policy: set at least one of %s' % ', '.join(PREFIX + f for f in FIELDS))
        on_behalf_of = var('on_behalf_of', host)
        region, api_url = resolve_endpoint(var, variables)
        connection = dict(
            # Normalized here, so that "KEY" and "KEY\n" (a vault file's newline) share one preflight and one client.
            api_key=normalize_api_key(var('api_key') or os.environ.get('SENDGRID_API_KEY'), PREFIX + 'api_key'),
            region=region,
            api_url=api_url,
            timeout=_number(var('timeout'), float, PREFIX + 'timeout', DEFAULT_TIMEOUT),
            max_retries=_number(var('max_retries'), int, PREFIX + 'max_retries', DEFAULT_MAX_RETRIES),
        )
        check_connection_params(dict(connection, on_behalf_of=on_behalf_of or None), prefix=PREFIX)
        concurrency = check_concurrency(var('concurrency', 8), PREFIX + 'concurrency')
        snapshot_dir = var('snapshot_dir', DEFAULT_SNAPSHOT_DIR)
        if not isinstance(snapshot_dir, str) or not snapshot_dir.strip():
            raise ValueError('%ssnapshot_dir must be a directory path (where every write\'s previous settings are kept), got %r'
                             % (PREFIX, snapshot_dir))
        impact = impact_settings(var, desired)
    except (TypeError, SendGridConfigError) as exc:
        raise ValueError(str(exc))
    return dict(host=host, on_behalf_of=on_behalf_of or None, desired=desired, connection=connection,
                concurrency=concurrency, snapshot_dir=snapshot_dir, impact=impact), unknown


def resolve_endpoint(var, variables):
    """(region, api_url) of a host: the first of these that is set wins, api_url over region within it.

    The role's variables; the host's own (sendgrid_api_url, sendgrid_region: the subusers inventory sets them from where
    the subuser lives and the endpoint it was listed from); the environment (SENDGRID_API_URL, SENDGRID_REGION, as for
    the modules and the AWX credential type); else SendGrid's global endpoint.
    """
    levels = (
        (var('api_url'), var('region')),
        (variables.get('sendgrid_api_url'), variables.get('sendgrid_region')),
        (os.environ.get('SENDGRID_API_URL'), os.environ.get('SENDGRID_REGION')),
    )
    for api_url, region in levels:
        if not _unset(api_url):
            return region if not _unset(region) else 'global', api_url
        if not _unset(region):
            return region, None
    return 'global', None


def impact_settings(var, desired):
    """The guardrail of one host: None without enforced_tls_policy_impact_domains, else what its preview needs.

    The preview judges the host's own policy; a setting it leaves unmanaged counts as SendGrid's default (what the
    account has unless someone changed it).
    """
    domains = var('impact_domains')
    if _unset(domains) or domains == []:
        return None
    options = {option: var(name) for name, option in IMPACT_OPTIONS.items()}
    options = {option: value for option, value in options.items() if not _unset(value)}
    if not isinstance(options['domains'], list):
        raise ValueError('%simpact_domains must be a list of recipient domains, got %r' % (PREFIX, options['domains']))
    if 'allow_private' in options:
        options['allow_private'] = _boolean(options['allow_private'], PREFIX + 'impact_allow_private')
    for option, kind in (('smtp_port', int), ('timeout', float)):
        if option in options:
            options[option] = _number(options[option], kind, PREFIX + 'impact_' + option)
    options.update(desired)
    max_blocked = _number(var('max_blocked'), int, PREFIX + 'max_blocked', 0)
    if max_blocked < 0:
        raise ValueError('%smax_blocked must be a whole number of 0 or more, got %d' % (PREFIX, max_blocked))
    return dict(options=options, max_blocked=max_blocked)


def _boolean(value, name):
    # Survey answers arrive as strings ("true"); anything else is named, not guessed.
    if isinstance(value, str) and not _unset(value):
        try:
            return boolean(value, strict=True)
        except TypeError:
            raise ValueError('%s must be a boolean (true or false), got %r' % (name, value))
    return value


def _number(value, kind, name, default=None):
    """An int or float variable (survey answers are strings), or ``default`` when unset; ValueError names it."""
    if _unset(value):
        return default
    what = 'a whole number' if kind is int else 'a number'
    if isinstance(value, bool):
        raise ValueError('%s must be %s, got %r' % (name, what, value))
    try:
        number = kind(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError('%s must be %s, got %r' % (name, what, value))
    if kind is int and isinstance(value, float) and value != number:
        raise ValueError('%s must be %s, got %r' % (name, what, value))
    return number


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


# -- the preflight, once per endpoint and key for the whole ansible-playbook run --------------------------------------

def _run_dir():
    # Ansible's per-run local temporary directory: created by the ansible-playbook process before it forks its workers,
    # private to the user (0700) and removed when the run ends.
    path = os.path.join(C.DEFAULT_LOCAL_TMP, 'mailsec_sendgrid')
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _fingerprint(connection):
    # The key is never written down: only a salted hash of endpoint and key names the verdict's file.
    endpoint = resolve_base_url(connection.get('region'), connection.get('api_url'))
    material = json.dumps([C.DEFAULT_LOCAL_TMP, endpoint, connection['api_key']])
    return hashlib.sha256(material.encode('utf-8', 'surrogatepass')).hexdigest()[:32], endpoint


def once_per_run(name, decide):
    """The run's verdict ``name``: the first caller (any worker process, any host) computes it with ``decide()`` under a
    lock and writes it to the run's private directory; every later caller reads it. The same for whichever hosts a
    condition selects and under every strategy, which run_once is not."""
    path = os.path.join(_run_dir(), name)
    with locked(path + '.lock'):
        try:
            with open(path + '.json', encoding='utf-8') as verdict_file:
                return json.load(verdict_file)
        except (OSError, ValueError):
            pass
        verdict = decide()
        write_private_json(path + '.json', verdict)
        return verdict


def preflight_once(connection, host):
    """The run's verdict on an endpoint and key: {'ok', 'msg', 'host', 'endpoint'}; the first caller does the request."""
    fingerprint, endpoint = _fingerprint(connection)

    def decide():
        verdict = dict(ok=True, msg='', host=host, endpoint=endpoint)
        try:
            client = SendGridClient(**connection)
            try:
                client.request('GET', PATH)
            finally:
                client.close()
        except SendGridError as exc:
            verdict.update(ok=False, msg='preflight of %s failed (it reads the parent account once for every subuser '
                                         'with this API key and endpoint): %s' % (endpoint, exc))
        return verdict
    return once_per_run('preflight-%s' % fingerprint, decide)


def guardrail_once(impact):
    """The run's verdict on one policy's impact preview: {'ok', 'msg', 'impact'}; the first caller runs the preview.

    Every host of the run whose policy and guardrail variables are the same shares it (one preview, one set of DNS and
    SMTP probes per run), whichever hosts a condition selects and whatever the strategy: no host writes before it.
    """
    material = json.dumps([C.DEFAULT_LOCAL_TMP, impact], sort_keys=True, default=str)
    fingerprint = hashlib.sha256(material.encode('utf-8', 'surrogatepass')).hexdigest()[:32]
    return once_per_run('guardrail-%s' % fingerprint, lambda: _guardrail_verdict(impact))


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


_IMPACT_VARIABLES = {option: name for name, option in IMPACT_OPTIONS.items()}
_IMPACT_OPTION_NAMES = re.compile(r'\b(%s)\b' % '|'.join(_IMPACT_VARIABLES))


def record_batch(play, hosts, failed, play_hosts):
    """Remember this batch's hosts and failures for the run: (every failure so far, whether the batch is the last, how many
    hosts the run's batches have had)."""
    path = os.path.join(_run_dir(), 'batch-%s' % hashlib.sha256(str(play._uuid).encode()).hexdigest()[:16])  # pylint: disable=protected-access
    with locked(path + '.lock'):
        try:
            with open(path + '.json', encoding='utf-8') as state_file:
                state = json.load(state_file)
        except (OSError, ValueError):
            state = dict(processed=[], failed={})
        state['processed'] = sorted(set(state['processed']) | set(hosts))
        state['failed'].update(failed)
        write_private_json(path + '.json', state)
    # ansible_play_hosts holds every host of the play still in the game, later serial batches included.
    last = set(play_hosts) <= set(state['processed'])
    return state['failed'], last, len(state['processed'])


def journal_summary():
    """The snapshot journals this run has written (the Recorders' state files in the run directory), for the run's end."""
    journals = []
    run_dir = _run_dir()
    for name in sorted(os.listdir(run_dir)):
        if name.startswith('snapshot-') and name.endswith('.state'):
            try:
                with open(os.path.join(run_dir, name), encoding='utf-8') as handle:
                    state = json.load(handle)
                journals.append(dict(path=state['path'], subusers=state['hosts']))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    if not journals:
        return dict(changed=False, journals=[], msg='This run wrote nothing, so it has no snapshot journal.')
    return dict(changed=False, journals=journals, msg='; '.join(
        'Snapshot journal of this run: %s (%d subuser%s); undo with ansible-playbook mailsec.sendgrid.restore -i INVENTORY '
        '-e snapshot=%s' % (item['path'], item['subusers'], '' if item['subusers'] == 1 else 's', item['path'])
        for item in journals))


# Resolves a host's connection before its snapshot is read; never sent (the recorded values replace it).
_KEY_ONLY = {'require_tls': False}


def _account_name(on_behalf_of):
    return 'the parent account' if on_behalf_of is None else 'account %r' % on_behalf_of


def _recorder(account):
    """The snapshot hook of one account's write (None: not recorded), in the run's snapshot file of its directory."""
    if not account.get('snapshot_dir'):
        return None
    connection = account['connection']
    recorder = recorder_for(_run_dir(), account['snapshot_dir'], connection['api_key'])
    return functools.partial(recorder.record, account['host'], account['on_behalf_of'],
                             resolve_base_url(connection['region'], connection['api_url']), connection['region'])


def _publish_snapshot(result, reports):
    """Custom stats (what set_stats publishes: AWX shows them as the job's artifacts) for the snapshot entries written.

    Per run, not per host: the path, and a count Ansible adds up over every task of the run (each entry counted once).
    """
    recorded = [report['snapshot'] for report in reports if report.get('snapshot')]
    if recorded:
        result['ansible_stats'] = dict(per_host=False, aggregate=True, data=dict(
            enforced_tls_snapshot=dict(path=recorded[-1]['path']),
            enforced_tls_snapshot_subusers=sum(1 for item in recorded if item['new'])))


def _by_connection(accounts):
    groups = {}
    for account in accounts:
        groups.setdefault(tuple(sorted(account['connection'].items())), []).append(account)
    return groups


def _summary(report):
    summary = dict(compliant=[], changed=[], would_change=[], failed=[])
    for item in report:
        summary[item['status']].append(item['host'])
    return summary
