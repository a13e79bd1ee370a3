# -*- coding: utf-8 -*-
"""The snapshot file: recorded before a write, taken out again when the write fails, shared by worker processes, and
refused when it is malformed, truncated, edited or foreign."""

from __future__ import annotations

import multiprocessing
import os
import stat

import pytest

from ansible_collections.mailsec.sendgrid.plugins.plugin_utils import _snapshot as snapshot
from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import SendGridError

ENDPOINT = 'https://api.sendgrid.com'
# Recognisable if it leaked into a file or a message; the journal is sealed under a key derived from it.
KEY = 'unit-key-5b1e-never-in-a-file'


def recorder(tmp_path, directory='snaps'):
    run_dir = tmp_path / 'run'
    run_dir.mkdir(exist_ok=True)
    return snapshot.Recorder(str(run_dir), str(tmp_path / directory), KEY)


def the_file(tmp_path, directory='snaps'):
    files = list((tmp_path / directory).glob('enforced-tls-*.jsonl'))
    assert len(files) == 1, files
    return files[0]


def test_entry_is_pending_during_the_write_and_kept_after_it(tmp_path):
    rec = recorder(tmp_path)
    with rec.record('sub1', 'sub1', ENDPOINT, 'global', {'require_tls': False}) as summary:
        during = snapshot.load(str(the_file(tmp_path)), KEY)
        assert during['subusers']['sub1']['pending'] == ['require_tls']
    assert summary['new'] is True and summary['subusers'] == 1 and summary['recorded'] == ['require_tls']
    document = snapshot.load(str(the_file(tmp_path)), KEY)
    entry = document['subusers']['sub1']
    assert entry['previous'] == {'require_tls': False} and 'pending' not in entry
    assert entry['endpoint'] == ENDPOINT and entry['region'] == 'global' and entry['on_behalf_of'] == 'sub1'
    assert entry['recorded'].endswith('Z') and document['created'].endswith('Z')


def test_failed_write_leaves_no_entry(tmp_path):
    rec = recorder(tmp_path)
    with rec.record('sub1', 'sub1', ENDPOINT, 'global', {'version': '1.1'}):
        pass
    with pytest.raises(SendGridError):
        with rec.record('sub2', 'sub2', ENDPOINT, 'global', {'require_tls': False}):
            raise SendGridError('HTTP 500 on PATCH')
    assert sorted(snapshot.load(str(the_file(tmp_path)), KEY)['subusers']) == ['sub1']


def test_a_second_write_keeps_the_first_previous_value(tmp_path):
    rec = recorder(tmp_path)
    with rec.record('sub1', 'sub1', ENDPOINT, 'global', {'version': '1.1'}):
        pass
    # Later in the same run: version was 1.2 (written by us), require_tls is new.
    with rec.record('sub1', 'sub1', ENDPOINT, 'global', {'version': '1.2', 'require_tls': False}) as summary:
        pass
    assert summary['new'] is False and summary['recorded'] == ['require_tls']
    assert snapshot.load(str(the_file(tmp_path)), KEY)['subusers']['sub1']['previous'] == {'version': '1.1', 'require_tls': False}
    # A failing third write takes out only what it added.
    with pytest.raises(SendGridError):
        with rec.record('sub1', 'sub1', ENDPOINT, 'global', {'require_valid_cert': False, 'version': '1.3'}):
            raise SendGridError('boom')
    assert snapshot.load(str(the_file(tmp_path)), KEY)['subusers']['sub1']['previous'] == {'version': '1.1', 'require_tls': False}


def test_modes_and_one_file_per_run(tmp_path):
    rec = recorder(tmp_path)
    with rec.record('sub1', None, ENDPOINT, 'eu', {'version': '1.1'}):
        pass
    path = the_file(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / 'snaps').st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # Another run (another run directory) starts another file.
    other_run = tmp_path / 'run2'
    other_run.mkdir()
    with snapshot.Recorder(str(other_run), str(tmp_path / 'snaps'), KEY).record('sub2', 'sub2', ENDPOINT, 'global', {'version': '1.1'}):
        pass
    assert len(list((tmp_path / 'snaps').glob('*.jsonl'))) == 2


def test_an_existing_directory_keeps_its_mode(tmp_path):
    (tmp_path / 'shared').mkdir(mode=0o750)
    os.chmod(tmp_path / 'shared', 0o750)
    with recorder(tmp_path, 'shared').record('sub1', 'sub1', ENDPOINT, 'global', {'version': '1.1'}):
        pass
    assert stat.S_IMODE(os.stat(tmp_path / 'shared').st_mode) == 0o750


def test_unwritable_directory_is_a_clear_error_before_the_write(tmp_path):
    (tmp_path / 'file').write_text('')
    written = []
    with pytest.raises(snapshot.SnapshotError, match='no snapshot can be written in .*enforced_tls_policy_snapshot_dir'):
        with recorder(tmp_path, 'file/below').record('sub1', 'sub1', ENDPOINT, 'global', {'version': '1.1'}):
            written.append(True)
    assert written == []


def _record_many(run_dir, directory, names):
    rec = snapshot.Recorder(run_dir, directory, KEY)
    for name in names:
        with rec.record(name, name, ENDPOINT, 'global', {'require_tls': False}):
            pass


def test_worker_processes_share_one_file(tmp_path):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    context = multiprocessing.get_context('fork')
    workers = [context.Process(target=_record_many, args=(str(run_dir), str(tmp_path / 'snaps'),
                                                          ['w%d-%02d' % (worker, n) for n in range(15)]))
               for worker in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(snapshot.load(str(the_file(tmp_path)), KEY)['subusers']) == 90


def _journal(*events, sealed_under=KEY, **header):
    """A journal's text: the header (with ``header`` over its fields), then ``events``, each sealed on the one before."""
    text, seal = '', ''
    first = dict(format=snapshot.FORMAT, version=snapshot.VERSION, created='2025-01-01T00:00:00Z', key_id=snapshot.SealKey(KEY).id)
    for body in [dict(first, **header)] + list(events):
        line, seal = snapshot.seal_line(body, sealed_under, seal)
        text += line
    return text


ENTRY = dict(on_behalf_of='sub1', endpoint=ENDPOINT, region='global', recorded='2025-01-01T00:00:01Z',
             previous={'require_tls': False})


def _record(**fields):
    return dict(dict(ENTRY, event='record', host='sub1'), **fields)


DONE = dict(event='done', host='sub1', fields=['require_tls'])


def _swapped(lines, one, other):
    lines[one - 1], lines[other - 1] = lines[other - 1], lines[one - 1]
    return lines


def test_a_journal_folds_into_one_entry_per_subuser(tmp_path):
    path = tmp_path / 'snap.jsonl'
    path.write_text(_journal(_record(), DONE, _record(previous={'version': '1.1'}, recorded='2025-01-01T00:00:05Z'),
                             _record(host='sub2', on_behalf_of='sub2'), dict(DONE, host='sub2', event='undo')))
    document = snapshot.load(str(path), KEY)
    assert document['created'] == '2025-01-01T00:00:00Z'
    # The second record adds its field, pending until a "done"; the undone write of sub2 leaves nothing.
    assert document['subusers'] == {'sub1': dict(ENTRY, previous={'require_tls': False, 'version': '1.1'}, pending=['version'],
                                                 recorded='2025-01-01T00:00:05Z')}


@pytest.mark.parametrize('content, message', [
    ('{"format": "mailsec.sendgrid.enforced_tls_snapshot", "subusers": {"sub1": {"previo', 'is not valid JSON'),
    ('', 'is not valid JSON'),
    ('[1, 2]', 'is not a mailsec.sendgrid Enforced TLS snapshot'),
    ('{"audit": "report"}', 'is not a mailsec.sendgrid Enforced TLS snapshot'),
    (_journal(_record(), version=3), 'its format version is 3'),
    (_journal(_record(), DONE).replace('"require_tls":false', '"require_tls":true'), 'its checksum does not match its content on line 2'),
    (_journal(_record(), DONE).replace('"seal":"hmac-sha256:', '"seal":"hmac-sha256:0', 1), 'its checksum does not match its content on line 1'),
    # Lines in another order, or one left out, break the chain just the same.
    (''.join(_swapped(_journal(_record(), DONE, _record(host='sub2')).splitlines(True), 2, 3)), 'its checksum does not match its content on line 2'),
    (''.join(_journal(_record(), DONE, _record(host='sub2')).splitlines(True)[:1] + _journal(_record(), DONE).splitlines(True)[2:]),
     'its checksum does not match its content on line 2'),
    (_journal(_record(), DONE)[:-5], 'its last line is cut short (the file is truncated)'),
    # Not ASCII, as no line this collection writes: refused like any other edit, not an exception.
    (_journal(_record(), DONE).replace('"sub1"', '"sub\u00e9\u202e"', 1), 'its checksum does not match its content on line 2'),
    (_journal(_record(previous={'version': '1.4'})), 'version must be one of'),
    (_journal(_record(previous={})), '"previous" must hold one or more of'),
    (_journal(_record(previous={'colour': 'red'})), '"previous" must hold one or more of'),
    (_journal(_record(endpoint='http://evil.example')), 'uses plain http:// to a host that is not loopback'),
    (_journal(_record(on_behalf_of='')), 'on_behalf_of must be a subuser username'),
    (_journal(_record(api_key='x')), 'line 2: unknown keys api_key'),
    (_journal(DONE), 'line 2 is not an event of this format'),
    (_journal(_record(), DONE, DONE), 'line 4 is not an event of this format'),
    (_journal(_record(), _record(previous={'require_tls': True})), 'must hold fields not recorded for sub1 yet'),
    (_journal(_record(), _record(endpoint='https://api.eu.sendgrid.com')), 'records sub1 for another account or endpoint'),
])
def test_refused_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / 'snap.jsonl'
    path.write_text(content)
    with pytest.raises(snapshot.SnapshotError) as refused:
        snapshot.load(str(path), KEY)
    assert message in str(refused.value) and str(path) in str(refused.value)


def test_missing_file(tmp_path):
    with pytest.raises(snapshot.SnapshotError, match='cannot be read: No such file or directory'):
        snapshot.load(str(tmp_path / 'nope.json'), KEY)


def test_threads_of_one_process_commit_together_and_each_write_is_on_disk_first(tmp_path, monkeypatch):
    """Batch mode: 8 threads recording at once share file cycles (group commit), and each entry is in the file, sealed,
    by the time its write starts."""
    import threading

    record = recorder(tmp_path)
    cycles = []
    real_write = snapshot.write_private_json

    def counting_write(path, data, sync=True):
        cycles.append(path)
        return real_write(path, data, sync)

    monkeypatch.setattr(snapshot, 'write_private_json', counting_write)
    start = threading.Barrier(8)
    seen = {}

    def one(host):
        start.wait()
        with record.record(host, host, ENDPOINT, 'global', {'require_tls': False}) as summary:
            seen[host] = snapshot.load(summary['path'], KEY)['subusers'][host]['pending']

    threads = [threading.Thread(target=one, args=('sub%d' % n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert seen == {'sub%d' % n: ['require_tls'] for n in range(8)}
    document = snapshot.load(str(the_file(tmp_path)), KEY)
    assert sorted(document['subusers']) == sorted(seen) and not any('pending' in e for e in document['subusers'].values())
    assert len(cycles) < 16  # a cycle per record and per settle without group commit


def test_a_run_file_changed_by_someone_else_stops_further_writes(tmp_path):
    record = recorder(tmp_path)
    with record.record('sub1', 'sub1', ENDPOINT, 'global', {'require_tls': False}):
        pass
    path = the_file(tmp_path)
    path.write_text(path.read_text().replace('"require_tls":false', '"require_tls":true'))
    # A fresh recorder, as the next worker process has: it must read the file back and finds the seal broken.
    with pytest.raises(snapshot.SnapshotError, match='changed by someone else'):
        with recorder(tmp_path).record('sub2', 'sub2', ENDPOINT, 'global', {'version': '1.1'}):
            raise AssertionError('the write must not start')


def test_a_failed_cycle_fails_its_write_and_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    record = recorder(tmp_path)
    with record.record('sub1', 'sub1', ENDPOINT, 'global', {'require_tls': False}):
        pass
    before = the_file(tmp_path).read_text()

    def full_disk(path, data, sync=True):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(snapshot, 'write_private_json', full_disk)
    with pytest.raises(snapshot.SnapshotError, match='cannot be written: No space left on device'):
        with record.record('sub2', 'sub2', ENDPOINT, 'global', {'version': '1.1'}):
            raise AssertionError('the write must not start')
    monkeypatch.undo()
    assert the_file(tmp_path).read_text() == before
    # The document this process held was dropped with the failed cycle: the next write starts from the file.
    with record.record('sub3', 'sub3', ENDPOINT, 'global', {'version': '1.1'}):
        pass
    assert sorted(snapshot.load(str(the_file(tmp_path)), KEY)['subusers']) == ['sub1', 'sub3']


def test_one_cycle_can_append_before_it_reads(tmp_path):
    """Group commit in batch mode: one host's record appended, then another host's entry read, in one file cycle."""
    rec = recorder(tmp_path)
    with rec.record('sub1', 'sub1', ENDPOINT, 'global', {'require_tls': False}):
        pass
    fresh = recorder(tmp_path)  # no text read yet, as a worker process starts
    record = dict(event='record', host='sub2', on_behalf_of='sub2', endpoint=ENDPOINT, region='global',
                  recorded='2025-01-01T00:00:00Z', previous={'version': '1.1'})
    jobs = [dict(change=lambda journal: journal.append(record, hosts=1), sync=True, done=False),
            dict(change=lambda journal: journal.entry('sub1'), sync=True, done=False),
            dict(change=lambda journal: journal.entry('sub2'), sync=True, done=False)]
    fresh._cycle(jobs)
    assert [job.get('error') for job in jobs] == [None] * 3
    assert jobs[1]['value']['previous'] == {'require_tls': False} and 'pending' not in jobs[1]['value']
    assert jobs[2]['value']['previous'] == {'version': '1.1'} and jobs[2]['value']['pending'] == ['version']
    assert sorted(snapshot.load(str(the_file(tmp_path)), KEY)['subusers']) == ['sub1', 'sub2']


# -- the keyed seal ----------------------------------------------------------------------------------------------------

def _plain_sha256_journal(*events, **header):
    """A journal re-sealed as anyone can: each line's seal a plain SHA-256 over the previous seal and its text."""
    import hashlib
    import json
    text, seal = '', ''
    for body in [dict(dict(format=snapshot.FORMAT, version=1, created='2025-01-01T00:00:00Z'), **header)] + list(events):
        canonical = json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=True)
        seal = 'sha256:' + hashlib.sha256((seal + canonical).encode('ascii')).hexdigest()
        text += '%s,"seal":"%s"}\n' % (canonical[:-1], seal)
    return text


def test_lines_are_sealed_with_an_hmac_under_a_key_derived_from_the_api_key(tmp_path):
    import hashlib
    import hmac
    import json
    with recorder(tmp_path).record('sub1', 'sub1', ENDPOINT, 'global', {'require_tls': False}):
        pass
    text = the_file(tmp_path).read_text()
    lines = text.splitlines()
    header = json.loads(lines[0])
    assert header['version'] == 2 and header['key_id'] == snapshot.SealKey(KEY).id and len(header['key_id']) == 16
    sealing = hmac.new(KEY.encode(), b'mailsec.sendgrid enforced_tls_snapshot seal v2', hashlib.sha256).digest()
    seal = ''
    for line in lines:
        position = line.rfind(',"seal":"')
        expected = hmac.new(sealing, (seal + line[:position] + '}').encode(), hashlib.sha256).hexdigest()
        assert line[position:] == ',"seal":"hmac-sha256:%s"}' % expected
        seal = 'hmac-sha256:' + expected
    # Neither the key nor the derived key is written anywhere: not in the journal, not in the run's directory.
    for path in list(tmp_path.rglob('*')):
        if path.is_file():
            content = path.read_bytes()
            assert KEY.encode() not in content and sealing.hex().encode() not in content and sealing not in content, path
    # The same key with a vault file's newline seals alike; the key id does not reveal the sealing key.
    assert snapshot.SealKey(KEY + '\n').id == header['key_id'] and header['key_id'] not in sealing.hex()
    assert KEY not in repr(snapshot.SealKey(KEY))


@pytest.mark.parametrize('forged, message', [
    # Today's format: a plain SHA-256 chain anyone can compute, naming the account they choose.
    (lambda: _plain_sha256_journal(_record(on_behalf_of='sub0002')), 'its format version is 1, whose plain SHA-256 checksum'),
    # The same chain under this version's header (whose key id anyone can copy from a real journal).
    (lambda: _plain_sha256_journal(_record(on_behalf_of='sub0002'), version=snapshot.VERSION, key_id=snapshot.SealKey(KEY).id),
     'its checksum does not match its content on line 1'),
    # Sealed under another key, with this key's id put in its header.
    (lambda: _journal(_record(on_behalf_of='sub0002'), sealed_under='another-key'),
     'its checksum does not match its content on line 1'),
])
def test_a_journal_resealed_without_the_key_is_refused(tmp_path, forged, message):
    path = tmp_path / 'forged.jsonl'
    path.write_text(forged())
    with pytest.raises(snapshot.SnapshotError) as refused:
        snapshot.load(str(path), KEY)
    assert message in str(refused.value) and str(path) in str(refused.value) and 'nothing was sent to SendGrid' in str(refused.value)


def test_a_journal_sealed_under_a_rotated_key_is_refused_saying_so(tmp_path):
    old_key, new_key = 'old-key-0a1b-rotated', 'new-key-9f8e-current'
    with snapshot.Recorder(str(tmp_path), str(tmp_path / 'snaps'), old_key).record(
            'sub1', 'sub1', ENDPOINT, 'global', {'require_tls': False}):
        pass
    path = str(the_file(tmp_path))
    with pytest.raises(snapshot.SnapshotError) as refused:
        snapshot.load(path, new_key)
    message = str(refused.value)
    assert 'sealed under another API key (key id %s; the API key of this restore has key id %s)' % (
        snapshot.SealKey(old_key).id, snapshot.SealKey(new_key).id) in message
    assert 'rotated' in message and 'Restore with the key that wrote it' in message and 'If that key has been revoked' in message
    assert old_key not in message and new_key not in message
    assert sorted(snapshot.load(path, old_key + '\n')['subusers']) == ['sub1']


# -- private folders and files -----------------------------------------------------------------------------------------

def test_an_existing_snapshot_folder_others_may_write_is_refused_before_the_write(tmp_path):
    (tmp_path / 'open').mkdir()
    os.chmod(tmp_path / 'open', 0o777)
    written = []
    with pytest.raises(snapshot.SnapshotError) as refused:
        with recorder(tmp_path, 'open').record('sub1', 'sub1', ENDPOINT, 'global', {'version': '1.1'}):
            written.append(True)
    assert written == [] and list((tmp_path / 'open').iterdir()) == []
    assert 'the snapshot folder %s is writable by others (mode 0777)' % (tmp_path / 'open') in str(refused.value)
    assert 'enforced_tls_policy_snapshot_dir' in str(refused.value)


@pytest.mark.skipif(os.geteuid() != 0, reason='chown to another user needs root')
def test_an_existing_snapshot_folder_of_another_user_is_refused(tmp_path):
    (tmp_path / 'theirs').mkdir(mode=0o700)
    os.chown(tmp_path / 'theirs', 65534, 65534)
    with pytest.raises(snapshot.SnapshotError, match=r'the snapshot folder .*theirs is owned by uid 65534, not by the user'):
        with recorder(tmp_path, 'theirs').record('sub1', 'sub1', ENDPOINT, 'global', {'version': '1.1'}):
            raise AssertionError('the write must not start')


def _a_sound_journal(tmp_path):
    with recorder(tmp_path).record('sub1', 'sub1', ENDPOINT, 'global', {'require_tls': False}):
        pass
    return the_file(tmp_path)


@pytest.mark.parametrize('folder_mode, file_mode, shown', [(0o777, 0o600, 'mode 0777'), (0o770, 0o600, 'mode 0770'),
                                                           (0o700, 0o666, 'mode 0666'), (0o700, 0o620, 'mode 0620')])
def test_a_snapshot_others_may_write_is_refused_when_read(tmp_path, folder_mode, file_mode, shown):
    path = _a_sound_journal(tmp_path)
    os.chmod(path, file_mode)
    os.chmod(path.parent, folder_mode)
    with pytest.raises(snapshot.SnapshotError) as refused:
        snapshot.load(str(path), KEY)
    assert 'is writable by others (%s)' % shown in str(refused.value)
    assert (str(path.parent) if folder_mode != 0o700 else str(path)) in str(refused.value)


@pytest.mark.skipif(os.geteuid() != 0, reason='chown to another user needs root')
def test_a_snapshot_another_user_owns_is_refused_when_read(tmp_path):
    path = _a_sound_journal(tmp_path)
    os.chown(path, 65534, 65534)
    with pytest.raises(snapshot.SnapshotError, match=r'snapshot .*\.jsonl is owned by uid 65534, not by the user running Ansible'):
        snapshot.load(str(path), KEY)


def test_a_fifo_in_place_of_a_snapshot_is_refused_without_waiting(tmp_path):
    os.mkfifo(tmp_path / 'snap.jsonl', 0o600)
    with pytest.raises(snapshot.SnapshotError, match='it is not a regular file'):
        snapshot.load(str(tmp_path / 'snap.jsonl'), KEY)


# -- a worker that dies between its append and noting the end (issue 20, item 6) ---------------------------------------

def _die_after_append(run_dir, directory, host, cut=None):
    """A worker process of the run that appends its record, then dies before noting where the file ends (or, with
    ``cut``, dies while writing: only the first ``cut`` bytes of its lines reach the file)."""
    if cut is not None:
        real_open = open

        class Dying:
            def __init__(self, handle):
                self.handle = handle

            def write(self, data):
                self.handle.write(data[:cut])
                self.handle.flush()
                os._exit(3)

            def __getattr__(self, name):
                return getattr(self.handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self.handle.__exit__(*exc)

        def dying_open(path, *args, **kwargs):
            handle = real_open(path, *args, **kwargs)
            return Dying(handle) if args[:1] == ('ab',) else handle

        snapshot.open = dying_open  # module-level name lookup: the journal's append goes through it
    else:
        snapshot.write_private_json = lambda *args, **kwargs: os._exit(3)
    with snapshot.Recorder(run_dir, directory, KEY).record(host, host, ENDPOINT, 'global', {'require_tls': False}):
        os._exit(4)  # never reached: the worker dies first


def _dead_worker(tmp_path, cut=None):
    context = multiprocessing.get_context('fork')
    worker = context.Process(target=_die_after_append, args=(str(tmp_path / 'run'), str(tmp_path / 'snaps'), 'sub2', cut))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 3


def test_lines_a_dead_worker_of_the_run_appended_are_adopted(tmp_path):
    rec = recorder(tmp_path)
    with rec.record('sub1', 'sub1', ENDPOINT, 'global', {'require_tls': False}):
        pass
    size = the_file(tmp_path).stat().st_size
    _dead_worker(tmp_path)
    assert the_file(tmp_path).stat().st_size > size  # its record is in the file, the run's note of the end is not
    with recorder(tmp_path).record('sub3', 'sub3', ENDPOINT, 'global', {'version': '1.1'}) as summary:
        pass
    assert summary['subusers'] == 3
    document = snapshot.load(str(the_file(tmp_path)), KEY)
    # The dead worker's record stays pending (its PATCH may or may not have happened): a restore reads it harmlessly.
    assert sorted(document['subusers']) == ['sub1', 'sub2', 'sub3'] and document['subusers']['sub2']['pending'] == ['require_tls']
    # And the process that had noted the end before keeps writing too.
    with rec.record('sub4', 'sub4', ENDPOINT, 'global', {'version': '1.1'}):
        pass
    assert sorted(snapshot.load(str(the_file(tmp_path)), KEY)['subusers']) == ['sub1', 'sub2', 'sub3', 'sub4']


def test_a_line_a_dead_worker_left_cut_short_is_cut_off(tmp_path):
    with recorder(tmp_path).record('sub1', 'sub1', ENDPOINT, 'global', {'require_tls': False}):
        pass
    before = the_file(tmp_path).read_bytes()
    _dead_worker(tmp_path, cut=40)
    assert the_file(tmp_path).read_bytes() != before and not the_file(tmp_path).read_bytes().endswith(b'\n')
    with recorder(tmp_path).record('sub3', 'sub3', ENDPOINT, 'global', {'version': '1.1'}) as summary:
        pass
    assert summary['subusers'] == 2 and the_file(tmp_path).read_bytes().startswith(before)
    assert sorted(snapshot.load(str(the_file(tmp_path)), KEY)['subusers']) == ['sub1', 'sub3']


def test_a_tail_that_does_not_continue_the_chain_is_refused_as_such(tmp_path):
    with recorder(tmp_path).record('sub1', 'sub1', ENDPOINT, 'global', {'require_tls': False}):
        pass
    path = the_file(tmp_path)
    # A complete line after the noted end, sealed without the key.
    forged = _plain_sha256_journal(_record(host='sub2', on_behalf_of='sub0002')).splitlines(True)[1]
    with open(path, 'a', encoding='ascii') as handle:
        handle.write(forged)
    with pytest.raises(snapshot.SnapshotError) as refused:
        with recorder(tmp_path).record('sub3', 'sub3', ENDPOINT, 'global', {'version': '1.1'}):
            raise AssertionError('the write must not start')
    message = str(refused.value)
    assert 'has %d byte(s) after the end this run last noted' % len(forged) in message
    assert 'a worker of this run stopped while writing them' in message and 'could not be verified' in message
    assert 'changed by someone else' not in message
    assert path.read_text().endswith(forged), 'nothing is cut or adopted'


def test_lines_before_the_noted_end_changed_and_a_valid_tail_is_still_someone_else(tmp_path):
    with recorder(tmp_path).record('sub1', 'sub1', ENDPOINT, 'global', {'require_tls': False}):
        pass
    _dead_worker(tmp_path)
    path = the_file(tmp_path)
    path.write_text(path.read_text().replace('"host":"sub1"', '"host":"subX"', 1))
    with pytest.raises(snapshot.SnapshotError, match='changed by someone else'):
        with recorder(tmp_path).record('sub3', 'sub3', ENDPOINT, 'global', {'version': '1.1'}):
            raise AssertionError('the write must not start')


# -- what the rollout restores from --------------------------------------------------------------------------------------

def test_the_run_restores_from_what_it_recorded_and_refuses_a_swapped_file(tmp_path):
    rec = recorder(tmp_path)
    with rec.record('sub1', 'sub1', ENDPOINT, 'global', {'require_tls': False}):
        pass
    path = the_file(tmp_path)
    assert rec.recorded() == (str(path), snapshot.load(str(path), KEY))
    # An older journal of the same key, sound and sealed, put in its place during the watch.
    older_run = tmp_path / 'older-run'
    older_run.mkdir()
    with snapshot.Recorder(str(older_run), str(tmp_path / 'older'), KEY).record('sub1', 'sub0002', ENDPOINT, 'global',
                                                                                {'require_tls': True}):
        pass
    [older] = (tmp_path / 'older').glob('*.jsonl')
    os.replace(older, path)
    assert snapshot.load(str(path), KEY)['subusers']['sub1']['on_behalf_of'] == 'sub0002'  # sound on its own
    with pytest.raises(snapshot.SnapshotError, match='was changed by someone else during the run: it is not restored from'):
        rec.recorded()
    with pytest.raises(snapshot.SnapshotError, match='this run recorded no snapshot in .* with this API key'):
        snapshot.Recorder(str(tmp_path / 'run'), str(tmp_path / 'snaps'), 'another-key').recorded()
