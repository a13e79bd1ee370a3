# -*- coding: utf-8 -*-
"""The snapshot file: recorded before a write, taken out again when the write fails, shared by worker processes, and
refused when it is malformed, truncated, edited or foreign."""

from __future__ import annotations

import multiprocessing
import os
import stat

import pytest

from ansible_collections.mailsec.sendgrid.plugins.module_utils import snapshot
from ansible_collections.mailsec.sendgrid.plugins.module_utils.api import SendGridError

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


def _journal(*events, **header):
    """A journal's text: the header (with ``header`` over its fields), then ``events``, each sealed on the one before."""
    text, seal = '', ''
    for body in [dict(dict(format=snapshot.FORMAT, version=snapshot.VERSION, created='2025-01-01T00:00:00Z',
                            key_id=snapshot.SealKey(KEY).id), **header)] + list(events):
        line, seal = snapshot.seal_line(body, KEY, seal)
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
