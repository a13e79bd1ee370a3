# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The fleet path: one task converges (or audits) every subuser host of the play.

A task that runs once per host costs Ansible ~20 ms per host before any HTTP
request, so 1,000 subusers would pay ~20 s per task. This action runs once: it
resolves each host's ``enforced_tls_policy_*`` variables on the controller (with
Ansible's own variable precedence, so host/group vars override), validates all of
them before any request, and converges the accounts with the same code as the
``enforced_tls`` module's ``accounts`` batch, one client per API endpoint and key.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.mailsec.sendgrid.plugins.module_utils.api import (
    HAS_REQUESTS, SendGridClient, SendGridConfigError, SendGridError, check_connection_params)
from ansible_collections.mailsec.sendgrid.plugins.module_utils.enforced_tls import FIELDS, converge, desired_state, run_batch

PREFIX = 'enforced_tls_policy_'
MODES = ('enforce', 'audit')
# Every enforced_tls_policy_* variable the role and playbooks know; any other is most likely a typo.
KNOWN = frozenset(FIELDS + ('api_key', 'region', 'api_url', 'on_behalf_of', 'concurrency', 'hosts', 'mode', 'result', 'impact',
                            'impact_domains', 'max_blocked', 'impact_nameservers', 'impact_smtp_port', 'impact_ca_path',
                            'impact_timeout'))


def _unset(value):
    # Survey answers (AWX) arrive as '' when left empty: that means "not managed", like an undefined variable.
    return value is None or value == ''


class ActionModule(ActionBase):

    _supports_check_mode = True
    _supports_async = False
    _VALID_ARGS = frozenset(('mode', 'hosts', 'concurrency', 'fail_on_error'))

    def run(self, tmp=None, task_vars=None):
        super().run(tmp, task_vars)
        args = self._task.args
        unknown_args = set(args) - self._VALID_ARGS
        if unknown_args:
            raise AnsibleActionFail('unsupported parameters: %s (supported: %s)' % (
                ', '.join(sorted(unknown_args)), ', '.join(sorted(self._VALID_ARGS))))
        mode = args.get('mode', 'enforce')
        if mode not in MODES:
            raise AnsibleActionFail('mode must be one of %s, got %r' % (', '.join(MODES), mode))
        try:
            concurrency = int(args.get('concurrency', 8))
            fail_on_error = boolean(args.get('fail_on_error', True), strict=True)
        except (TypeError, ValueError) as exc:
            raise AnsibleActionFail('concurrency must be an integer and fail_on_error a boolean: %s' % exc)
        if not 1 <= concurrency <= 64:
            raise AnsibleActionFail('concurrency (the role\'s %sconcurrency) must be an integer from 1 to 64, got %d' % (PREFIX, concurrency))
        hosts = args.get('hosts', task_vars.get('ansible_play_batch'))
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise AnsibleActionFail('hosts must be a list of inventory host names, got %r' % (hosts,))

        accounts, errors, unknown = self._resolve(hosts)
        if errors:
            raise AnsibleActionFail('invalid Enforced TLS policy variables, nothing was sent to SendGrid:\n- '
                                    + '\n- '.join(errors))

        if not HAS_REQUESTS:
            raise AnsibleActionFail(missing_required_lib('requests'))
        # An audit only reads: exactly one GET per account, whatever the play's check mode says.
        check_mode = bool(self._task.check_mode) or mode == 'audit'
        results = {}
        for connection, group in _by_connection(accounts).items():
            results.update(self._run_group(connection, group, check_mode, concurrency))

        report = [dict(results[host], host=host) for host in hosts]
        summary = _summary(report)
        failed = {r['host']: r['msg'] for r in report if r['failed']}
        result = dict(
            changed=mode == 'enforce' and any(r['changed'] for r in report),
            mode=mode,
            check_mode=check_mode,
            results=report,
            summary=summary,
            failed_hosts=failed,
            diff=[dict(before=r['before'], after=r['enforced_tls'], before_header=r['host'], after_header=r['host'])
                  for r in report if r['changed']],
        )
        if unknown:
            result['warnings'] = ['unknown variables ignored (a typo?): %s' % ', '.join(unknown)]
        if failed and fail_on_error:
            result.update(failed=True, msg='%d of %d subusers failed: %s' % (
                len(failed), len(report), '; '.join('%s: %s' % item for item in failed.items())))
        return result

    def _host_vars(self, names):
        """Each host's variables as Ansible would give them to a task of this play on that host."""
        manager = self._task.get_variable_manager()
        inventory = manager._inventory  # pylint: disable=protected-access
        play = self._task.get_play()
        for name in names:
            host = inventory.get_host(name)
            if host is None:
                raise AnsibleActionFail('hosts: %r is not in the inventory' % name)
            yield name, manager.get_vars(play=play, host=host, task=self._task, _hosts=names, _hosts_all=names)

    def _resolve(self, hosts):
        accounts, errors, unknown = [], [], set()
        for host, variables in self._host_vars(hosts):
            unknown.update(name for name in variables if name.startswith(PREFIX) and name[len(PREFIX):] not in KNOWN)
            templar = self._templar.copy_with_new_env(available_variables=variables)

            def var(name, default=None, variables=variables, templar=templar):
                return templar.template(variables[PREFIX + name]) if PREFIX + name in variables else default

            try:
                policy = {field: var(field) for field in FIELDS}
                for field in ('require_tls', 'require_valid_cert'):
                    if isinstance(policy[field], str) and not _unset(policy[field]):
                        # Survey answers arrive as strings ("true"); anything else is named, not guessed.
                        try:
                            policy[field] = boolean(policy[field], strict=True)
                        except TypeError:
                            raise ValueError('%s%s must be a boolean (true or false), got %r' % (PREFIX, field, policy[field]))
                desired = desired_state({k: v for k, v in policy.items() if not _unset(v)}, name_prefix=PREFIX)
                if not desired:
                    raise ValueError('no policy: set at least one of %s' % ', '.join(PREFIX + f for f in FIELDS))
                on_behalf_of = var('on_behalf_of', host)
                connection = dict(
                    api_key=var('api_key') or os.environ.get('SENDGRID_API_KEY'),
                    region=var('region') or variables.get('sendgrid_region') or 'global',
                    api_url=var('api_url') or os.environ.get('SENDGRID_API_URL') or None,
                )
                check_connection_params(dict(connection, on_behalf_of=on_behalf_of or None), prefix=PREFIX)
            except (ValueError, TypeError, SendGridConfigError) as exc:
                errors.append('%s: %s' % (host, exc))
                continue
            accounts.append(dict(host=host, on_behalf_of=on_behalf_of or None, desired=desired, connection=connection))
        return accounts, errors, sorted(unknown)

    def _run_group(self, connection, group, check_mode, concurrency):
        """Converge (or, in check mode, only read) the accounts that share an endpoint and key."""
        # In this process, not through a module run: the fleet pays no module start-up, only the HTTP requests.
        try:
            client = SendGridClient(pool_size=concurrency, **dict(connection))
        except SendGridError as exc:
            outcome = [dict(failed=True, changed=False, status='failed', msg=str(exc), on_behalf_of=a['on_behalf_of']) for a in group]
        else:
            try:
                outcome = run_batch(lambda account: converge(client, account['desired'], account['on_behalf_of'], check_mode),
                                    group, concurrency)
            finally:
                client.close()
        results = {}
        for account, result in zip(group, outcome):
            result['desired'] = account['desired']
            if not result['failed']:
                result['compliant'] = not result['changes']
                result['differences'] = {field: dict(current=result['before'][field], desired=value)
                                         for field, value in result['changes'].items()}
            results[account['host']] = result
        return results


def _by_connection(accounts):
    groups = {}
    for account in accounts:
        key = tuple(sorted(account['connection'].items()))
        groups.setdefault(key, []).append(account)
    return groups


def _summary(report):
    summary = dict(compliant=[], changed=[], would_change=[], failed=[])
    for item in report:
        summary[item['status']].append(item['host'])
    return summary
