# -*- coding: utf-8 -*-
"""The role inside Ansible's host model, tried the way users write plays (issue: "The role inside Ansible's host model").

Every test runs real ansible-playbook (or ansible-runner) against the simulator and reads the simulator's request log
per subuser: who got a GET, who got a PATCH, and the state each subuser ends in.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from tests.conftest import API_KEY, ansible_env

SETTINGS = '/v3/user/settings/enforced_tls'
KEY_ENV = dict(SENDGRID_API_KEY=API_KEY)


def static_inventory(tmp_path, sim, hosts, groups=None, extra_hosts=None, **variables):
    """A static YAML inventory: `hosts` in sendgrid_subusers (and sub-groups), the simulator's URL as a group var."""
    children = {name: {'hosts': {h: None for h in members}} for name, members in (groups or {}).items()}
    data = {'all': {'children': {'sendgrid_subusers': {
        'hosts': {h: None for h in hosts},
        'vars': dict(dict(ansible_connection='local', enforced_tls_policy_api_url=sim.url), **variables),
        'children': children}}}}
    if extra_hosts:
        data['all']['hosts'] = {h: dict(ansible_connection='local') for h in extra_hosts}
    path = tmp_path / 'inventory.yml'
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def fleet_inventory(sim, tmp_path):
    """An inventory directory with the subusers plugin (as README shows it) and the policy in group_vars."""
    def make(count):
        sim.populate_subusers(count)
        inventory = tmp_path / 'inventory'
        (inventory / 'group_vars').mkdir(parents=True)
        (inventory / 'prod.sendgrid.yml').write_text(yaml.safe_dump(dict(plugin='mailsec.sendgrid.subusers', api_url=sim.url)))
        (inventory / 'group_vars' / 'sendgrid_subusers.yml').write_text(yaml.safe_dump(dict(
            enforced_tls_policy_require_tls=True, enforced_tls_policy_api_url=sim.url)))
        return inventory
    return make


def per_account(sim, method, path=SETTINGS):
    return sorted(r['on_behalf_of'] or '(parent)' for r in sim.requests if r['method'] == method and r['path'] == path)


def parent_reads(sim):
    return [r for r in sim.requests if r['path'] == SETTINGS and r['on_behalf_of'] is None]


def recap_lines(run):
    return {line.split()[0]: line.split(':', 1)[1].split() for line in run.stdout.splitlines()
            if ' : ok=' in line and line.split()[0] != 'localhost'}


def play(tasks=None, roles=None, hosts='sendgrid_subusers', **keywords):
    entry = dict(name='User play', hosts=hosts, gather_facts=False, **keywords)
    if tasks is not None:
        entry['tasks'] = tasks
    if roles is not None:
        entry['roles'] = roles
    return [entry]


ROLE = 'mailsec.sendgrid.enforced_tls_policy'


def include(version, when, batch=False, kind='include_role'):
    """The role included or imported under `when`; with `batch`, its batch entry point (tasks_from: batch)."""
    return {'name': 'Policy %s' % version, 'ansible.builtin.%s' % kind: dict(name=ROLE, **(dict(tasks_from='batch') if batch else {})),
            'vars': dict(enforced_tls_policy_version=version), 'when': when}


BATCH = {'name': 'Batch mode', 'ansible.builtin.import_role': dict(name=ROLE, tasks_from='batch')}


# -- 1. writes only inside its scope ------------------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['include_role', 'import_role'])
def test_include_with_when_acts_on_its_own_hosts_only(sim, run_playbook, tmp_path, kind):
    names = sim.populate_subusers(4)
    inventory = static_inventory(tmp_path, sim, names, groups=dict(eu_customers=names[:2], us_customers=names[2:]))
    playbook = play(tasks=[include('1.3', "'eu_customers' in group_names", kind=kind),
                           include('1.1', "'us_customers' in group_names", kind=kind)])
    run = run_playbook(playbook=playbook, inventory=inventory, env=KEY_ENV)
    assert run.rc == 0, run.output
    # The US subusers are on SendGrid's default 1.1 already: only the EU ones are written, once each.
    assert per_account(sim, 'PATCH') == names[:2]
    assert per_account(sim, 'GET') == sorted(['(parent)'] + names)
    assert [sim.settings(n)['version'] for n in names] == [1.3, 1.3, 1.1, 1.1]

    sim.clear_log()
    again = run_playbook(playbook=playbook, inventory=inventory, env=KEY_ENV)
    assert again.rc == 0 and per_account(sim, 'PATCH') == []
    assert all(fields[1] == 'changed=0' for fields in recap_lines(again).values()), again.stdout


def test_roles_entry_and_block_with_when(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(4)
    inventory = static_inventory(tmp_path, sim, names)
    playbook = (play(roles=[dict(role=ROLE, enforced_tls_policy_require_tls=True, when="inventory_hostname == 'sub0001'")])
                + play(tasks=[dict(name='Block', when="inventory_hostname == 'sub0002'", block=[
                    {'ansible.builtin.import_role': dict(name=ROLE), 'vars': dict(enforced_tls_policy_require_valid_cert=True)}])]))
    run = run_playbook(playbook=playbook, inventory=inventory, env=KEY_ENV)
    assert run.rc == 0, run.output
    assert per_account(sim, 'PATCH') == ['sub0001', 'sub0002']
    assert per_account(sim, 'GET') == ['(parent)', 'sub0001', 'sub0002']
    assert sim.settings('sub0001')['require_tls'] is True and sim.settings('sub0002')['require_valid_cert'] is True
    assert sim.settings('sub0003') == sim.settings('sub0004') == {'require_tls': False, 'require_valid_cert': False, 'version': 1.1}


def test_hosts_all_play_never_sends_a_skipped_host(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(2)
    inventory = static_inventory(tmp_path, sim, names, extra_hosts=['web1'], enforced_tls_policy_require_tls=True)
    playbook = play(hosts='all', tasks=[include('1.2', "'sendgrid_subusers' in group_names")])
    run = run_playbook(playbook=playbook, inventory=inventory, env=KEY_ENV)
    assert run.rc == 0, run.output
    assert 'web1' not in {r['on_behalf_of'] for r in sim.requests}
    assert per_account(sim, 'PATCH') == names
    assert recap_lines(run)['web1'][4] == 'skipped=1'


# -- 2. status on the right host ----------------------------------------------------------------------------------------

FIVE = ['sub0000', 'sub0001', 'ghost-user', 'sub0002', 'sub0004']


def _five(sim, tmp_path):
    for name in FIVE:
        if name != 'ghost-user':
            sim.add_subuser(name)
    return static_inventory(tmp_path, sim, FIVE, enforced_tls_policy_version='1.2')


def test_recap_and_retry_file_name_each_subuser(sim, run_playbook, tmp_path):
    inventory = _five(sim, tmp_path)
    retry_dir = tmp_path / 'retry'
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory,
                       env=dict(KEY_ENV, ANSIBLE_RETRY_FILES_ENABLED='1', ANSIBLE_RETRY_FILES_SAVE_PATH=retry_dir))
    assert run.rc == 2, run.output
    recap = recap_lines(run)
    assert sorted(recap) == sorted(FIVE)
    for host in FIVE:
        assert recap[host][1] == ("changed=0" if host == "ghost-user" else "changed=1"), run.stdout
        assert recap[host][3] == ('failed=1' if host == 'ghost-user' else 'failed=0'), (host, recap[host])
    assert (retry_dir / 'enforce.retry').read_text().split() == ['ghost-user']
    assert 'fatal: [ghost-user]' in run.stdout and 'HTTP 403 Forbidden on GET %s (on behalf of ghost-user)' % SETTINGS in run.stdout
    assert per_account(sim, 'PATCH') == sorted(set(FIVE) - {'ghost-user'})


def test_ansible_runner_stats_per_subuser(sim, tmp_path):
    import ansible_runner  # what AWX runs jobs with: in every venv of make pytest and make matrix
    inventory = _five(sim, tmp_path)
    private = tmp_path / 'runner'
    (private / 'project').mkdir(parents=True)
    (private / 'project' / 'enforce.yml').write_text('- ansible.builtin.import_playbook: mailsec.sendgrid.enforce\n')
    env = {k: v for k, v in ansible_env(**KEY_ENV).items() if k.startswith(('ANSIBLE_', 'SENDGRID_', 'PATH'))}
    result = ansible_runner.run(private_data_dir=str(private), playbook='enforce.yml', inventory=str(inventory), envvars=env,
                                quiet=True)
    stats = result.stats
    assert stats['failures'] == {'ghost-user': 1}
    assert stats['changed'] == {h: 1 for h in FIVE if h != 'ghost-user'}
    assert set(stats['ok']) >= set(FIVE) - {'ghost-user'}
    failed_events = [e['event_data']['host'] for e in result.events if e['event'] == 'runner_on_failed']
    assert failed_events == ['ghost-user']


# -- 3. serial: one failure does not stop later batches -----------------------------------------------------------------

def test_serial_batches_go_on_after_a_failed_subuser(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(43)
    hosts = ['ghost-user'] + names
    inventory = static_inventory(tmp_path, sim, hosts, enforced_tls_policy_require_tls=True)
    run = run_playbook(playbook=play(roles=[ROLE], serial=10), inventory=inventory, env=KEY_ENV)
    assert run.rc == 2
    assert per_account(sim, 'PATCH') == names
    assert recap_lines(run)['ghost-user'][3] == 'failed=1'
    assert len(parent_reads(sim)) == 1, 'one preflight for the whole run, not one per batch'


def test_batch_mode_under_serial_reports_failures_after_the_last_batch(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(12)
    inventory = static_inventory(tmp_path, sim, ['ghost-user'] + names, enforced_tls_policy_require_tls=True)
    run = run_playbook(playbook=play(tasks=[BATCH], serial=5), inventory=inventory, env=KEY_ENV)
    assert run.rc == 2
    assert per_account(sim, 'PATCH') == names
    assert '1 of 13 subusers failed: ghost-user: SendGrid API error: HTTP 403' in run.stdout


# -- 4. strategy free: one GET per subuser ------------------------------------------------------------------------------

@pytest.mark.parametrize('how', ['play', 'environment'])
def test_free_strategy_reads_each_subuser_once(sim, run_playbook, tmp_path, how):
    names = sim.populate_subusers(18, drift_mixed=True)
    drifted = sorted(n for n in names if sim.settings(n).get('version', 1.1) != 1.2)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_version='1.2')
    if how == 'play':
        run = run_playbook(playbook=play(roles=[ROLE], strategy='free'), inventory=inventory, env=KEY_ENV)
    else:
        run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=dict(KEY_ENV, ANSIBLE_STRATEGY='free'))
    assert run.rc == 0, run.output
    assert per_account(sim, 'GET') == sorted(['(parent)'] + names)
    assert per_account(sim, 'PATCH') == drifted
    assert sum(fields[1] == 'changed=1' for fields in recap_lines(run).values()) == len(drifted)


def test_batch_mode_is_refused_under_free_strategy(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(3)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_require_tls=True)
    run = run_playbook(playbook=play(tasks=[BATCH], strategy='free'), inventory=inventory, env=KEY_ENV)
    assert run.rc == 2
    assert "batch mode (enforced_tls_policy_batch) is refused under the 'free' strategy" in run.stdout
    assert sim.count() == 0


def test_batch_variable_under_the_main_entry_point_converges_per_subuser(sim, run_playbook, tmp_path):
    # The main entry point has no templated run_once: a host whose variables ask for batch mode is converged in its own
    # task run (scope and status per subuser, under when: too), with one warning saying how batch mode is chosen.
    names = sim.populate_subusers(4)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_require_tls=True, enforced_tls_policy_batch=True)
    playbook = play(roles=[dict(role=ROLE, when="inventory_hostname != 'sub0001'")])
    run = run_playbook(playbook=playbook, inventory=inventory, env=KEY_ENV)
    assert run.rc == 0, run.output
    assert per_account(sim, 'PATCH') == names[1:]
    text = ' '.join(run.output.split())
    assert text.count("enforced_tls_policy_batch is true, but the role's main entry point converges each subuser") == 1
    assert {name: recap_lines(run)[name][1] for name in names[1:]} == dict.fromkeys(names[1:], 'changed=1')


# -- 5. fail closed -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('playbook_name', ['mailsec.sendgrid.audit', 'mailsec.sendgrid.enforce'])
def test_failed_inventory_source_is_red(sim, fleet_inventory, run_playbook, playbook_name):
    inventory = fleet_inventory(5)
    run = run_playbook(playbook_name=playbook_name, inventory=inventory, args=['-e', 'fail_on_drift=true'],
                       env=dict(SENDGRID_API_KEY='revoked-key-0042'))
    assert run.rc != 0, run.output
    assert "Nothing was checked: the host pattern 'sendgrid_subusers' matches no host of the inventory" in run.stdout
    assert 'HTTP 401' in ' '.join(run.output.split())
    assert [r['path'] for r in sim.requests] == ['/v3/subusers']
    assert 'revoked-key-0042' not in run.output


def test_empty_group_passes_only_when_allowed(sim, run_playbook, tmp_path):
    inventory = static_inventory(tmp_path, sim, [])
    red = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=KEY_ENV)
    assert red.rc == 2 and 'Nothing was checked' in red.stdout
    green = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, args=['-e', 'allow_empty=true'], env=KEY_ENV)
    assert green.rc == 0, green.output
    assert sim.count() == 0


# -- 6. fail fast -------------------------------------------------------------------------------------------------------

def test_bad_key_fails_every_subuser_after_one_request(sim, run_playbook, tmp_path):
    # One request for the whole run, and every subuser host failed under its own name (the recap, the retry file and
    # AWX's "relaunch on failed hosts" see all of them), one with the preflight's reason, the others "not attempted".
    names = sim.populate_subusers(43)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_require_tls=True)
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=dict(SENDGRID_API_KEY='bad-key-99'))
    assert run.rc == 2
    assert sim.count() == 1 and parent_reads(sim)
    fatal = [line for line in run.stdout.splitlines() if line.startswith('fatal:')]
    assert len(fatal) == 43 and 'HTTP 401' in run.stdout
    assert sum('preflight of %s failed' % sim.url in line for line in fatal) == 43
    assert sum('not attempted (no request was sent for this subuser)' in line for line in fatal) == 42
    assert all(len(line) < 1500 for line in fatal), fatal
    assert {name: fields[3] for name, fields in recap_lines(run).items()} == dict.fromkeys(names, 'failed=1')
    assert 'bad-key-99' not in run.output


def test_api_down_fails_after_a_handful_of_requests(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(20)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_require_tls=True)
    sim.inject(503, count=1000)
    start = time.monotonic()
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=KEY_ENV)
    elapsed = time.monotonic() - start
    assert run.rc == 2
    # One preflight: the first try and max_retries (5) retries with backoff; no subuser is contacted.
    assert sim.count() == 6 and len(parent_reads(sim)) == 6
    assert run.stdout.count('fatal:') == 20 and 'HTTP 503' in run.stdout and '(after 5 retries)' in run.stdout
    assert {fields[3] for fields in recap_lines(run).values()} == {'failed=1'}
    assert elapsed < 60


def test_preflight_once_per_endpoint_and_key(sim, run_playbook, tmp_path):
    """A second key (per-host override) gets its own preflight; a bad one fails only its own subusers."""
    names = sim.populate_subusers(6)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_require_tls=True)
    host_vars = tmp_path / 'host_vars'
    host_vars.mkdir()
    for name in names[3:]:
        (host_vars / ('%s.yml' % name)).write_text(yaml.safe_dump(dict(enforced_tls_policy_api_key='other-bad-key')))
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=KEY_ENV)
    assert run.rc == 2
    assert per_account(sim, 'PATCH') == names[:3]
    assert len(parent_reads(sim)) == 2
    recap = recap_lines(run)
    assert [recap[n][3] for n in names] == ['failed=0'] * 3 + ['failed=1'] * 3
    assert 'other-bad-key' not in run.output


# -- 7. audit ------------------------------------------------------------------------------------------------------------

def test_audit_relative_report_dir_no_change_and_drift_per_host(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(6, drift_mixed=True)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_version='1.2')
    drifted = sorted(n for n in names if sim.settings(n).get('version', 1.1) != 1.2)
    assert 0 < len(drifted) < 6
    run = run_playbook(playbook_name='mailsec.sendgrid.audit', inventory=inventory, args=['-e', 'audit_report_dir=reports/daily'],
                       env=KEY_ENV)
    assert run.rc == 0, run.output
    report_dir = tmp_path / 'reports' / 'daily'  # run_playbook runs in tmp_path
    report = json.loads((report_dir / 'enforced_tls_audit.json').read_text())
    assert report['totals'] == dict(subusers=6, compliant=6 - len(drifted), drifted=len(drifted), failed=0)
    assert oct((report_dir / 'enforced_tls_audit.md').stat().st_mode & 0o777) == '0o600'
    assert all(fields[1] == 'changed=0' for fields in recap_lines(run).values()), run.stdout
    assert sim.count('PATCH') == 0

    check = run_playbook(playbook_name='mailsec.sendgrid.audit', inventory=inventory, check=True,
                         args=['-e', 'audit_report_dir=reports/daily'], env=KEY_ENV)
    assert check.rc == 0, check.output
    changed = sorted(h for h, fields in recap_lines(check).items() if fields[1] == 'changed=1')
    assert changed == drifted

    strict = run_playbook(playbook_name='mailsec.sendgrid.audit', inventory=inventory,
                          args=['-e', 'audit_report_dir=reports/daily', '-e', 'fail_on_drift=true'], env=KEY_ENV)
    assert strict.rc == 2
    assert sorted(h for h, fields in recap_lines(strict).items() if fields[3] == 'failed=1') == drifted
    assert json.loads((report_dir / 'enforced_tls_audit.json').read_text())['totals']['drifted'] == len(drifted)
    assert sim.count('PATCH') == 0


# -- check mode and re-run ---------------------------------------------------------------------------------------------

def test_check_diff_apply_rerun_per_subuser(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(8, drift_mixed=True)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_require_tls=True, enforced_tls_policy_version='1.2')
    drifted = sorted(n for n in names if not (sim.settings(n).get('require_tls') and sim.settings(n).get('version') == 1.2))
    before = sim.state()
    check = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, check=True, diff=True, env=KEY_ENV)
    assert check.rc == 0, check.output
    assert sim.count('PATCH') == 0 and sim.state() == before
    assert sorted(h for h, f in recap_lines(check).items() if f[1] == 'changed=1') == drifted
    assert check.stdout.count('+    "version": "1.2"') >= 1

    apply = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=KEY_ENV)
    assert apply.rc == 0 and per_account(sim, 'PATCH') == drifted

    sim.clear_log()
    again = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=KEY_ENV)
    assert again.rc == 0 and sim.count('PATCH') == 0
    assert all(f[1] == 'changed=0' for f in recap_lines(again).values())


# -- batch mode ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['include_role', 'import_role', 'block'])
def test_batch_mode_refused_under_when(sim, run_playbook, tmp_path, kind):
    names = sim.populate_subusers(4)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_require_tls=True)
    when = "inventory_hostname in ['sub0001', 'sub0002']"
    if kind == 'block':
        playbook = play(tasks=[dict(name='Block', when=when, block=[
            {'ansible.builtin.include_role': dict(name=ROLE, tasks_from='batch')}])])
    else:
        playbook = play(tasks=[include('1.2', when, batch=True, kind=kind)])
    run = run_playbook(playbook=playbook, inventory=inventory, env=KEY_ENV)
    assert run.rc == 2
    assert 'batch mode (enforced_tls_policy_batch) is refused under a when: condition' in run.stdout
    assert sim.count() == 0


def test_batch_mode_plain(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(10)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_require_tls=True)
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, args=['-e', 'enforced_tls_policy_batch=true'],
                       env=KEY_ENV)
    assert run.rc == 0, run.output
    assert per_account(sim, 'PATCH') == names and len(parent_reads(sim)) == 1
    assert 'Enforced TLS batch of 10 subusers: 0 compliant, 10 changed, 0 would change, 0 failed' in run.stdout


# -- 8. consistent inputs -----------------------------------------------------------------------------------------------

def test_accounts_shapes_are_the_same_in_both_modules(sim, run_playbook):
    sim.populate_subusers(3)
    connection = dict(api_key=API_KEY, api_url=sim.url)
    accounts = ['sub0001', dict(on_behalf_of='sub0002'), dict(on_behalf_of='sub0003', version='1.3')]
    run = run_playbook(tasks=[
        dict(name='Converge', register='converge', **{'mailsec.sendgrid.enforced_tls': dict(connection, version='1.2', accounts=accounts)}),
        dict(name='Read', register='read', **{'mailsec.sendgrid.enforced_tls_info': dict(connection, accounts=accounts)}),
        dict(name='Bad item', register='bad', ignore_errors=True,
             **{'mailsec.sendgrid.enforced_tls_info': dict(connection, accounts=[dict(on_behalf_of='sub0001', colour='red')])}),
    ], save=['converge', 'read', 'bad'])
    assert run.rc == 0, run.output
    results = run.results
    assert [r['enforced_tls']['version'] for r in results['read']['results']] == ['1.2', '1.2', '1.3']
    assert results['bad']['msg'] == 'accounts[0] has unsupported key(s) colour; allowed: on_behalf_of, require_tls, require_valid_cert, version'


def test_inventory_plugin_documents_only_what_it_accepts():
    import subprocess
    from tests.conftest import BIN
    proc = subprocess.run([str(BIN / 'ansible-doc'), '-t', 'inventory', '--json', 'mailsec.sendgrid.subusers'], env=ansible_env(),
                          capture_output=True, text=True, check=True)
    options = json.loads(proc.stdout)['mailsec.sendgrid.subusers']['doc']['options']
    assert 'on_behalf_of' not in options and 'api_key' in options
