# -*- coding: utf-8 -*-
"""Restore as an attacker would use it (real ansible-playbook runs against the simulator): a journal re-sealed to name
another account or the parent, a file swapped during the rollout's watch window, a key rotated since the journal was
written, a snapshot folder anyone may write. Each is refused before any request to the account it would have written."""

from __future__ import annotations

import json
import os
import threading
import time

from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._snapshot import Recorder, SealKey, load, seal_line
from tests.conftest import API_KEY
from tests.integration.test_rollout import KEY_ENV, POLICY, effective, inventory, patched, recap, snapshots
from tests.simulator.sendgrid_sim import DEFAULT_SETTINGS, Simulator


def enforced(sim, run_playbook, tmp_path, count=3):
    """A real run's journal over ``count`` subusers (each changed), and the inventory it was taken with."""
    names = sim.populate_subusers(count)
    inv = inventory(tmp_path, sim, names, **POLICY)
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inv, env=KEY_ENV)
    assert run.rc == 0, run.output
    [path] = snapshots(tmp_path)
    sim.clear_log()
    return inv, path


def resealed(path, change):
    """The journal at ``path`` with ``change(event)`` applied to every event, sealed again under the API key: what only a
    holder of the key can write (or an operator editing by hand with the collection's own code)."""
    text, seal = '', ''
    for line in path.read_text().splitlines():
        event = json.loads(line)
        event.pop('seal')
        change(event)
        line, seal = seal_line(event, API_KEY, seal)
        text += line
    path.write_text(text)


def restore(run_playbook, inv, path, *args, env=None):
    return run_playbook(playbook_name='mailsec.sendgrid.restore', inventory=inv, args=['-e', 'snapshot=%s' % path] + list(args),
                        env=env or KEY_ENV)


def flat(run):
    return ' '.join(run.output.split())


def test_a_journal_resealed_to_name_another_account_writes_nothing(sim, run_playbook, tmp_path):
    inv, path = enforced(sim, run_playbook, tmp_path)
    written = {name: sim.settings(name) for name in ('sub0001', 'sub0002', 'sub0003')}

    def to_sub0002(event):
        if event.get('host') == 'sub0001' and event.get('event') == 'record':
            event.update(on_behalf_of='sub0002', previous={'require_tls': False, 'version': '1.1'})
    resealed(path, to_sub0002)
    assert load(str(path), API_KEY)['subusers']['sub0001']['on_behalf_of'] == 'sub0002'  # sound as a file

    run = restore(run_playbook, inv, path, '--limit', 'sub0001')
    assert run.rc == 2, run.output
    assert sim.count('PATCH') == 0 and not [r for r in sim.requests if r['on_behalf_of'] == 'sub0002']
    assert "sub0001: the snapshot %s records its settings for account 'sub0002', but the host's variables address account " \
        "'sub0001'" % path in flat(run)
    assert 'A restore writes only the account of the host it runs for. Nothing was sent to SendGrid' in flat(run)
    assert {name: sim.settings(name) for name in written} == written


def test_a_journal_resealed_to_name_the_parent_account_writes_nothing(sim, run_playbook, tmp_path):
    inv, path = enforced(sim, run_playbook, tmp_path)
    parent = sim.settings()

    def to_parent(event):
        if event.get('host') == 'sub0002' and event.get('event') == 'record':
            event['on_behalf_of'] = None
    resealed(path, to_parent)
    run = restore(run_playbook, inv, path)
    assert run.rc == 2 and recap(run)['sub0002']['failed'] == '1', run.output
    assert "sub0002: the snapshot %s records its settings for the parent account, but the host's variables address " \
        "account 'sub0002'" % path in flat(run)
    # The parent was never written (nor addressed by a PATCH); the other subusers were restored as usual.
    assert sim.settings() == parent and not [r for r in sim.requests if r['method'] == 'PATCH' and r['on_behalf_of'] is None]
    assert patched(sim) == ['sub0001', 'sub0003']
    assert effective(sim.settings('sub0002')) == dict(DEFAULT_SETTINGS, require_tls=True, version=1.2)


def test_a_journal_forged_with_a_plain_sha256_chain_is_refused_before_any_request(sim, run_playbook, tmp_path):
    import hashlib
    inv, path = enforced(sim, run_playbook, tmp_path)
    # What anyone able to write the file could produce before this version: the account chosen, a SHA-256 chain.
    text, seal = '', ''
    for line in path.read_text().splitlines():
        event = json.loads(line)
        event.pop('seal')
        event.pop('key_id', None)
        if 'format' in event:
            event['version'] = 1
        if event.get('host') == 'sub0001' and event.get('event') == 'record':
            event['on_behalf_of'] = 'sub0002'
        canonical = json.dumps(event, sort_keys=True, separators=(',', ':'), ensure_ascii=True)
        seal = 'sha256:' + hashlib.sha256((seal + canonical).encode('ascii')).hexdigest()
        text += '%s,"seal":"%s"}\n' % (canonical[:-1], seal)
    path.write_text(text)
    run = restore(run_playbook, inv, path, '--limit', 'sub0001')
    assert run.rc == 2 and sim.count() == 0, run.output
    assert 'its format version is 1, whose plain SHA-256 checksum anyone able to write the file can recompute' in flat(run)


def test_a_journal_of_a_rotated_key_is_refused_saying_what_to_do(run_playbook, tmp_path):
    new_key = 'test-key-rotated-2b7d-never-print-me'
    with Simulator(api_keys=(API_KEY, new_key)) as sim:
        inv, path = enforced(sim, run_playbook, tmp_path)
        run = restore(run_playbook, inv, path, env=dict(SENDGRID_API_KEY=new_key))
        assert run.rc == 2 and sim.count() == 0, run.output
        message = flat(run)
        assert 'it was sealed under another API key (key id %s; the API key of this restore has key id %s)' % (
            SealKey(API_KEY).id, SealKey(new_key).id) in message
        assert 'Restore with the key that wrote it' in message and 'If that key has been revoked' in message
        assert API_KEY not in run.output and new_key not in run.output
        # With the key that wrote it, the same file restores.
        assert restore(run_playbook, inv, path).rc == 0 and patched(sim) == ['sub0001', 'sub0002', 'sub0003']


def test_a_snapshot_folder_anyone_may_write_is_refused_before_any_write(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(2)
    (tmp_path / 'enforced_tls_snapshots').mkdir()
    os.chmod(tmp_path / 'enforced_tls_snapshots', 0o777)
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory(tmp_path, sim, names, **POLICY), env=KEY_ENV)
    assert run.rc == 2 and sim.count('PATCH') == 0, run.output
    assert all(recap(run)[name]['failed'] == '1' for name in names)
    assert 'the snapshot folder %s is writable by others (mode 0777)' % (tmp_path / 'enforced_tls_snapshots') in flat(run)
    assert snapshots(tmp_path) == []


def test_a_snapshot_in_a_folder_anyone_may_write_is_refused_when_restoring(sim, run_playbook, tmp_path):
    inv, path = enforced(sim, run_playbook, tmp_path)
    os.chmod(path.parent, 0o777)
    run = restore(run_playbook, inv, path)
    assert run.rc == 2 and sim.count() == 0, run.output
    assert 'the folder of snapshot %s is writable by others (mode 0777)' % path.parent in flat(run)
    # Every subuser the refusal stops fails under its own name (recap, retry file, AWX), not only the play's first.
    assert {name: row['failed'] for name, row in recap(run).items() if name != 'localhost'} == dict.fromkeys(
        ('sub0001', 'sub0002', 'sub0003'), '1')


def test_the_rollout_refuses_a_file_swapped_during_the_watch_and_reports_it(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(10)
    sim.block_tls_when_required('sub0005', domains=['legacy.example'], per_domain=2)
    inv = inventory(tmp_path, sim, names, **POLICY)
    # A sound journal of the same key from another run, whose restore would keep the batch requiring TLS (and write 1.1).
    older_run = tmp_path / 'older-run'
    older_run.mkdir()
    older = Recorder(str(older_run), str(tmp_path / 'older'), API_KEY)
    for name in names[1:6]:
        with older.record(name, name, sim.url, 'global', {'require_tls': True, 'version': '1.1'}):
            pass
    [older_file] = (tmp_path / 'older').glob('*.jsonl')
    swapped = []

    def swap_when_the_batch_is_written():
        # Batch 2 is sub0002-sub0006: once each has its "done", the run writes nothing more before its watch ends.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not swapped:
            for path in snapshots(tmp_path):
                text = path.read_text()
                if all('"event":"done","fields":["require_tls","version"],"host":"%s"' % name in text for name in names[1:6]):
                    os.replace(older_file, path)
                    swapped.append(time.monotonic())
            time.sleep(0.05)

    thief = threading.Thread(target=swap_when_the_batch_is_written, daemon=True)
    thief.start()
    run = run_playbook(playbook_name='mailsec.sendgrid.rollout', inventory=inv, env=KEY_ENV,
                       args=['-e', 'rollout_watch_seconds=6', '-e', '{"rollout_batches": [1, 5, "100%"]}'])
    thief.join(5)
    assert swapped, 'the file was swapped during the watch window'
    assert run.rc != 0, run.output
    message = flat(run)
    assert 'was changed by someone else during the run: it is not restored from' in message
    assert 'sub0005: restore failed' in message and ': restored' not in message
    # Written once by the batch, never "restored" from the swapped file.
    assert patched(sim) == ['sub0001'] + names[1:6]
    for name in names[1:6]:
        assert effective(sim.settings(name)) == dict(DEFAULT_SETTINGS, require_tls=True, version=1.2), name
    assert not {r['on_behalf_of'] for r in sim.requests} & set(names[6:])
