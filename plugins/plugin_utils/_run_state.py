# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""What the worker processes of one ``ansible-playbook`` run share: files in the run's private directory.

Ansible forks a worker per host and task, so a verdict that must hold for the whole run (a preflight, a guardrail), the
batches seen so far and the snapshot journals' state are kept in Ansible's per-run local temporary directory (created
before the workers are forked, private to the user, removed when the run ends), written under an ``fcntl`` lock.
Controller-only: ``fcntl`` and these files have no place on a managed host.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading

from ansible import constants as C


def run_dir():
    """Ansible's per-run local temporary directory (0700, removed when the run ends), our folder in it."""
    path = os.path.join(C.DEFAULT_LOCAL_TMP, 'mailsec_sendgrid')
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(lock_path):
    """Hold an exclusive fcntl lock on ``lock_path`` (created if needed): one worker process at a time."""
    with open(lock_path, 'a', encoding='utf-8') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_private_json(path, data, sync=True):
    """Replace ``path`` atomically (write a 0600 temporary file, then rename): a reader sees the old or the new file.

    ``sync``: on disk before the rename.
    """
    tmp = '%s.%d.%d.tmp' % (path, os.getpid(), threading.get_ident())
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w', encoding='utf-8') as handle:
            # json.dumps in one piece: json.dump (and any indent=) take the pure-Python encoder, ten times slower.
            handle.write(json.dumps(data, sort_keys=True) + '\n')
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fingerprint(*material):
    """A name for run state about ``material`` (which may hold a key): a hash salted with the run's directory, so the
    material itself is never written down."""
    text = json.dumps([C.DEFAULT_LOCAL_TMP] + list(material), sort_keys=True, default=str)
    return hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:32]


def once_per_run(name, decide):
    """The run's verdict ``name``: the first caller (any worker process, any host) computes it with ``decide()`` under a
    lock and writes it to the run's private directory; every later caller reads it. The same for whichever hosts a
    condition selects and under every strategy, which run_once is not."""
    path = os.path.join(run_dir(), name)
    with locked(path + '.lock'):
        try:
            with open(path + '.json', encoding='utf-8') as verdict_file:
                return json.load(verdict_file)
        except (OSError, ValueError):
            pass
        verdict = decide()
        write_private_json(path + '.json', verdict)
        return verdict


def record_batch(play, hosts, failed, play_hosts):
    """Remember this batch's hosts and failures for the run: (every failure so far, whether the batch is the last, how many
    hosts the run's batches have had)."""
    path = os.path.join(run_dir(), 'batch-%s' % hashlib.sha256(str(play._uuid).encode()).hexdigest()[:16])  # pylint: disable=protected-access
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
    directory = run_dir()
    for name in sorted(os.listdir(directory)):
        if name.startswith('snapshot-') and name.endswith('.state'):
            try:
                with open(os.path.join(directory, name), encoding='utf-8') as handle:
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
