# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""Snapshots of Enforced TLS writes: what each subuser had before a run changed it, so that it can be restored.

One file per ``ansible-playbook`` run, snapshot directory and API key, written by every worker process of the run: a
journal in JSON Lines (``enforced-tls-<UTC time>-<id>.jsonl``), a header line, then one line per event, appended as it
happens (shown here wrapped)::

    {"created":"2025-01-31T09:00:00Z","format":"mailsec.sendgrid.enforced_tls_snapshot","key_id":"3f9c...",
     "version":2,"seal":"hmac-sha256:..."}
    {"endpoint":"https://api.sendgrid.com","event":"record","host":"sub0005","on_behalf_of":"sub0005",
     "previous":{"require_tls":false},"recorded":"2025-01-31T09:00:02Z","region":"global","seal":"hmac-sha256:..."}
    {"event":"done","fields":["require_tls"],"host":"sub0005","seal":"hmac-sha256:..."}

A ``record`` is appended, and on disk, before its PATCH: the fields the run changes, as they were before (only fields
the run has not recorded for that host yet: a restore goes back to the state before the run). ``done`` follows a PATCH
that succeeded, ``undo`` one that failed (its fields are taken out again). So a crash in between leaves a record without
``done``, which a restore reads back harmlessly (it only writes what differs, with a warning), and a failed write
leaves nothing behind. The API key is never part of it.

Each line's ``seal`` is an HMAC-SHA256 over the previous line's seal and the line's own canonical JSON (sorted keys, no
spaces, ASCII), under a key derived from the API key (:class:`SealKey`): a chain only a holder of the API key can write
(who could write to SendGrid anyway), so an edited, reordered, foreign or re-sealed line, or a last line cut short, is
refused. The header's ``key_id`` (derived separately, not secret) names the key without revealing it, so a journal
sealed under a key rotated since is refused as such. :func:`load` checks that the file and its folder are the user's
own (or root's) and not writable by others, then folds the events into one entry per subuser (``{"subusers": {host:
{on_behalf_of, endpoint, region, recorded, previous, pending}}}``), which is what a restore works from. A restore
writes only the account of the host it runs for, never the one a file names.

An append costs the same whatever the file's size (the rewrite of a whole document it replaced cost 5 ms a write at
1,000 subusers): the worker processes of a run share the file under an ``fcntl`` lock (``_run_state.locked``), and the
run's private temporary directory keeps where the file ends (inode, size, modification time, last seal), so a worker
appends without reading the chain back. A ``done`` only appends; a ``record`` reads the lines that name its host (what the run
recorded for it already). When the file no longer ends there, the chain is verified: complete lines after the noted end
that continue it (a worker of the run stopped between its append and noting the end) are adopted, a last line cut short
is cut off (its PATCH never started: a record is synced before it), and anything else stops every later write. The
rollout restores from :meth:`Recorder.recorded`, the file checked against that noted end and seal.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import hashlib
import hmac
import json
import os
import secrets
import stat as stat_module
import threading

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import (
    SendGridError, check_on_behalf_of, normalize_api_key, resolve_base_url)
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import FIELDS, desired_state
from ansible_collections.mailsec.sendgrid.plugins.module_utils._values import utc_now
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._run_state import locked, write_private_json

FORMAT = 'mailsec.sendgrid.enforced_tls_snapshot'
VERSION = 2
DEFAULT_DIR = './enforced_tls_snapshots'
# Far above any fleet's journal (about 250 bytes a line, three lines a subuser): a bound on what a restore reads.
MAX_BYTES = 256 * 1024 * 1024
_ENTRY_KEYS = frozenset(('on_behalf_of', 'endpoint', 'region', 'recorded', 'previous', 'pending'))
_HEADER_KEYS = frozenset(('format', 'version', 'created', 'key_id'))
_SEAL_CONTEXT = b'mailsec.sendgrid enforced_tls_snapshot seal v2'
_KEY_ID_CONTEXT = b'mailsec.sendgrid enforced_tls_snapshot key id v2'
_SEAL_PREFIX = 'hmac-sha256:'


class SnapshotError(Exception):
    """A snapshot that cannot be written or trusted, as one readable sentence (never the key).

    Not a SendGridError: nothing was sent to SendGrid. Whoever records a write (the fleet engine) reports it as that
    account's failure; whoever restores, as the host's.
    """


class SealKey:
    """The journal's sealing key, derived from an API key: kept in memory only, never written or shown.

    ``id`` is derived separately (a different HMAC context), short and not secret: it names the key in the header, so a
    journal sealed under another (for example a rotated) key is told apart from an edited one.
    """

    __slots__ = ('id', '_mac')

    def __init__(self, api_key):
        # normalize_api_key: "KEY" and "KEY\n" (a vault file's newline) seal alike; its errors never show the value.
        material = normalize_api_key(api_key).encode('ascii')
        self._mac = hmac.new(hmac.new(material, _SEAL_CONTEXT, hashlib.sha256).digest(), digestmod=hashlib.sha256)
        self.id = hmac.new(material, _KEY_ID_CONTEXT, hashlib.sha256).hexdigest()[:16]

    def __repr__(self):
        return '<SealKey %s>' % self.id

    def chain(self, previous_seal, canonical):
        mac = self._mac.copy()  # the keyed state is computed once; a copy per line costs a few microseconds
        # Lines are written in ASCII; a line read back with anything else simply does not verify.
        mac.update((previous_seal + canonical).encode('utf-8', 'surrogatepass'))
        return _SEAL_PREFIX + mac.hexdigest()


def seal_key(key):
    """``key`` as a SealKey (an API key is derived from; a SealKey is taken as it is)."""
    return key if isinstance(key, SealKey) else SealKey(key)


# -- a snapshot file is trusted only when it is private ---------------------------------------------------------------

def check_private(path, status, what, remedy):
    """Refuse a folder or file that other users may write or that another user owns (root's is trusted: root can
    write anything anyway). ``status``: its os.stat; ``what`` names it, ``remedy`` says what to do."""
    found = []
    if status.st_uid not in (os.geteuid(), 0):
        found.append('is owned by uid %d, not by the user running Ansible (uid %d)' % (status.st_uid, os.geteuid()))
    if status.st_mode & (stat_module.S_IWGRP | stat_module.S_IWOTH):
        found.append('is writable by others (mode %04o)' % stat_module.S_IMODE(status.st_mode))
    if found:
        raise SnapshotError('%s %s %s: whoever can write it can change what a restore writes. %s'
                            % (what, path, ' and '.join(found), remedy))


def _read_private(path, remedy):
    """The bytes of the snapshot at ``path``, once it and its folder are known to be private (SnapshotError if not)."""
    path = os.path.abspath(path)
    try:
        folders = {os.path.dirname(path), os.path.dirname(os.path.realpath(path))}
        for folder in sorted(folders):
            check_private(folder, os.stat(folder), 'the folder of snapshot', remedy)
        # O_NONBLOCK: a FIFO put in its place must not hang the run (it is refused below as not a regular file).
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), 'rb') as handle:
            status = os.fstat(handle.fileno())
            if not stat_module.S_ISREG(status.st_mode):
                raise SnapshotError('snapshot %s cannot be read: it is not a regular file' % path)
            check_private(path, status, 'snapshot', remedy)
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SnapshotError('snapshot %s cannot be read: %s' % (path, exc.strerror or exc))
    if len(data) > MAX_BYTES:
        raise SnapshotError('snapshot %s is refused, nothing was sent to SendGrid: it is larger than %d MiB, far more than any '
                            'journal of this collection' % (path, MAX_BYTES // 1024 // 1024))
    return data


# -- the journal -------------------------------------------------------------------------------------------------------

_SEAL = ',"seal":"'
_RECORD_KEYS = frozenset(('event', 'host')) | _ENTRY_KEYS - {'pending'}
_PRIVATE_REMEDY = ('Keep snapshots in a folder only you can write (chmod go-w FOLDER; chmod 0600 FILE), owned by the user '
                   'who runs Ansible. Nothing was sent to SendGrid')


def _canonical(body):
    return json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=True)


def seal_line(body, key, previous_seal=''):
    """The journal line of ``body`` (a dict, without "seal"), chained to the previous line's seal under ``key`` (a
    SealKey or an API key): (text, its seal)."""
    canonical = _canonical(body)
    seal = seal_key(key).chain(previous_seal, canonical)
    return '%s%s%s"}\n' % (canonical[:-1], _SEAL, seal), seal


def _unseal_line(line, previous_seal, key):
    """(body, seal) of one line (no newline) if its seal follows from ``previous_seal``; (None, None) otherwise."""
    position = line.rfind(_SEAL)
    if position < 1 or not line.endswith('"}'):
        return None, None
    # The seal covers the text as written, so a reader never re-encodes it: any change to the line breaks it.
    seal = line[position + len(_SEAL):-2]
    if not hmac.compare_digest(key.chain(previous_seal, line[:position] + '}').encode('ascii'),
                               seal.encode('utf-8', 'surrogatepass')):
        return None, None
    try:
        body = json.loads(line)
    except ValueError:
        return None, None
    return (body, seal) if isinstance(body, dict) else (None, None)


def _verify(lines, key, seal=''):
    """Follow the chain over ``lines`` (text without newlines) from ``seal``: (bodies without their seal, the last seal,
    the index of the first line that does not follow, or None)."""
    bodies = []
    for index, line in enumerate(lines):
        body, next_seal = _unseal_line(line, seal, key)
        if body is None:
            return bodies, seal, index
        body.pop('seal')
        bodies.append(body)
        seal = next_seal
    return bodies, seal, None


def _header_problem(text, key):
    """Why ``text`` does not start like a snapshot of this format sealed under ``key`` (None when it does)."""
    first = text.split('\n', 1)[0]
    try:
        header = json.loads(first)
    except ValueError as exc:
        return 'it is not valid JSON (%s): it is truncated or not a snapshot' % exc
    if not isinstance(header, dict) or header.get('format') != FORMAT:
        return 'it is not a mailsec.sendgrid Enforced TLS snapshot (no "format": "%s" on its first line)' % FORMAT
    if header.get('version') == 1:
        return ('its format version is 1, whose plain SHA-256 checksum anyone able to write the file can recompute: it '
                'cannot be trusted. This collection reads version %d, sealed under a key derived from the API key. Version 1 '
                'was written only by development builds before 0.1.0: read it with jq and set the values it recorded by hand'
                % VERSION)
    if header.get('version') != VERSION:
        return 'its format version is %r; this collection reads version %d' % (header.get('version'), VERSION)
    if header.get('key_id') != key.id:
        return ('it was sealed under another API key (key id %s; the API key of this restore has key id %s): the key has '
                'been rotated since the journal was written, or it belongs to another account. Restore with the key that '
                'wrote it (enforced_tls_policy_api_key or SENDGRID_API_KEY). If that key has been revoked, the journal can '
                'no longer be verified: review it (jq .) and set the values it recorded with the enforce playbook or the '
                'enforced_tls module, under --limit' % (_shown(header.get('key_id')), key.id))
    return None


def _shown(value):
    # The key id comes from the file: shown only when it has the form this collection writes.
    return value if isinstance(value, str) and len(value) == 16 and all(c in '0123456789abcdef' for c in value) \
        else 'missing or malformed'


def parse(text, key):
    """(document, problems): the events of a journal sealed under ``key`` folded into {format, version, created, subusers}."""
    key = seal_key(key)
    problem = _header_problem(text, key)
    if problem:
        return None, [problem]
    lines = text.split('\n')
    if lines[-1]:
        return None, ['it is not valid JSON Lines: its last line is cut short (the file is truncated)']
    bodies, _seal, bad = _verify(lines[:-1], key)
    if bad is not None:
        return None, ['its checksum does not match its content on line %d (an HMAC-SHA256 under the API key): the file was '
                      'edited, damaged or re-sealed after this collection wrote it (use --limit to restore only some '
                      'subusers, not an edited file)' % (bad + 1)]
    return _document(bodies)


def _document(bodies):
    """(document, problems) of a journal's verified lines, the header first."""
    header, events = bodies[0], list(enumerate(bodies[1:], 2))
    unknown = sorted(set(header) - _HEADER_KEYS)
    document = dict(format=FORMAT, version=VERSION, created=header.get('created'), subusers={})
    found = ['unknown keys %s on its first line' % ', '.join(unknown)] if unknown else []
    found.extend(_fold(document['subusers'], events))
    for host, entry in document['subusers'].items():
        found.extend('subuser %r: %s' % (host, problem) for problem in _entry_problems(host, entry))
    return document, found


def _fold(subusers, events):
    """Apply journal events to ``subusers`` (the document being built); returns the problems found."""
    found = []
    for number, event in events:
        host, kind = event.get('host'), event.get('event')
        entry = subusers.get(host) if isinstance(host, str) else None
        if kind == 'record' and isinstance(host, str):
            previous = event.get('previous')
            if entry is None:
                entry = subusers[host] = {key: value for key, value in event.items() if key not in ('event', 'host')}
                entry['previous'] = {}
            unknown = sorted(set(event) - _RECORD_KEYS)
            if unknown:
                found.append('line %d: unknown keys %s' % (number, ', '.join(unknown)))
            elif any(entry.get(key) != event.get(key) for key in ('on_behalf_of', 'endpoint', 'region')):
                found.append('line %d records %s for another account or endpoint than before' % (number, host))
            elif not isinstance(previous, dict) or set(previous) & set(entry['previous']):
                found.append('line %d: "previous" must hold fields not recorded for %s yet, got %r'
                             % (number, host, previous))
            else:
                entry['previous'].update(previous)
                entry['pending'] = sorted(set(entry.get('pending', ())) | set(previous))
                entry['recorded'] = event.get('recorded')
        elif kind in ('done', 'undo') and entry is not None and isinstance(event.get('fields'), list) \
                and set(event['fields']) <= set(entry.get('pending', ())) and set(event) == {'event', 'host', 'fields'}:
            _settle(subusers, host, event['fields'], kind == 'done')
        else:
            found.append('line %d is not an event of this format (record, then done or undo of pending fields): %s'
                         % (number, _canonical(event)[:200]))
    return found


def _settle(subusers, host, fields, keep):
    """After the write ``fields`` were recorded for: no longer pending (``keep``), or taken out (the write failed)."""
    entry = subusers[host]
    pending = [field for field in entry.get('pending', ()) if field not in fields]
    if pending:
        entry['pending'] = pending
    else:
        entry.pop('pending', None)
    if not keep:
        for field in fields:
            entry['previous'].pop(field, None)
        if not entry['previous']:
            del subusers[host]


def _entry_problems(host, entry):
    if not host.strip():
        return ['an empty host name']
    found = []
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        found.append('unknown keys %s' % ', '.join(unknown))
    try:
        check_on_behalf_of(entry.get('on_behalf_of'), 'on_behalf_of')
        if resolve_base_url(api_url=entry.get('endpoint')) != entry.get('endpoint'):
            raise ValueError('endpoint %r is not a base URL' % entry.get('endpoint'))
    except (SendGridError, ValueError, TypeError, AttributeError) as exc:
        found.append(str(exc))
    previous = entry.get('previous')
    if not isinstance(previous, dict) or not previous or set(previous) - set(FIELDS):
        found.append('"previous" must hold one or more of %s, got %r' % (', '.join(FIELDS), previous))
    else:
        try:
            if desired_state(previous) != previous:
                raise ValueError('"previous" holds values in an unexpected form: %r' % (previous,))
        except ValueError as exc:
            found.append(str(exc))
    return found


def load(path, key):
    """The snapshot at ``path``, sealed under ``key`` (an API key or a SealKey), checked and folded; SnapshotError names
    the file and every problem, never the key."""
    key = seal_key(key)
    data = _read_private(path, _PRIVATE_REMEDY)
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as exc:
        raise SnapshotError('snapshot %s cannot be read: %s' % (path, exc))
    document, found = parse(text, key)
    if found:
        raise SnapshotError('snapshot %s is refused, nothing was sent to SendGrid: %s' % (path, '; '.join(found)))
    return document


# -- recording a run's writes ------------------------------------------------------------------------------------------

class _Journal:
    """The run's snapshot file during one cycle, under the run's lock: entries read on demand, lines to append."""

    def __init__(self, path, state, key, text=None):
        self.path, self.state, self._key, self._text = path, dict(state), key, text
        self._end = state['signature'][1], state['seal'].encode('ascii') + b'"}\n'  # where the file ends, as opened
        self.lines = []

    def _read(self):
        # Only a record needs the file's text (for what the run has recorded for its host already); a "done" only appends.
        if self._text is None:
            try:
                with open(self.path, 'rb') as handle:
                    data = handle.read()
            except OSError as exc:
                raise SnapshotError('the run\'s snapshot %s cannot be read back (%s): nothing more is written without it'
                                    % (self.path, exc.strerror or exc))
            if len(data) != self._end[0] or not data.endswith(self._end[1]):
                raise _changed(self.path)
            self._text = data
        return self._text

    def entry(self, host):
        """The host's entry so far in this run (None when it has none): only the lines that name it are parsed."""
        needle = ('"host":%s' % json.dumps(host, ensure_ascii=True)).encode('ascii')
        events = []
        for text in [self._read()] + [line.encode('ascii') for line in self.lines]:
            position = text.find(needle)
            while position >= 0:
                start, end = text.rfind(b'\n', 0, position) + 1, text.find(b'\n', position)
                event = json.loads(text[start:end if end >= 0 else len(text)])
                event.pop('seal', None)
                if event.get('host') == host:
                    events.append((0, event))
                position = text.find(needle, end if end >= 0 else len(text))
        subusers = {}
        _fold(subusers, events)
        return subusers.get(host)

    def append(self, body, hosts=0):
        line, self.state['seal'] = seal_line(body, self._key, self.state['seal'])
        self.lines.append(line)
        self.state['hosts'] += hosts


_STOPPED = 'nothing more is written without a trustworthy record'
_NOT_RESTORED = ('it is not restored from. Check the file, then restore with ansible-playbook mailsec.sendgrid.restore '
                 '-e snapshot=FILE if it is sound')


def _changed(path, consequence=_STOPPED):
    return SnapshotError('the run\'s snapshot %s was changed by someone else during the run: %s' % (path, consequence))


def _unverified_tail(path, extra, consequence):
    return SnapshotError(
        'the run\'s snapshot %s has %d byte(s) after the end this run last noted, and they do not continue the run\'s '
        'sealed chain: a worker of this run stopped while writing them (between its append and noting the end) and they '
        'could not be verified, or someone else appended them: %s' % (path, extra, consequence))


def _signature(stat):
    """What changes when anyone writes the file: its inode, size and modification time."""
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns]


def _lines(data):
    """The complete lines of ``data`` (ASCII bytes) as text, and the bytes after the last newline."""
    complete, newline, partial = data.rpartition(b'\n')
    return (complete.decode('ascii').split('\n') if newline else []), partial


class Recorder:
    """The run's snapshot file in one directory under one API key, shared by the run's worker processes.

    ``run_dir`` is private to one ``ansible-playbook`` run: the run's file, where it ends (inode, size, modification
    time) and its last seal are kept there, so every worker process of the run appends to the same file, the next run
    starts a new one, and a worker neither reads the chain back nor misses a change made by anyone else. The threads of
    one process (batch mode) append together: one write and one sync for all the changes waiting (group commit).
    ``api_key``: the key the recorded writes use; the file is sealed under a key derived from it, so hosts with another
    key write a file of their own.
    """

    def __init__(self, run_dir, directory, api_key):
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self._key = seal_key(api_key)
        name = '%s-%s' % (hashlib.sha256(self.directory.encode('utf-8', 'surrogatepass')).hexdigest()[:16], self._key.id)
        self._lock = os.path.join(run_dir, 'snapshot-%s.lock' % name)
        self._state = os.path.join(run_dir, 'snapshot-%s.state' % name)
        self._cycle_lock = threading.Lock()  # one file cycle at a time in this process
        self._queue_lock = threading.Lock()
        self._queue = []  # changes waiting for the next file cycle

    @contextlib.contextmanager
    def record(self, host, on_behalf_of, endpoint, region, previous):
        """Record ``previous`` for ``host`` before the write inside the ``with`` block; undo it if that write fails.

        Yields a summary for the task result: {path, subusers (subusers in the file), new (whether this host is new in
        this run's file), recorded (the fields this write added), endpoint}. Fields the run already recorded for the host
        keep their first value: a restore goes back to the state before the run, not to a state in the middle of it.
        """
        def add(journal):
            entry = journal.entry(host)
            added = {field: value for field, value in previous.items() if entry is None or field not in entry['previous']}
            if added:
                journal.append(dict(event='record', host=host, on_behalf_of=on_behalf_of, endpoint=endpoint, region=region,
                                    recorded=utc_now(), previous=added), hosts=int(entry is None))
            return added, dict(path=journal.path, subusers=journal.state['hosts'], new=entry is None, recorded=sorted(added),
                               endpoint=endpoint)

        def settle(keep, journal):
            # An undo that takes out everything the host had leaves one subuser fewer in the file.
            emptied = not keep and not set(journal.entry(host)['previous']) - set(added)
            journal.append(dict(event='done' if keep else 'undo', host=host, fields=sorted(added)), hosts=-int(emptied))

        added, summary = self._commit(add)
        try:
            yield summary
        except BaseException:
            if added:
                self._commit(functools.partial(settle, False))
            raise
        if added:
            # Not synced: should it be lost (a power cut), the entry stays pending, which a restore reads harmlessly.
            self._commit(functools.partial(settle, True), sync=False)

    def recorded(self):
        """(path, document): what this run recorded in this directory under this key, read back under the run's lock and
        checked against the end and seal the run noted. A file swapped or changed since (even a sound journal of the
        same key) is a SnapshotError, as is a run that recorded nothing here."""
        with locked(self._lock):
            try:
                with open(self._state, encoding='utf-8') as handle:
                    state = json.load(handle)
            except FileNotFoundError:
                raise SnapshotError('this run recorded no snapshot in %s with this API key: there is nothing of this run '
                                    'to restore' % self.directory)
            status = self._stat(state)
            if _signature(status) != state['signature']:
                state = self._recover(state, status, _NOT_RESTORED)
            data = _read_private(state['path'], _PRIVATE_REMEDY)
        path = state['path']
        if len(data) != state['signature'][1] or not data.endswith(state['seal'].encode('ascii') + b'"}\n'):
            raise _changed(path, _NOT_RESTORED)
        # The last seal is the one the run noted and the chain leads to it under the key: the very lines the run wrote.
        document, found = parse(data.decode('ascii', 'replace'), self._key)
        if found:
            raise _changed(path, _NOT_RESTORED)
        return path, document

    def _commit(self, change, sync=True):
        """Apply ``change(journal)`` to the run's snapshot and have it on disk; returns what ``change`` returned.

        Changes queued by other threads of this process meanwhile are applied in the same file cycle.
        """
        job = dict(change=change, done=False, sync=sync)
        with self._queue_lock:
            self._queue.append(job)
        with self._cycle_lock:
            if not job['done']:
                with self._queue_lock:
                    jobs, self._queue = self._queue, []
                self._cycle(jobs)
        if 'error' in job:
            raise job['error']
        return job['value']

    def _cycle(self, jobs):
        try:
            with locked(self._lock):
                journal = self._open()
                for job in jobs:
                    job['value'] = job['change'](journal)  # appends to the journal in memory only: they do not fail half-way
                self._flush(journal, sync=any(job['sync'] for job in jobs))
        except Exception as exc:  # every change of the cycle failed with it (the file is as it was)
            for job in jobs:
                job.pop('value', None)
                job['error'] = exc
        finally:
            for job in jobs:
                job['done'] = True

    def _open(self):
        """The run's snapshot (created on first use), checked against where the run last left it, under the lock."""
        try:
            with open(self._state, encoding='utf-8') as handle:
                state = json.load(handle)
        except FileNotFoundError:
            return self._create()
        status = self._stat(state)
        if _signature(status) != state['signature']:
            state = self._recover(state, status)
        return _Journal(state['path'], state, self._key)

    @staticmethod
    def _stat(state):
        try:
            return os.stat(state['path'])
        except OSError as exc:
            raise SnapshotError('the run\'s snapshot %s cannot be read back (%s): nothing more is written without it'
                                % (state['path'], exc.strerror or exc))

    def _recover(self, state, status, consequence=_STOPPED):
        """The state of a run's file that no longer ends where the run noted, under the lock, if it can be trusted.

        A worker that dies between its append and noting the end leaves complete lines after that end (adopted: they
        continue the chain under the key, so a holder of the key wrote them, in practice that worker), or a last line
        cut short (cut off: a record is synced before its PATCH starts, so that PATCH never started). Anything else is
        refused: the lines up to the noted end must be unchanged (their chain leads to the noted seal).
        """
        path, (inode, size, _mtime) = state['path'], state['signature']
        if status.st_ino != inode or status.st_size < size:
            raise _changed(path, consequence)
        try:
            with open(path, 'r+b') as handle:
                data = handle.read()
                head, tail = data[:size], data[size:]
                try:
                    lines, partial = _lines(head)
                except UnicodeDecodeError:
                    raise _changed(path, consequence)
                bodies, seal, bad = _verify(lines, self._key)
                if partial or bad is not None or seal != state['seal']:
                    raise _changed(path, consequence)
                try:
                    lines, partial = _lines(tail)
                except UnicodeDecodeError:
                    raise _unverified_tail(path, len(tail), consequence)
                more, seal, bad = _verify(lines, self._key, seal)
                document, found = _document(bodies + more)
                if bad is not None or found:
                    raise _unverified_tail(path, len(tail), consequence)
                if partial:
                    handle.truncate(len(data) - len(partial))
                    handle.flush()
                    os.fsync(handle.fileno())
                signature = _signature(os.fstat(handle.fileno()))
        except OSError as exc:
            raise SnapshotError('the run\'s snapshot %s cannot be read back (%s): nothing more is written without it'
                                % (path, exc.strerror or exc))
        state = dict(state, seal=seal, hosts=len(document['subusers']), signature=signature)
        write_private_json(self._state, state, sync=False)
        return state

    def _flush(self, journal, sync):
        """Append the cycle's lines (synced when asked), then note where the file ends; on failure the file is as it was."""
        if not journal.lines:
            return
        try:
            with open(journal.path, 'ab') as handle:
                try:
                    handle.write(''.join(journal.lines).encode('ascii'))
                    handle.flush()
                    if sync:
                        os.fsync(handle.fileno())
                    write_private_json(self._state, dict(journal.state, signature=_signature(os.fstat(handle.fileno()))),
                                       sync=False)
                except BaseException:
                    # Cut back to where the run left it, modification time included, so that the run's next write
                    # finds the file as it last saw it (and the half-written lines gone).
                    with contextlib.suppress(OSError, ValueError):
                        handle.truncate(journal.state['signature'][1])
                        os.utime(handle.fileno(), ns=(os.fstat(handle.fileno()).st_atime_ns, journal.state['signature'][2]))
                    raise
        except OSError as exc:
            raise SnapshotError('the snapshot %s cannot be written: %s' % (journal.path, exc.strerror or exc))

    def _create(self):
        try:
            try:
                # Private when we create it; an existing directory must be private already (checked below).
                os.makedirs(self.directory, mode=0o700)
            except OSError as exc:
                if exc.errno != errno.EEXIST or not os.path.isdir(self.directory):
                    raise
            check_private(self.directory, os.stat(self.directory), 'the snapshot folder',
                          'Make it private (chmod go-w, owned by the user who runs Ansible) or set '
                          'enforced_tls_policy_snapshot_dir to a folder of your own. The subuser was not written')
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
            path = os.path.join(self.directory, 'enforced-tls-%s-%s.jsonl' % (stamp, secrets.token_hex(3)))
            header, seal = seal_line(dict(format=FORMAT, version=VERSION, created=utc_now(), key_id=self._key.id), self._key)
            # O_EXCL: never take over a file that is there already.
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), 'wb') as handle:
                handle.write(header.encode('ascii'))
                handle.flush()
                os.fsync(handle.fileno())
                state = dict(path=path, seal=seal, hosts=0, signature=_signature(os.fstat(handle.fileno())))
        except OSError as exc:
            raise SnapshotError('no snapshot can be written in %s (enforced_tls_policy_snapshot_dir): %s'
                                % (self.directory, exc.strerror or exc))
        write_private_json(self._state, state, sync=False)
        return _Journal(path, state, self._key, header.encode('ascii'))


_RECORDERS = {}
_RECORDERS_LOCK = threading.Lock()


def recorder_for(run_dir, directory, api_key):
    """This process's Recorder of a run's snapshot directory and API key: one for all its threads, so that they commit
    together."""
    key = seal_key(api_key)
    name = (run_dir, os.path.abspath(os.path.expanduser(directory)), key.id)
    with _RECORDERS_LOCK:
        if name not in _RECORDERS:
            _RECORDERS[name] = Recorder(run_dir, directory, key)
        return _RECORDERS[name]
