# -*- coding: utf-8 -*-
"""The fleet: subusers inventory plugin, enforced_tls_policy role, enforce and audit playbooks, for real."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.conftest import API_KEY, BIN, ansible_env
from tests.contract.openapi_check import validate_logged_requests

POLICY = dict(enforced_tls_policy_require_tls=True, enforced_tls_policy_require_valid_cert=True, enforced_tls_policy_version='1.2')
COMPLIANT = dict(require_tls=True, require_valid_cert=True, version=1.2)


@pytest.fixture
def fleet(sim, tmp_path):
    """An inventory directory: the plugin file, the policy in group_vars, and room for host_vars."""
    def make(count, policy=None, plugin_options=None, **populate):
        names = sim.populate_subusers(count, **populate)
        inventory = tmp_path / 'inventory'
        (inventory / 'group_vars').mkdir(parents=True)
        (inventory / 'host_vars').mkdir()
        config = dict(plugin='mailsec.sendgrid.subusers', api_url=sim.url, **(plugin_options or {}))
        (inventory / 'demo.sendgrid.yml').write_text(yaml.safe_dump(config))
        (inventory / 'group_vars' / 'sendgrid_subusers.yml').write_text(yaml.safe_dump(dict(policy or POLICY, enforced_tls_policy_api_url=sim.url)))
        return inventory, names
    return make


def host_vars(inventory, host, **values):
    (inventory / 'host_vars' / ('%s.yml' % host)).write_text(yaml.safe_dump(values))


def ansible_inventory(inventory, *args):
    proc = subprocess.run([str(BIN / 'ansible-inventory'), '-i', str(inventory), *args], env=ansible_env(SENDGRID_API_KEY=API_KEY),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout, object_hook=_plain)


def _plain(obj):
    # ansible-core 2.19 marks inventory strings as unsafe in --list output: {"__ansible_unsafe": "eu"}.
    return obj['__ansible_unsafe'] if set(obj) == {'__ansible_unsafe'} else obj


def test_inventory_pages_and_leaves_out_disabled(sim, fleet):
    inventory, names = fleet(23, eu_every=5, disabled_every=7, plugin_options=dict(page_size=5))
    listing = ansible_inventory(inventory / 'demo.sendgrid.yml', '--list')
    hosts = sorted(listing['sendgrid_subusers']['hosts'])
    assert hosts == [n for i, n in enumerate(names, 1) if i % 7]
    assert [r['query'] for r in sim.requests] == [
        dict(include_region='true', limit='5', offset=str(offset)) for offset in (0, 5, 10, 15, 20)]
    hostvars = listing['_meta']['hostvars']
    assert hostvars['sub0005']['sendgrid_region'] == 'eu' and hostvars['sub0004']['sendgrid_region'] == 'global'
    assert hostvars['sub0001']['ansible_connection'] == 'local'
    # No interpreter path: AWX would keep the one of the environment that synced the inventory.
    assert not [h for h, v in hostvars.items() if 'ansible_python_interpreter' in v]
    assert hostvars['sub0001']['sendgrid_subuser_id'] == 1000001 and hostvars['sub0001']['sendgrid_disabled'] is False


def test_inventory_constructed_and_disabled_on_request(sim, fleet):
    inventory, names = fleet(10, eu_every=5, disabled_every=4, plugin_options=dict(
        include_disabled=True, keyed_groups=[dict(key='sendgrid_region', prefix='region')],
        groups=dict(disabled='sendgrid_disabled'), compose=dict(team="'mail-' + sendgrid_region")))
    listing = ansible_inventory(inventory / 'demo.sendgrid.yml', '--list')
    assert sorted(listing['sendgrid_subusers']['hosts']) == names
    assert sorted(listing['disabled']['hosts']) == ['sub0004', 'sub0008']
    assert sorted(listing['region_eu']['hosts']) == ['sub0005', 'sub0010']
    assert listing['_meta']['hostvars']['sub0005']['team'] == 'mail-eu'


def test_inventory_username_is_an_exact_match(sim, fleet):
    """SendGrid documents the filter as the subuser's username; whatever the API matches, one exact host results."""
    inventory = fleet(0, plugin_options=dict(username='ops'))[0]
    for name in ('ops', 'ops-eu', 'devops'):
        sim.add_subuser(name)
    listing = ansible_inventory(inventory / 'demo.sendgrid.yml', '--list')
    assert listing['sendgrid_subusers']['hosts'] == ['ops']
    assert [r['query']['username'] for r in sim.requests] == ['ops']


def test_inventory_options_from_the_environment(sim, fleet, tmp_path):
    """api_key, region and api_url come from SENDGRID_* through the options' env: entries (ansible-doc shows them)."""
    sim.populate_subusers(2, eu_every=2)
    source = tmp_path / 'env.sendgrid.yml'
    source.write_text('plugin: mailsec.sendgrid.subusers\n')
    proc = subprocess.run([str(BIN / 'ansible-inventory'), '-i', str(source), '--list'], env=ansible_env(
        SENDGRID_API_KEY=API_KEY, SENDGRID_API_URL=sim.url, ANSIBLE_INVENTORY_UNPARSED_FAILED='true'),
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(proc.stdout, object_hook=_plain)['sendgrid_subusers']['hosts']) == ['sub0001', 'sub0002']
    doc = subprocess.run([str(BIN / 'ansible-doc'), '-t', 'inventory', '--json', 'mailsec.sendgrid.subusers'], env=ansible_env(),
                         capture_output=True, text=True, check=True)
    options = json.loads(doc.stdout)['mailsec.sendgrid.subusers']['doc']['options']
    assert {name: [e['name'] for e in options[name]['env']] for name in ('api_key', 'region', 'api_url')} == dict(
        api_key=['SENDGRID_API_KEY'], region=['SENDGRID_REGION'], api_url=['SENDGRID_API_URL'])


def test_inventory_wrong_key_is_a_clear_error(sim, fleet, tmp_path):
    inventory = fleet(3)[0]
    proc = subprocess.run([str(BIN / 'ansible-inventory'), '-i', str(inventory / 'demo.sendgrid.yml'), '--list'],
                          env=ansible_env(SENDGRID_API_KEY='bad-key-31337-secret', ANSIBLE_INVENTORY_UNPARSED_FAILED='true'),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    # Ansible wraps warnings at the terminal width.
    assert 'HTTP 401 Unauthorized on GET /v3/subusers' in ' '.join(proc.stderr.split())
    assert 'bad-key-31337-secret' not in proc.stdout + proc.stderr and 'Traceback' not in proc.stderr


def test_enforce_check_apply_rerun_with_overrides(sim, fleet, run_playbook):
    inventory, names = fleet(30, drift_mixed=True)
    # Per-subuser override from host_vars beats the group's policy.
    host_vars(inventory, 'sub0002', enforced_tls_policy_version='1.3')
    drifted = [n for n in names if sim.settings(n) != COMPLIANT or n == 'sub0002']
    before = sim.state()

    check = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, check=True, diff=True,
                         env=dict(SENDGRID_API_KEY=API_KEY))
    assert check.rc == 0, check.output
    # One preflight read of the parent account, then one GET per subuser.
    assert sim.count('PATCH') == 0 and sim.count('GET', '/v3/user/settings/enforced_tls') == 31
    assert sim.state() == before
    assert '+    "version": "1.3"' in check.stdout
    assert sorted(h for h in names if check.recap(h)['changed'] == 1) == sorted(drifted)

    sim.clear_log()
    apply = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=dict(SENDGRID_API_KEY=API_KEY))
    assert apply.rc == 0, apply.output
    assert sim.count('GET', '/v3/user/settings/enforced_tls') == 31
    assert sorted(r['on_behalf_of'] for r in sim.requests if r['method'] == 'PATCH') == sorted(drifted)
    for name in names:
        assert sim.settings(name) == (dict(COMPLIANT, version=1.3) if name == 'sub0002' else COMPLIANT), name
    validate_logged_requests(sim.requests)

    sim.clear_log()
    again = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=dict(SENDGRID_API_KEY=API_KEY))
    assert again.rc == 0 and again.recap('sub0001')['changed'] == 0
    assert sim.count('PATCH') == 0 and sim.count('GET', '/v3/user/settings/enforced_tls') == 31
    assert all(again.recap(h)['changed'] == 0 for h in names)


def test_limit_converges_only_that_subuser(sim, fleet, run_playbook):
    inventory, names = fleet(5)
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, args=['--limit', 'sub0003'],
                       env=dict(SENDGRID_API_KEY=API_KEY))
    assert run.rc == 0, run.output
    assert [(r['method'], r['on_behalf_of']) for r in sim.requests if r['path'].endswith('enforced_tls')] == [
        ('GET', None), ('GET', 'sub0003'), ('PATCH', 'sub0003')]
    assert [n for n in names if sim.settings(n) == COMPLIANT] == ['sub0003']


def test_one_forbidden_subuser_does_not_stop_the_others(sim, fleet, run_playbook):
    inventory, names = fleet(50)
    sim.fail_account('sub0017', 403)
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=dict(SENDGRID_API_KEY=API_KEY))
    assert run.rc == 2
    assert ('fatal: [sub0017]: FAILED! => {"changed": false, "desired": {"require_tls": true, "require_valid_cert": true, '
            '"version": "1.2"}, "host": "sub0017", "msg": "SendGrid API error: HTTP 403 Forbidden on GET '
            '/v3/user/settings/enforced_tls (on behalf of sub0017): access forbidden"') in run.stdout
    assert [n for n in names if sim.settings(n) != COMPLIANT] == ['sub0017']
    assert [h for h in names if run.recap(h)['failed']] == ['sub0017']
    assert sum(run.recap(h)['changed'] for h in names) == 49


def test_bad_variables_name_variable_and_subuser_before_any_request(sim, fleet, run_playbook):
    inventory = fleet(4)[0]
    host_vars(inventory, 'sub0002', enforced_tls_policy_version='1.4')
    host_vars(inventory, 'sub0003', enforced_tls_policy_region='us')
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=dict(SENDGRID_API_KEY=API_KEY))
    assert run.rc == 2
    # Each subuser's error under its own name; nothing was sent for either, the others converge.
    assert 'fatal: [sub0002]' in run.stdout and 'enforced_tls_policy_version must be one of "1.1", "1.2", "1.3"' in run.stdout
    assert 'fatal: [sub0003]' in run.stdout and "enforced_tls_policy_region must be one of global, eu, got 'us'" in run.stdout
    assert not {'sub0002', 'sub0003'} & {r['on_behalf_of'] for r in sim.requests}
    assert [h for h in ('sub0001', 'sub0002', 'sub0003', 'sub0004') if run.recap(h)['failed']] == ['sub0002', 'sub0003']


def test_missing_key_names_the_variable(sim, run_playbook, tmp_path):
    inventory = tmp_path / 'static.yml'
    inventory.write_text(yaml.safe_dump({'sendgrid_subusers': {'hosts': {'sub0001': dict(ansible_connection='local')},
                                                               'vars': dict(POLICY, enforced_tls_policy_api_url=sim.url)}}))
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory)
    assert run.rc == 2
    assert 'fatal: [sub0001]' in run.stdout
    assert 'enforced_tls_policy_api_key is required: set it or the SENDGRID_API_KEY environment variable' in run.stdout
    assert sim.count() == 0


def test_audit_writes_reports_and_fails_only_when_asked(sim, fleet, run_playbook, tmp_path):
    inventory, names = fleet(6, drift_mixed=True)
    drifted = sorted(n for n in names if sim.settings(n) != COMPLIANT)
    assert drifted, 'the seed must give some drift'
    reports = tmp_path / 'reports'
    reports.mkdir()
    run = run_playbook(playbook_name='mailsec.sendgrid.audit', inventory=inventory, args=['-e', 'audit_report_dir=%s' % reports],
                       env=dict(SENDGRID_API_KEY=API_KEY))
    assert run.rc == 0, run.output
    assert sim.count('PATCH') == 0
    report = json.loads((reports / 'enforced_tls_audit.json').read_text())
    assert report['totals'] == dict(subusers=6, compliant=6 - len(drifted), drifted=len(drifted), failed=0)
    assert sorted(s['subuser'] for s in report['subusers'] if not s['compliant']) == drifted
    first = next(s for s in report['subusers'] if s['subuser'] == drifted[0])
    assert first['desired'] == dict(require_tls=True, require_valid_cert=True, version='1.2')
    assert all(first['differences'][f]['desired'] == first['desired'][f] for f in first['differences'])
    markdown = (reports / 'enforced_tls_audit.md').read_text()
    assert '| subuser | current | desired | compliant | differences |' in markdown
    assert '| %s |' % drifted[0] in markdown

    strict = run_playbook(playbook_name='mailsec.sendgrid.audit', inventory=inventory, check=True,
                          args=['-e', 'audit_report_dir=%s' % reports, '-e', 'fail_on_drift=true'], env=dict(SENDGRID_API_KEY=API_KEY))
    assert strict.rc == 2 and sorted(h for h in names if strict.recap(h)['failed']) == drifted
    assert sum('drifts from the policy: ' in line for line in strict.stdout.splitlines() if line.startswith('fatal:')) == len(drifted)
    assert sim.count('PATCH') == 0


def test_misspelt_variable_is_warned_about(sim, fleet, run_playbook):
    inventory = fleet(2)[0]
    host_vars(inventory, 'sub0001', enforced_tls_policy_verison='1.3')
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=dict(SENDGRID_API_KEY=API_KEY))
    assert run.rc == 0, run.output
    assert 'unknown variables ignored (a typo?): enforced_tls_policy_verison' in ' '.join(run.output.split())
