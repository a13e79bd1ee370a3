# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The engine of the enforced_tls_policy role, on the controller (no module start-up per subuser).

Ways to run, chosen by the role; each is one entry point below, the work in plugins/plugin_utils/:

* per host (the default): the task runs for each subuser host in that host's own task run, so
  Ansible's host model (``when:``, includes, ``--limit``, ``serial:``, any strategy, the recap, retry
  files, AWX host events) holds. It reads that host's variables from ``task_vars``;
* ``mode: preflight`` (``run_once``): reads the parent account once per API endpoint and key, so a bad
  key or an unreachable API fails the run once instead of once per subuser;
* ``batch: true`` (``run_once``): converges every host of the play batch in one task, for fleets in
  the thousands. It resolves the other hosts' variables itself and refuses to run where it cannot
  know its scope (under ``when:``, a conditional include, a strategy other than linear);
* ``mode: check_snapshot`` and ``mode: restore`` (per host; the snapshot is read once per run): the restore playbook's, and the rollout's
  (``from_run``), in _restore.py;
* ``mode: journal``: the snapshot journals this run wrote.

The guardrail and preflight verdicts are shared by every worker process of one ``ansible-playbook`` run through files in
Ansible's per-run local temporary directory (_run_state.py): whichever task reaches an endpoint and key first checks it,
under a lock, and every later task reuses the verdict. Every write is recorded first in the run's snapshot file
(_snapshot.py).
"""

from __future__ import annotations

import os

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.module_utils.basic import missing_required_lib
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import check_concurrency
from ansible_collections.mailsec.sendgrid.plugins.module_utils._redact import redact_data
from ansible_collections.mailsec.sendgrid.plugins.module_utils._transport import HAS_REQUESTS, prime_trust
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import failures_message
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._fleet_converge import (
    converge_accounts, guarded, host_result, preflight_once, preflighted, publish_snapshot)
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._fleet_hosts import (
    PREFIX, asks_for_batch, play_vars_for_host, resolve_account, scope_conditions, unknown_warning)
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._restore import check_snapshot, restore_host
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._run_state import journal_summary, record_batch

# ansible-playbook's strategy imports this plugin in its own process before it forks the task's workers: the CA bundle
# loaded here (once, ~16 ms CPU) is inherited by the worker of every subuser host instead of loaded again by each.
prime_trust()

display = Display()

MODES = ('enforce', 'audit', 'preflight', 'restore', 'check_snapshot', 'journal')
DEFAULT_MODE_HINT = ('use the role\'s main entry point (not tasks_from=batch): the default per-subuser mode honours when:, '
                     'includes and every strategy')
BATCH_HINT = ('enforced_tls_policy_batch is true, but the role\'s main entry point converges each subuser in its own task run '
              '(as it did here): batch mode is the role\'s entry point tasks_from=batch, which ansible-playbook '
              'mailsec.sendgrid.enforce -e enforced_tls_policy_batch=true runs')


class ActionModule(ActionBase):

    _supports_check_mode = True
    _supports_async = False
    # The task's own arguments (the policy comes from host variables), as plugins/modules/enforced_tls_fleet.py documents
    # them (tests/unit/plugins/action/test_argument_specs.py holds the two together). concurrency is raw: check_concurrency
    # names the role variable it comes from.
    ARGUMENT_SPEC = dict(
        mode=dict(type='str', choices=list(MODES), default='enforce'),
        batch=dict(type='bool', default=False),
        hosts=dict(type='list', elements='str'),
        concurrency=dict(type='raw', default=8),
        fail_on_error=dict(type='bool', default=True),
        fail_on_drift=dict(type='bool', default=False),
        snapshot=dict(type='path'),
        from_run=dict(type='bool', default=False),
    )

    def run(self, tmp=None, task_vars=None):
        super().run(tmp, task_vars)
        self._keys = set()  # every API key this task resolves, to be masked in its result
        # Ansible's own validation (public API): unknown arguments, choices and booleans, named as Ansible names them.
        args = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC)[1]
        mode, batch = args['mode'], args['batch'] or args['hosts'] is not None
        if not HAS_REQUESTS:
            raise AnsibleActionFail(missing_required_lib('requests'))
        task_check_mode = bool(self._task.check_mode)
        # An audit and a preflight only read, whatever the play's check mode says.
        check_mode = task_check_mode or mode not in ('enforce', 'restore')
        if mode in ('restore', 'check_snapshot') and batch:
            raise AnsibleActionFail('mode %s works per subuser host: batch and hosts are not supported with it' % mode)
        if mode == 'preflight':
            result = self._preflight(task_vars)
        elif mode == 'journal':
            result = journal_summary()
        elif mode == 'check_snapshot':
            result = check_snapshot(task_vars, self._templar, args, self._keys)
        elif mode == 'restore':
            result = restore_host(task_vars, self._templar, args, check_mode, task_check_mode, self._keys)
        elif batch:
            result = self._run_batch(task_vars, args, mode, check_mode)
        else:
            result = self._run_host(task_vars, mode, check_mode, args['fail_on_drift'] and mode == 'audit')
        # The client masks what it raises; this masks the result as a whole (the role prints it, the audit writes it
        # to reports, AWX stores it), with every key this task resolved, whatever no_log says.
        return redact_data(result, self._keys | {os.environ.get('SENDGRID_API_KEY')})

    def _resolve(self, host, variables, templar):
        account, unknown = resolve_account(host, variables, templar)
        self._keys.add(account['connection']['api_key'])
        return account, unknown

    def _run_host(self, task_vars, mode, check_mode, fail_on_drift):
        host = task_vars['inventory_hostname']
        try:
            account, unknown = self._resolve(host, task_vars, self._templar)
        except ValueError as exc:
            return dict(failed=True, changed=False, msg='invalid Enforced TLS policy variables, nothing was sent to SendGrid: %s'
                        % exc)
        # The guardrail (enforce only) before anything is sent to SendGrid, then the preflight: each done once per run
        # by whichever host comes first, and its verdict shared by every host it covers, whatever the strategy.
        guard = result = guarded(account) if mode == 'enforce' else dict(failed=False)
        if not result['failed']:
            result = preflighted(account, host)
        if not result['failed']:
            result = converge_accounts(account['connection'], [account], check_mode, 1)[host]
        result = host_result(result, mode, bool(self._task.check_mode))
        result['host'] = host
        if guard.get('impact'):
            result['impact'] = guard['impact']
        publish_snapshot(result, [result])
        if fail_on_drift and result.get('changes'):
            result.update(failed=True, msg='drifts from the policy: %s' % ', '.join(
                '%s is %s, the policy wants %s' % (field, d['current'], d['desired']) for field, d in result['differences'].items()))
        warnings = unknown_warning(unknown)
        if mode == 'enforce' and asks_for_batch(task_vars, self._templar):
            warnings.append(BATCH_HINT)
        if warnings:
            result['warnings'] = warnings
        return result

    def _preflight(self, task_vars):
        host = task_vars['inventory_hostname']
        try:
            account = self._resolve(host, task_vars, self._templar)[0]
        except ValueError:
            # The per-host task names the variable under the host's own name; a preflight has nothing to check yet.
            return dict(changed=False, skipped=True, msg='no valid connection variables on %s: nothing to check' % host)
        verdict = preflight_once(account['connection'], host)
        if not verdict['ok']:
            return dict(failed=True, changed=False, msg=verdict['msg'])
        return dict(changed=False, msg='SendGrid answered the parent account read on %s' % verdict['endpoint'])

    def _run_batch(self, task_vars, args, mode, check_mode):
        self._refuse_unscoped_batch()
        hosts = task_vars.get('ansible_play_batch') if args['hosts'] is None else args['hosts']
        try:
            concurrency = check_concurrency(args['concurrency'], PREFIX + 'concurrency')
        except ValueError as exc:
            raise AnsibleActionFail(str(exc))

        accounts, errors, unknown = [], [], set()
        for host, variables in self._host_vars(hosts):
            try:
                account, unknown_here = self._resolve(host, variables, self._templar.copy_with_new_env(available_variables=variables))
            except ValueError as exc:
                errors.append('%s: %s' % (host, exc))
                continue
            unknown.update(unknown_here)
            accounts.append(account)
        if errors:
            raise AnsibleActionFail('invalid Enforced TLS policy variables, nothing was sent to SendGrid:\n- ' + '\n- '.join(errors))

        results = {}
        if mode == 'enforce':
            for account in accounts:
                refused = guarded(account)
                if refused['failed']:
                    results[account['host']] = refused
        groups = {}
        for account in accounts:
            if account['host'] not in results:
                groups.setdefault(tuple(sorted(account['connection'].items())), []).append(account)
        for connection, group in groups.items():
            verdict = preflighted(group[0], group[0]['host'])
            if verdict['failed']:
                results.update((account['host'], dict(verdict)) for account in group)
            else:
                results.update(converge_accounts(dict(connection), group, check_mode, concurrency))

        report = [dict(host_result(results[host], mode, bool(self._task.check_mode)), host=host) for host in hosts]
        failed = {r['host']: r['msg'] for r in report if r['failed']}
        # Under serial:, a failing task here would end the play for later batches too: failures are kept for the
        # run and reported by the role after the play's last batch.
        failed_all, last_batch, processed = record_batch(self._task.get_play(), hosts, failed, task_vars.get('ansible_play_hosts', hosts))
        summary = dict(compliant=[], changed=[], would_change=[], failed=[])
        for item in report:
            summary[item['status']].append(item['host'])
        result = dict(
            changed=mode == 'enforce' and any(r['changed'] for r in report),
            mode=mode,
            check_mode=check_mode,
            results=report,
            summary=summary,
            failed_hosts=failed,
            failed_hosts_all=failed_all,
            last_batch=last_batch,
            diff=[dict(r['diff'], before_header=r['host'], after_header=r['host']) for r in report if r.get('diff')],
        )
        if unknown:
            result['warnings'] = unknown_warning(unknown)
        publish_snapshot(result, report)
        result['msg'] = '%d compliant, %d changed, %d would change, %d failed' % tuple(
            len(summary[status]) for status in ('compliant', 'changed', 'would_change', 'failed'))
        display.display('Enforced TLS batch of %d subusers: %s' % (len(report), result['msg']))
        # Failing the task ends the play (a run_once task fails every host of it), so under serial: the failures of every
        # batch are named once, after the play's last batch; a task given its own hosts fails at once.
        failing, total = (failed, len(report)) if args['hosts'] is not None else (failed_all if last_batch else {}, processed)
        if failing and args['fail_on_error']:
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
        conditions, include = scope_conditions(task)
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
