# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Snapshots of Enforced TLS writes: what each subuser had before a run changed it, so that it can be restored.

One file per ``ansible-playbook`` run and snapshot directory, written by every worker process of the run: a journal in
JSON Lines (``enforced-tls-<UTC time>-<id>.jsonl``), a header line, then one line per event, appended as it happens
(shown here wrapped)::

    {"created":"2025-01-31T09:00:00Z","format":"mailsec.sendgrid.enforced_tls_snapshot","version":1,"seal":"sha256:..."}
    {"endpoint":"https://api.sendgrid.com","event":"record","host":"sub0005","on_behalf_of":"sub0005",
     "previous":{"require_tls":false},"recorded":"2025-01-31T09:00:02Z","region":"global","seal":"sha256:..."}
    {"event":"done","fields":["require_tls"],"host":"sub0005","seal":"sha256:..."}

A ``record`` is appended, and on disk, before its PATCH: the fields the run changes, as they were before (only fields
the run has not recorded for that host yet: a restore goes back to the state before the run). ``done`` follows a PATCH
that succeeded, ``undo`` one that failed (its fields are taken out again). So a crash in between leaves a record without
``done``, which a restore reads back harmlessly (it only writes what differs, with a warning), and a failed write
leaves nothing behind. The API key is never part of it.

Each line's ``seal`` is a SHA-256 over the previous line's seal and the line's own canonical JSON (sorted keys, no
spaces, ASCII): a hash chain, so an edited, reordered or foreign line, or a last line cut short, is refused. :func:`load`
folds the events into one entry per subuser (``{"subusers": {host: {on_behalf_of, endpoint, region, recorded,
previous, pending}}}``), which is what a restore works from. It is a checksum against damage, not a signature.

An append costs the same whatever the file's size (the rewrite of a whole document it replaced cost 5 ms a write at
1,000 subusers): the worker processes of a run share the file under an ``fcntl`` lock (:func:`locked`), and the run's
private temporary directory keeps where the file ends (inode, size, modification time, last seal), so a worker appends
without reading the chain back, and a file changed by anyone else during the run stops every later write. A ``done``
only appends; a ``record`` reads the lines that name its host (what the run recorded for it already).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import functools
import hashlib
import json
import os
import secrets
import threading

from ansible_collections.mailsec.sendgrid.plugins.module_utils.api import SendGridError, check_on_behalf_of, resolve_base_url
from ansible_collections.mailsec.sendgrid.plugins.module_utils.enforced_tls import FIELDS, desired_state

FORMAT = 'mailsec.sendgrid.enforced_tls_snapshot'
VERSION = 1
DEFAULT_DIR = './enforced_tls_snapshots'
_ENTRY_KEYS = frozenset(('on_behalf_of', 'endpoint', 'region', 'recorded', 'previous', 'pending'))


class SnapshotError(SendGridError):
    """A snapshot that cannot be written or trusted.

    A SendGridError so that the fleet machinery reports it as the account's failure, like an API error: a subuser whose
    previous settings could not be recorded is not written.
    """


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


# -- files shared by the worker processes of one run ------------------------------------------------------------------

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


# -- the journal -------------------------------------------------------------------------------------------------------

_SEAL = ',"seal":"'
_RECORD_KEYS = frozenset(('event', 'host')) | _ENTRY_KEYS - {'pending'}


def _canonical(body):
    return json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=True)


def _chain(previous_seal, canonical):
    return 'sha256:' + hashlib.sha256((previous_seal + canonical).encode('ascii')).hexdigest()


def seal_line(body, previous_seal=''):
    """The journal line of ``body`` (a dict, without "seal"), chained to the previous line's seal: (text, its seal)."""
    canonical = _canonical(body)
    seal = _chain(previous_seal, canonical)
    return '%s%s%s"}\n' % (canonical[:-1], _SEAL, seal), seal


def _unseal_line(line, previous_seal):
    """(body, seal) of one line (no newline) if its seal follows from ``previous_seal``; (None, None) otherwise."""
    position = line.rfind(_SEAL)
    if position < 1 or not line.endswith('"}'):
        return None, None
    # The seal covers the text as written, so a reader never re-encodes it: any change to the line breaks it.
    seal = line[position + len(_SEAL):-2]
    if _chain(previous_seal, line[:position] + '}') != seal:
        return None, None
    try:
        body = json.loads(line)
    except ValueError:
        return None, None
    return (body, seal) if isinstance(body, dict) else (None, None)


def _header_problem(text):
    """Why ``text`` does not start like a snapshot of this format (None when it does)."""
    first = text.split('\n', 1)[0]
    try:
        header = json.loads(first)
    except ValueError as exc:
        return 'it is not valid JSON (%s): it is truncated or not a snapshot' % exc
    if not isinstance(header, dict) or header.get('format') != FORMAT:
        return 'it is not a mailsec.sendgrid Enforced TLS snapshot (no "format": "%s" on its first line)' % FORMAT
    if header.get('version') != VERSION:
        return 'its format version is %r; this collection reads version %d' % (header.get('version'), VERSION)
    return None


def parse(text):
    """(document, problems): the events of a journal folded into {format, version, created, subusers}."""
    problem = _header_problem(text)
    if problem:
        return None, [problem]
    lines = text.split('\n')
    if lines[-1]:
        return None, ['it is not valid JSON Lines: its last line is cut short (the file is truncated)']
    seal, events = '', []
    for number, line in enumerate(lines[:-1], 1):
        body, seal = _unseal_line(line, seal)
        if body is None:
            return None, ['its checksum does not match its content on line %d: the file was edited or damaged '
                          'after it was written (use --limit to restore only some subusers, not an edited file)' % number]
        body.pop('seal')
        events.append((number, body))
    header = events.pop(0)[1]
    unknown = sorted(set(header) - {'format', 'version', 'created'})
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


def load(path):
    """The snapshot at ``path``, checked and folded; SnapshotError names the file and every problem."""
    try:
        with open(path, encoding='utf-8') as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError('snapshot %s cannot be read: %s' % (path, getattr(exc, 'strerror', None) or exc))
    document, found = parse(text)
    if found:
        raise SnapshotError('snapshot %s is refused, nothing was sent to SendGrid: %s' % (path, '; '.join(found)))
    return document


# -- recording a run's writes ------------------------------------------------------------------------------------------

class _Journal:
    """The run's snapshot file during one cycle, under the run's lock: entries read on demand, lines to append."""

    def __init__(self, path, state, text=None):
        self.path, self.state, self._text = path, dict(state), text
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
        line, self.state['seal'] = seal_line(body, self.state['seal'])
        self.lines.append(line)
        self.state['hosts'] += hosts


def _changed(path):
    return SnapshotError('the run\'s snapshot %s was changed by someone else during the run: nothing more is written '
                         'without a trustworthy record' % path)


def _signature(stat):
    """What changes when anyone writes the file: its inode, size and modification time."""
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns]


class Recorder:
    """The run's snapshot file in one directory, shared by the run's worker processes.

    ``run_dir`` is private to one ``ansible-playbook`` run: the run's file, where it ends (inode, size, modification
    time) and its last seal are kept there, so every worker process of the run appends to the same file, the next run
    starts a new one, and a worker neither reads the chain back nor misses a change made by anyone else. The threads of
    one process (batch mode) append together: one write and one sync for all the changes waiting (group commit).
    """

    def __init__(self, run_dir, directory):
        self.directory = os.path.abspath(os.path.expanduser(directory))
        key = hashlib.sha256(self.directory.encode('utf-8', 'surrogatepass')).hexdigest()[:16]
        self._lock = os.path.join(run_dir, 'snapshot-%s.lock' % key)
        self._state = os.path.join(run_dir, 'snapshot-%s.state' % key)
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
        try:
            stat = os.stat(state['path'])
        except OSError as exc:
            raise SnapshotError('the run\'s snapshot %s cannot be read back (%s): nothing more is written without it'
                                % (state['path'], exc.strerror or exc))
        if _signature(stat) != state['signature']:
            raise _changed(state['path'])
        return _Journal(state['path'], state)

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
                # Private when we create it; an existing directory keeps the mode its owner gave it.
                os.makedirs(self.directory, mode=0o700)
            except OSError as exc:
                if exc.errno != errno.EEXIST or not os.path.isdir(self.directory):
                    raise
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
            path = os.path.join(self.directory, 'enforced-tls-%s-%s.jsonl' % (stamp, secrets.token_hex(3)))
            header, seal = seal_line(dict(format=FORMAT, version=VERSION, created=utc_now()))
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
        return _Journal(path, state, header.encode('ascii'))


_RECORDERS = {}
_RECORDERS_LOCK = threading.Lock()


def recorder_for(run_dir, directory):
    """This process's Recorder of a run's snapshot directory: one for all its threads, so that they commit together."""
    key = (run_dir, os.path.abspath(os.path.expanduser(directory)))
    with _RECORDERS_LOCK:
        if key not in _RECORDERS:
            _RECORDERS[key] = Recorder(run_dir, directory)
        return _RECORDERS[key]
