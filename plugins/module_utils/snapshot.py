# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Snapshots of Enforced TLS writes: what each subuser had before a run changed it, so that it can be restored.

One JSON file per ``ansible-playbook`` run and snapshot directory, written by every worker process of the run (on one
line, with the checksum last; shown here spread out)::

    {
      "format": "mailsec.sendgrid.enforced_tls_snapshot",
      "version": 1,
      "created": "2025-01-31T09:00:00Z",
      "subusers": {
        "sub0005": {
          "on_behalf_of": "sub0005",                 # the account written (null: the parent account)
          "endpoint": "https://api.sendgrid.com",    # where it was written
          "region": "global",
          "recorded": "2025-01-31T09:00:02Z",
          "previous": {"require_tls": false}          # only the fields the run changed, as they were before
        }
      },
      "checksum": "sha256:..."                       # over everything else, so an edited or cut file is refused
    }

An entry is recorded before its PATCH and carries ``"pending": [fields]`` until the PATCH has succeeded; a PATCH that
fails takes its fields out again. So a crash in between leaves an entry that a restore reads back harmlessly (it only
writes what differs), and a failed write leaves nothing behind. The API key is never part of it.

The worker processes of a run share the file under an ``fcntl`` lock (:func:`locked`) and replace it atomically
(:func:`write_private_json`), so a reader never sees half a file.
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
_TOP_KEYS = frozenset(('format', 'version', 'created', 'subusers', 'checksum'))


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


def write_private_json(path, data, text=None, sync=True):
    """Replace ``path`` atomically (write a 0600 temporary file, then rename): a reader sees the old or the new file.

    Writes ``text`` when given (JSON already encoded), else ``data`` as JSON; ``sync``: on disk before the rename.
    Returns the new file's os.stat().
    """
    # json.dumps in one piece: json.dump (and any indent=) take the pure-Python encoder, ten times slower.
    text = json.dumps(data, sort_keys=True) + '\n' if text is None else text
    tmp = '%s.%d.%d.tmp' % (path, os.getpid(), threading.get_ident())
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w', encoding='utf-8') as handle:
            handle.write(text)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        return os.stat(path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- the document ------------------------------------------------------------------------------------------------------

def _canonical(document):
    body = {key: value for key, value in document.items() if key != 'checksum'}
    return json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=True)


def _digest(canonical):
    return 'sha256:' + hashlib.sha256(canonical.encode('ascii')).hexdigest()


def checksum(document):
    return _digest(_canonical(document))


# The run's snapshot is written as its canonical JSON with the checksum added last: its writers can then check a file
# they read back from its text alone, without encoding it again (what makes a write cheap in a file of thousands).
_SEAL = ',"checksum":"'


def _sealed_text(document):
    canonical = _canonical(document)
    return '%s%s%s"}\n' % (canonical[:-1], _SEAL, _digest(canonical))


def _unseal(text):
    """The document of a file written by _sealed_text, or None when its text does not match its checksum."""
    position = text.rfind(_SEAL)
    if position < 0 or not text.endswith('"}\n'):
        return None
    canonical = text[:position] + '}'
    if _digest(canonical) != text[position + len(_SEAL):-3]:
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) and document.get('format') == FORMAT else None


def _signature(stat):
    """What changes whenever any process replaces the file (os.replace gives it a new inode)."""
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def problems(document):
    """Everything wrong with a parsed snapshot, as sentences (empty when it can be restored from)."""
    if not isinstance(document, dict) or document.get('format') != FORMAT:
        return ['it is not a mailsec.sendgrid Enforced TLS snapshot (no "format": "%s" at its top)' % FORMAT]
    if document.get('version') != VERSION:
        return ['its format version is %r; this collection reads version %d' % (document.get('version'), VERSION)]
    if document.get('checksum') != checksum(document):
        return ['its checksum does not match its content: the file was edited or damaged after it was written '
                '(use --limit to restore only some subusers, not an edited file)']
    found = []
    unknown = sorted(set(document) - _TOP_KEYS)
    if unknown:
        found.append('unknown top-level keys %s' % ', '.join(unknown))
    subusers = document.get('subusers')
    if not isinstance(subusers, dict):
        return found + ['"subusers" is not an object']
    for host, entry in subusers.items():
        found.extend('subuser %r: %s' % (host, problem) for problem in _entry_problems(host, entry))
    return found


def _entry_problems(host, entry):
    if not host.strip():
        return ['an empty host name']
    if not isinstance(entry, dict):
        return ['its entry is not an object']
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
    pending = entry.get('pending', [])
    if not isinstance(pending, list) or not set(pending) <= set(previous if isinstance(previous, dict) else ()):
        found.append('"pending" must list fields of "previous", got %r' % (pending,))
    return found


def load(path):
    """The snapshot at ``path``, checked; SnapshotError names the file and every problem."""
    try:
        with open(path, encoding='utf-8') as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError('snapshot %s cannot be read: %s' % (path, getattr(exc, 'strerror', None) or exc))
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise SnapshotError('snapshot %s is not valid JSON (%s): it is truncated or not a snapshot; nothing was sent to '
                            'SendGrid' % (path, exc))
    found = problems(document)
    if found:
        raise SnapshotError('snapshot %s is refused, nothing was sent to SendGrid: %s' % (path, '; '.join(found)))
    return document


# -- recording a run's writes ------------------------------------------------------------------------------------------

class Recorder:
    """The run's snapshot file in one directory, shared by the run's worker processes.

    ``run_dir`` is private to one ``ansible-playbook`` run: the name of the run's snapshot file is kept there, so every
    worker process of the run writes the same file, and the next run starts a new one.

    Each change is on disk before :meth:`record` lets its write go on. The file is rewritten whole for that (so that it
    stays one sealed document), which costs time in proportion to its size; two things keep a fleet of thousands from
    paying that once per change: the threads of one process (batch mode) commit their changes together, one file cycle
    for all that are waiting (group commit), and a process that wrote the file last reuses the document it holds instead
    of reading the file back.
    """

    def __init__(self, run_dir, directory):
        self.directory = os.path.abspath(os.path.expanduser(directory))
        key = hashlib.sha256(self.directory.encode('utf-8', 'surrogatepass')).hexdigest()[:16]
        self._lock = os.path.join(run_dir, 'snapshot-%s.lock' % key)
        self._pointer = os.path.join(run_dir, 'snapshot-%s.path' % key)
        self._cycle_lock = threading.Lock()  # one file cycle at a time in this process
        self._queue_lock = threading.Lock()
        self._queue = []  # changes waiting for the next file cycle
        self._cache = None  # (signature, path, document) of the file as this process last wrote it

    @contextlib.contextmanager
    def record(self, host, on_behalf_of, endpoint, region, previous):
        """Record ``previous`` for ``host`` before the write inside the ``with`` block; undo it if that write fails.

        Yields a summary for the task result: {path, subusers (entries in the file), new (whether this host's entry is
        new in this run), recorded (the fields this write added), endpoint}. Fields the run already recorded for the host keep
        their first value: a restore goes back to the state before the run, not to a state in the middle of it.
        """
        def add(path, document):
            entry = document['subusers'].get(host)
            new = entry is None
            if new:
                entry = document['subusers'][host] = dict(
                    on_behalf_of=on_behalf_of, endpoint=endpoint, region=region, previous={})
            added = {field: value for field, value in previous.items() if field not in entry['previous']}
            if added:
                entry['previous'].update(added)
                entry['pending'] = sorted(set(entry.get('pending', ())) | set(added))
                entry['recorded'] = utc_now()
            return added, dict(path=path, subusers=len(document['subusers']), new=new, recorded=sorted(added),
                               endpoint=endpoint)

        added, summary = self._commit(add)
        try:
            yield summary
        except BaseException:
            if added:
                self._commit(functools.partial(_settle, host, added, False))
            raise
        if added:
            # Not synced: should it be lost (a power cut), the entry stays pending, which a restore reads harmlessly.
            self._commit(functools.partial(_settle, host, added, True), sync=False)

    def _commit(self, change, sync=True):
        """Apply ``change(path, document)`` to the run's snapshot and have it on disk; returns what ``change`` returned.

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
                path, document = self._document()
                for job in jobs:
                    job['value'] = job['change'](path, document)  # dict updates only: they do not fail half-way
                try:
                    stat = write_private_json(path, None, text=_sealed_text(document),
                                              sync=any(job['sync'] for job in jobs))
                except OSError as exc:
                    raise SnapshotError('the snapshot %s cannot be written: %s' % (path, exc.strerror or exc))
                self._cache = (_signature(stat), path, document)
        except Exception as exc:  # every change of the cycle failed with it (the file is as it was)
            self._cache = None
            for job in jobs:
                job.pop('value', None)
                job['error'] = exc
        finally:
            for job in jobs:
                job['done'] = True

    def _document(self):
        """The run's snapshot (created on first use), under the lock."""
        path = self._path()
        if path is None:
            return self._create()
        if self._cache is not None and self._cache[1] == path:
            try:
                if _signature(os.stat(path)) == self._cache[0]:
                    return path, self._cache[2]  # nobody wrote it since this process did
            except OSError:
                pass
        return path, self._read(path)

    def _path(self):
        try:
            with open(self._pointer, encoding='utf-8') as handle:
                return handle.read().strip() or None
        except FileNotFoundError:
            return None

    def _read(self, path):
        try:
            with open(path, encoding='utf-8') as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise SnapshotError('the run\'s snapshot %s cannot be read back (%s): nothing more is written without it'
                                % (path, getattr(exc, 'strerror', None) or exc))
        # The run's own file, sealed by its own processes: its seal is checked (not every entry, as a restore does).
        document = _unseal(text)
        if document is None:
            raise SnapshotError('the run\'s snapshot %s was changed by someone else during the run: nothing more is '
                                'written without a trustworthy record' % path)
        return document

    def _create(self):
        try:
            try:
                # Private when we create it; an existing directory keeps the mode its owner gave it.
                os.makedirs(self.directory, mode=0o700)
            except OSError as exc:
                if exc.errno != errno.EEXIST or not os.path.isdir(self.directory):
                    raise
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
            path = os.path.join(self.directory, 'enforced-tls-%s-%s.json' % (stamp, secrets.token_hex(3)))
            # O_EXCL: never take over a file that is there already.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            raise SnapshotError('no snapshot can be written in %s (enforced_tls_policy_snapshot_dir): %s'
                                % (self.directory, exc.strerror or exc))
        with open(os.open(self._pointer, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w', encoding='utf-8') as handle:
            handle.write(path)
        return path, dict(format=FORMAT, version=VERSION, created=utc_now(), subusers={})


_RECORDERS = {}
_RECORDERS_LOCK = threading.Lock()


def recorder_for(run_dir, directory):
    """This process's Recorder of a run's snapshot directory: one for all its threads, so that they commit together."""
    key = (run_dir, os.path.abspath(os.path.expanduser(directory)))
    with _RECORDERS_LOCK:
        if key not in _RECORDERS:
            _RECORDERS[key] = Recorder(run_dir, directory)
        return _RECORDERS[key]


def _settle(host, added, keep, dummy_path, document):
    """After the write that ``added`` was recorded for: no longer pending (``keep``), or taken out (the write failed)."""
    entry = document['subusers'].get(host)
    if entry is None:
        return
    pending = [field for field in entry.get('pending', ()) if field not in added]
    if pending:
        entry['pending'] = pending
    else:
        entry.pop('pending', None)
    if not keep:
        for field in added:
            entry['previous'].pop(field, None)
        if not entry['previous']:
            del document['subusers'][host]
