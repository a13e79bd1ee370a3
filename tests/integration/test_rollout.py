# -*- coding: utf-8 -*-
"""Roll out safely, for real (ansible-playbook against the simulator): the snapshot of every write, the restore playbook,
the staged rollout that watches SendGrid's TLS blocks and restores a batch that blocks mail, and tls_blocks_info."""

from __future__ import annotations

import json
import os
import re
import stat
import time

import pytest
import yaml

from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._snapshot import load
from tests.conftest import API_KEY
from tests.contract.openapi_check import validate_logged_requests
from tests.simulator.sendgrid_sim import BLOCKS_PATH, DEFAULT_SETTINGS, TLS_BLOCK_REASON, Simulator

SETTINGS = '/v3/user/settings/enforced_tls'
KEY_ENV = dict(SENDGRID_API_KEY=API_KEY)
POLICY = dict(enforced_tls_policy_require_tls=True, enforced_tls_policy_version='1.2')
FAST = ['-e', 'rollout_watch_seconds=0']


def inventory(tmp_path, sim, hosts, **variables):
    data = {'all': {'children': {'sendgrid_subusers': {
        'hosts': {h: None for h in hosts},
        'vars': dict(ansible_connection='local', enforced_tls_policy_api_url=sim.url, **variables)}}}}
    path = tmp_path / 'inventory.yml'
    path.write_text(yaml.safe_dump(data))
    return path


def patched(sim):
    return sorted(r['on_behalf_of'] for r in sim.requests if r['method'] == 'PATCH')


def effective(settings):
    """A stored state as the API means it: a missing field is its documented default."""
    return dict(DEFAULT_SETTINGS, **settings)


def snapshots(tmp_path):
    return sorted((tmp_path / 'enforced_tls_snapshots').glob('enforced-tls-*.jsonl'))


def load_snapshot(path):
    return load(path, API_KEY)


def recap(run):
    return {line.split()[0]: dict(item.split('=') for item in line.split(':', 1)[1].split())
            for line in run.stdout.splitlines() if ' : ok=' in line}


# -- snapshot and restore ----------------------------------------------------------------------------------------------

def test_enforce_snapshot_then_restore_check_apply_and_again(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(12, drift_mixed=True)
    before = {name: effective(sim.settings(name)) for name in names}
    expected = {}
    for name, state in before.items():
        changes = {field: state[field] for field, value in (('require_tls', True), ('version', 1.2)) if state[field] != value}
        if changes:
            expected[name] = {field: str(value) if field == 'version' else value for field, value in changes.items()}
    assert 0 < len(expected) < len(names)
    inv = inventory(tmp_path, sim, names, **POLICY)

    check = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inv, check=True, env=KEY_ENV)
    assert check.rc == 0 and snapshots(tmp_path) == [], 'check mode writes no snapshot'

    apply = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inv, env=dict(KEY_ENV, ANSIBLE_SHOW_CUSTOM_STATS='1'))
    assert apply.rc == 0, apply.output
    [path] = snapshots(tmp_path)
    document = load_snapshot(str(path))
    # Exactly the changed subusers, exactly the fields written, as they were before.
    assert {host: entry['previous'] for host, entry in document['subusers'].items()} == expected
    assert all(entry['endpoint'] == sim.url and entry['region'] == 'global' and entry['on_behalf_of'] == host
               and re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', entry['recorded']) and 'pending' not in entry
               for host, entry in document['subusers'].items())
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert API_KEY not in path.read_text() and API_KEY not in apply.output
    # Published for AWX: the path and how many subusers the snapshot holds.
    stats = apply.stdout.split('CUSTOM STATS:', 1)[1]
    assert str(path) in stats and '"enforced_tls_snapshot_subusers": %d' % len(expected) in stats

    sim.clear_log()
    preview = run_playbook(playbook_name='mailsec.sendgrid.restore', inventory=inv, args=['-e', 'snapshot=%s' % path],
                           check=True, diff=True, env=KEY_ENV)
    assert preview.rc == 0, preview.output
    assert sim.count('PATCH') == 0
    assert sorted(h for h, fields in recap(preview).items() if fields['changed'] == '1') == sorted(expected)
    assert '-    "require_tls": true,' in preview.stdout or '-    "version": "1.2"' in preview.stdout

    restore = run_playbook(playbook_name='mailsec.sendgrid.restore', inventory=inv, args=['-e', 'snapshot=%s' % path], env=KEY_ENV)
    assert restore.rc == 0, restore.output
    assert patched(sim) == sorted(expected)
    for name in names:
        assert effective(sim.settings(name)) == before[name], name
    validate_logged_requests(sim.requests)
    assert snapshots(tmp_path) == [path], 'a restore writes no snapshot of its own'

    sim.clear_log()
    again = run_playbook(playbook_name='mailsec.sendgrid.restore', inventory=inv, args=['-e', 'snapshot=%s' % path], env=KEY_ENV)
    assert again.rc == 0 and sim.count('PATCH') == 0
    assert all(fields['changed'] == '0' for fields in recap(again).values())


def test_restore_limit_restores_only_the_named_subuser(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(4)
    inv = inventory(tmp_path, sim, names, **POLICY)
    assert run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inv, env=KEY_ENV).rc == 0
    [path] = snapshots(tmp_path)
    sim.clear_log()
    run = run_playbook(playbook_name='mailsec.sendgrid.restore', inventory=inv, args=['-e', 'snapshot=%s' % path, '--limit', 'sub0003'],
                       env=KEY_ENV)
    assert run.rc == 0, run.output
    assert patched(sim) == ['sub0003']
    assert effective(sim.settings('sub0003')) == DEFAULT_SETTINGS
    assert all(sim.settings(n) == dict(require_tls=True, require_valid_cert=False, version=1.2) for n in names if n != 'sub0003')
    assert 'left out by --limit' in run.stdout


def test_batch_mode_writes_the_same_snapshot(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(6)
    inv = inventory(tmp_path, sim, names, enforced_tls_policy_require_tls=True)
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inv, env=KEY_ENV, args=['-e', 'enforced_tls_policy_batch=true'])
    assert run.rc == 0 and 'Enforced TLS batch of 6 subusers' in run.stdout, run.output
    [path] = snapshots(tmp_path)
    assert load_snapshot(str(path))['subusers'] == {
        name: dict(load_snapshot(str(path))['subusers'][name], previous={'require_tls': False}) for name in names}


def test_a_failed_write_leaves_no_entry(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(3)
    sim.inject(500, count=100, method='PATCH', account='sub0002')
    inv = inventory(tmp_path, sim, names, **POLICY)
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inv, env=KEY_ENV)
    assert run.rc == 2 and recap(run)['sub0002']['failed'] == '1'
    [path] = snapshots(tmp_path)
    assert sorted(load_snapshot(str(path))['subusers']) == ['sub0001', 'sub0003']


def test_snapshot_dir_from_a_variable(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(2)
    inv = inventory(tmp_path, sim, names, enforced_tls_policy_snapshot_dir='records/tls', **POLICY)
    assert run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inv, env=KEY_ENV).rc == 0
    assert len(list((tmp_path / 'records' / 'tls').glob('enforced-tls-*.jsonl'))) == 1 and snapshots(tmp_path) == []


def _snapshot_of_one_write(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(3)
    inv = inventory(tmp_path, sim, names, **POLICY)
    assert run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inv, env=KEY_ENV).rc == 0
    [path] = snapshots(tmp_path)
    sim.clear_log()
    return inv, path


@pytest.mark.parametrize('damage, message', [
    (lambda text: text.replace('"require_tls":false', '"require_tls":true', 1), 'its checksum does not match its content'),
    (lambda text: text[:len(text) // 2], 'is not valid JSON'),
    (lambda text: json.dumps({'totals': {'subusers': 3}}), 'is not a mailsec.sendgrid Enforced TLS snapshot'),
])
def test_tampered_truncated_or_foreign_snapshot_is_refused_before_any_request(sim, run_playbook, tmp_path, damage, message):
    inv, path = _snapshot_of_one_write(sim, run_playbook, tmp_path)
    original = path.read_text()
    damaged = damage(original)
    assert damaged != original  # the damage really happened
    path.write_text(damaged)
    run = run_playbook(playbook_name='mailsec.sendgrid.restore', inventory=inv, args=['-e', 'snapshot=%s' % path], env=KEY_ENV)
    assert run.rc == 2
    assert message in run.stdout and str(path) in run.stdout
    assert sim.count() == 0
    assert 'Traceback' not in run.output


def test_restore_refusals_name_the_problem(sim, run_playbook, tmp_path):
    inv, path = _snapshot_of_one_write(sim, run_playbook, tmp_path)
    missing = run_playbook(playbook_name='mailsec.sendgrid.restore', inventory=inv, env=KEY_ENV)
    assert missing.rc == 2 and 'snapshot is required with mode check_snapshot' in missing.stdout
    # A subuser the play cannot reach would silently keep its settings.
    smaller = inventory(tmp_path, sim, ['sub0001', 'sub0002'], **POLICY)
    unreachable = run_playbook(playbook_name='mailsec.sendgrid.restore', inventory=smaller, args=['-e', 'snapshot=%s' % path],
                               env=KEY_ENV)
    assert unreachable.rc == 2 and 'names 1 subuser(s) that are not hosts of this play, so they could not be restored: sub0003' \
        in unreachable.stdout
    assert sim.count() == 0
    # The key goes where the host's variables say, not where the file says.
    with Simulator(api_keys=(API_KEY,), subusers=3) as other:
        moved = inventory(tmp_path, other, ['sub0001', 'sub0002', 'sub0003'])
        run = run_playbook(playbook_name='mailsec.sendgrid.restore', inventory=moved, args=['-e', 'snapshot=%s' % path],
                           env=KEY_ENV)
        assert run.rc == 2 and 'was written on %s' % sim.url in run.stdout and 'its variables address %s' % other.url in run.stdout
        assert other.count('PATCH') == 0 and sim.count() == 0


# -- rollout -----------------------------------------------------------------------------------------------------------

@pytest.fixture
def thirty(sim, tmp_path):
    names = sim.populate_subusers(30)
    return names, inventory(tmp_path, sim, names, **POLICY)


def test_rollout_restores_the_batch_that_blocks_mail_and_stops(sim, run_playbook, thirty, tmp_path):
    names, inv = thirty
    sim.block_tls_when_required('sub0005', domains=['legacy.example'], per_domain=2)
    run = run_playbook(playbook_name='mailsec.sendgrid.rollout', inventory=inv, env=KEY_ENV,
                       args=FAST + ['-e', '{"rollout_batches": [1, 5, "100%"]}'])
    assert run.rc != 0, run.output
    # Batch 1 (sub0001) passed and keeps the policy; batch 2 (sub0002-sub0006) was written, then restored.
    assert effective(sim.settings('sub0001')) == dict(DEFAULT_SETTINGS, require_tls=True, version=1.2)
    for name in names[1:6]:
        assert effective(sim.settings(name)) == DEFAULT_SETTINGS, name
    assert patched(sim) == ['sub0001'] + sorted(names[1:6] * 2)
    # No subuser of a later batch received a PATCH (nor any request).
    assert not {r['on_behalf_of'] for r in sim.requests} & set(names[6:])
    message = ' '.join(run.stdout.split())
    assert 'fatal: [sub0005]' in run.stdout
    assert 'sub0005 blocked mail to legacy.example (2)' in message and 'no later batch was started' in message
    blocks_reads = [r for r in sim.requests if r['path'] == BLOCKS_PATH]
    assert sorted(r['on_behalf_of'] for r in blocks_reads) == ['sub0001'] + names[1:6]
    validate_logged_requests(sim.requests)


def test_rollout_with_default_batches_without_blocks_converges_and_reruns_clean(sim, run_playbook, thirty):
    names, inv = thirty
    sim.block_tls_when_required('sub0005', domains=['legacy.example'])
    sim.set_settings('sub0005', dict(DEFAULT_SETTINGS, require_tls=True))  # requires TLS already: not changed, no new block
    run = run_playbook(playbook_name='mailsec.sendgrid.rollout', inventory=inv, env=KEY_ENV, args=FAST)
    assert run.rc == 0, run.output
    for name in names:
        assert effective(sim.settings(name)) == dict(DEFAULT_SETTINGS, require_tls=True, version=1.2), name
    assert sim.blocks('sub0005') == []
    sim.clear_log()
    again = run_playbook(playbook_name='mailsec.sendgrid.rollout', inventory=inv, env=KEY_ENV, args=FAST)
    assert again.rc == 0 and sim.count('PATCH') == 0 and sim.count('GET', BLOCKS_PATH) == 0
    assert all(fields['changed'] == '0' for fields in recap(again).values())


def test_rollout_check_mode_writes_nothing_and_waits_for_nothing(sim, run_playbook, thirty, tmp_path):
    names, inv = thirty
    sim.block_tls_when_required('sub0005', domains=['legacy.example'])
    start = time.monotonic()
    run = run_playbook(playbook_name='mailsec.sendgrid.rollout', inventory=inv, env=KEY_ENV, check=True,
                       args=['-e', 'rollout_watch_seconds=600'])
    assert run.rc == 0, run.output
    assert time.monotonic() - start < 120
    assert sim.count('PATCH') == 0 and sim.count('GET', BLOCKS_PATH) == 0 and snapshots(tmp_path) == []
    assert sum(fields['changed'] == '1' for fields in recap(run).values()) == 30


def test_rollout_watches_for_the_given_time(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(2)
    inv = inventory(tmp_path, sim, names, **POLICY)
    start = time.monotonic()
    run = run_playbook(playbook_name='mailsec.sendgrid.rollout', inventory=inv, env=KEY_ENV,
                       args=['-e', 'rollout_watch_seconds=3', '-e', '{"rollout_batches": ["100%"]}'])
    assert run.rc == 0, run.output
    assert time.monotonic() - start >= 3 and 'Pausing for 3 seconds' in run.stdout


@pytest.mark.parametrize('extra, message', [
    ('rollout_watch_seconds=soon', 'rollout_watch_seconds (got soon)'),
    ('rollout_max_tls_blocks=-1', 'rollout_max_tls_blocks (got -1)'),
    ('enforced_tls_policy_batch=true', 'enforced_tls_policy_batch must be false'),
])
def test_rollout_bad_variables_fail_before_any_request(sim, run_playbook, tmp_path, extra, message):
    inv = inventory(tmp_path, sim, sim.populate_subusers(2), **POLICY)
    run = run_playbook(playbook_name='mailsec.sendgrid.rollout', inventory=inv, env=KEY_ENV, args=['-e', extra])
    assert run.rc == 2 and message in ' '.join(run.stdout.split())
    assert sim.count() == 0


def test_rollout_allows_up_to_max_tls_blocks(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(3)
    sim.block_tls_when_required('sub0002', domains=['legacy.example'], per_domain=2)
    inv = inventory(tmp_path, sim, names, **POLICY)
    run = run_playbook(playbook_name='mailsec.sendgrid.rollout', inventory=inv, env=KEY_ENV,
                       args=FAST + ['-e', 'rollout_max_tls_blocks=2'])
    assert run.rc == 0, run.output
    assert all(sim.settings(n)['require_tls'] for n in names)


# -- tls_blocks_info ---------------------------------------------------------------------------------------------------

def test_tls_blocks_info_pages_window_and_subuser(sim, run_playbook):
    sim.populate_subusers(2)
    now = int(time.time())
    tls = [dict(email='user%d@%s' % (n, 'Legacy.example' if n % 3 else 'old.example'), reason=TLS_BLOCK_REASON,
                created=now - 10 - n % 7) for n in range(1200)]
    other = [dict(email='x%d@fine.example' % n, reason='unable to resolve MX record for fine.example: servfail',
                  created=now - 20) for n in range(40)]
    early = [dict(email='early%d@legacy.example' % n, reason=TLS_BLOCK_REASON, created=now - 100000) for n in range(5)]
    sim.add_blocks('sub0001', tls + other + early)
    sim.add_blocks('sub0002', [dict(email='b@elsewhere.example', reason='certificate has expired', created=now)])
    connection = dict(api_key=API_KEY, api_url=sim.url)
    run = run_playbook(tasks=[
        dict(name='Window', register='window', **{'mailsec.sendgrid.tls_blocks_info': dict(
            connection, on_behalf_of='sub0001', start_time=now - 3600, end_time=now)}),
        dict(name='Other subuser', register='other', **{'mailsec.sendgrid.tls_blocks_info': dict(connection, on_behalf_of='sub0002')}),
    ], save=['window', 'other'], check=True)
    assert run.rc == 0, run.output
    window = run.results['window']
    assert window['changed'] is False and window['blocks_read'] == 1240 and window['tls_blocks'] == 1200
    assert window['domains'] == {'legacy.example': 800, 'old.example': 400}
    assert {b['reason'] for b in window['blocks']} == {TLS_BLOCK_REASON}
    assert set(window['blocks'][0]) == {'created', 'email', 'reason', 'status', 'domain'}
    assert run.results['other']['domains'] == {'elsewhere.example': 1}
    reads = [r for r in sim.requests if r['path'] == BLOCKS_PATH]
    assert [(r['on_behalf_of'], r['query']['offset'], r['query']['limit']) for r in reads] == [
        ('sub0001', '0', '500'), ('sub0001', '500', '500'), ('sub0001', '1000', '500'), ('sub0002', '0', '500')]
    assert reads[0]['query']['start_time'] == str(now - 3600) and reads[0]['query']['end_time'] == str(now)
    validate_logged_requests(sim.requests)


def test_an_entry_left_pending_by_a_crash_is_restored_with_a_warning(sim, run_playbook, tmp_path):
    from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._snapshot import seal_line
    inv, path = _snapshot_of_one_write(sim, run_playbook, tmp_path)
    # A crash between the record and the PATCH: the journal has no "done" for sub0002 (the chain sealed again).
    events = [json.loads(line) for line in path.read_text().splitlines()]
    kept = [e for e in events if not (e.get('host') == 'sub0002' and e.get('event') == 'done')]
    assert len(kept) == len(events) - 1
    text, seal = '', ''
    for event in kept:
        event.pop('seal')
        line, seal = seal_line(event, API_KEY, seal)
        text += line
    path.write_text(text)
    run = run_playbook(playbook_name='mailsec.sendgrid.restore', inventory=inv, args=['-e', 'snapshot=%s' % path], env=KEY_ENV)
    assert run.rc == 0, run.output
    assert 'stopped while writing sub0002' in ' '.join(run.output.split())
    assert patched(sim) == ['sub0001', 'sub0002', 'sub0003']


def test_tls_blocks_info_takes_the_api_group_defaults(sim, run_playbook):
    sim.populate_subusers(1)
    sim.add_blocks('sub0001', [dict(email='a@legacy.example', reason=TLS_BLOCK_REASON)])
    playbook = [dict(name='Group defaults', hosts='localhost', gather_facts=False,
                     module_defaults={'group/mailsec.sendgrid.api': dict(api_key=API_KEY, api_url=sim.url)},
                     tasks=[dict(name='Read', register='read', **{'mailsec.sendgrid.tls_blocks_info': dict(on_behalf_of='sub0001')}),
                            {'name': 'Check', 'ansible.builtin.assert': dict(that=["read.domains == {'legacy.example': 1}"])}])]
    run = run_playbook(playbook=playbook)
    assert run.rc == 0, run.output


def test_rollout_runs_per_subuser_even_where_the_inventory_asks_for_batch_mode(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(3)
    sim.block_tls_when_required('sub0003', domains=['legacy.example'])
    inv = inventory(tmp_path, sim, names, enforced_tls_policy_batch=True, **POLICY)
    run = run_playbook(playbook_name='mailsec.sendgrid.rollout', inventory=inv, env=KEY_ENV, args=FAST)
    assert run.rc != 0 and 'sub0003 blocked mail to legacy.example (1)' in ' '.join(run.stdout.split())
    assert sim.settings('sub0001')['require_tls'] is True and sim.settings('sub0003')['require_tls'] is False
