# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""The restore engine of the enforced_tls_fleet action: ``mode: check_snapshot`` and ``mode: restore``.

A restore reads the host's journal entry and converges the host's own account to the settings it recorded: the key,
the endpoint and the account written come from the host's variables, never from the file; an entry recorded for
another account or endpoint is refused before any request. A restore is not recorded again.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import resolve_base_url
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._fleet_converge import converge_accounts, host_result, preflighted
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._fleet_hosts import PREFIX, resolve_connection, unknown_warning
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._run_state import fingerprint, once_per_run, run_dir
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._snapshot import SnapshotError, load, recorder_for

_INVALID = 'invalid connection variables, nothing was sent to SendGrid: %s'


def snapshot_path(args):
    """The ``snapshot`` argument as an absolute path (AnsibleActionFail when it is missing)."""
    path = args.get('snapshot')
    if not isinstance(path, str) or not path.strip():
        raise AnsibleActionFail('snapshot is required with mode %s: the snapshot file to restore from (-e snapshot=FILE), '
                                'got %r' % (args['mode'], path))
    # Relative to the directory ansible-playbook runs in, like the snapshot directory the role writes to.
    return os.path.abspath(os.path.expanduser(path.strip()))


def check_snapshot(task_vars, templar, args, keys):
    """Before a restore, on every host: the file is sound and every subuser it names is a host of the play. The file is
    read once per run (the first host decides, the others take its verdict), so a refusal fails every host under its
    own name, whichever hosts a condition or --limit selects and under any strategy, as run_once could not."""
    path = snapshot_path(args)
    try:
        connection = resolve_connection(task_vars['inventory_hostname'], task_vars, templar)[0]['connection']
    except ValueError as exc:
        raise AnsibleActionFail(_INVALID % exc)
    keys.add(connection['api_key'])
    in_play = sorted(task_vars.get('ansible_play_hosts_all') or ())
    limited = bool(task_vars.get('ansible_limit'))
    verdict = once_per_run('check-snapshot-%s' % fingerprint(path, connection['api_key'], in_play, limited),
                           lambda: _snapshot_verdict(path, connection['api_key'], set(in_play), limited))
    if not verdict['ok']:
        raise AnsibleActionFail(verdict['msg'])
    return verdict['result']


def _snapshot_verdict(path, key, in_play, limited):
    try:
        document = load(path, key)
    except SnapshotError as exc:
        return dict(ok=False, msg=str(exc))
    names = sorted(document['subusers'])
    missing = [name for name in names if name not in in_play]
    if missing and not limited:
        # Without --limit, a subuser the play cannot reach would silently keep the settings the snapshot undoes.
        return dict(ok=False, msg=(
            'snapshot %s names %d subuser(s) that are not hosts of this play, so they could not be restored: %s. Use the '
            'inventory the snapshot was taken with, or --limit to restore only some subusers; nothing was sent to SendGrid'
            % (path, len(missing), ', '.join(missing))))
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
    return dict(ok=True, result=result)


def _restored_document(args, account):
    """(path, document) to restore from: the file handed over (``snapshot``), or with ``from_run`` what this run
    recorded, checked against the end and seal the run noted in its private directory (the rollout)."""
    key = account['connection']['api_key']
    if not args['from_run']:
        path = snapshot_path(args)
        return path, load(path, key)
    # The rollout's watch window is long: a file swapped meanwhile, even a sound journal of the same key, is refused.
    path, document = recorder_for(run_dir(), account['snapshot_dir'], key).recorded()
    if args.get('snapshot') and snapshot_path(args) != path:
        raise SnapshotError('snapshot %s is not the file this run recorded (%s): it is not restored from' % (
            snapshot_path(args), path))
    return path, document


def _account_name(on_behalf_of):
    return 'the parent account' if on_behalf_of is None else 'account %r' % on_behalf_of


def restore_host(task_vars, templar, args, check_mode, task_check_mode, keys):
    """Converge one host back to the settings the snapshot recorded for it (GET, then a PATCH only if they differ)."""
    host = task_vars['inventory_hostname']
    try:
        account, unknown = resolve_connection(host, task_vars, templar)
        keys.add(account['connection']['api_key'])
    except ValueError as exc:
        return dict(failed=True, changed=False, msg=_INVALID % exc)
    try:
        path, document = _restored_document(args, account)
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
    result = preflighted(account, host)
    if not result['failed']:
        # The recorded values are what desired_state would make of them (load refuses any other form); a restore is
        # not recorded again.
        target = dict(account, desired=dict(entry['previous']), snapshot_dir=None)
        result = converge_accounts(account['connection'], [target], check_mode, 1)[host]
    result = host_result(result, 'enforce', task_check_mode)
    result.update(host=host, restored_from=path)
    warnings = unknown_warning(unknown)
    if warnings:
        result['warnings'] = warnings
    return result
