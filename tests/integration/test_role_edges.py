# -*- coding: utf-8 -*-
"""The role's edges as users write plays (issue: "The role's edges as users write plays").

Real ansible-playbook (and ansible-runner) runs against the simulator, the test MX world of tests.dns_server and raw
servers on 127.0.0.1: the guardrail when a when: leaves the play's first host out, the free and host_pinned strategies,
the endpoint from SENDGRID_REGION and from host variables, a revoked key, a silent API, the journal's path at the end.
"""

from __future__ import annotations

# pylint: disable=redefined-outer-name  # pytest fixtures arrive as arguments of the same name

import json
import time

import pytest
import yaml

from tests.conftest import API_KEY, ansible_env
from tests.dns_server import TIMEOUT, world  # noqa: F401 pylint: disable=unused-import
from tests.integration.test_host_model import KEY_ENV, ROLE, per_account, play, recap_lines, static_inventory
from tests.reliability.raw_server import RawServer, respond, silent

SETTINGS = '/v3/user/settings/enforced_tls'
RUN_ONCE_WARNING = 'Using run_once with the free strategy is not currently supported'


def guardrail_vars(world, **extra):
    """The guardrail against the test MX world: selfsigned.test fails a policy that requires valid certificates."""
    return dict(dict(
        enforced_tls_policy_require_valid_cert=True, enforced_tls_policy_impact_nameservers=[world.nameserver],
        enforced_tls_policy_impact_smtp_port=world.port, enforced_tls_policy_impact_ca_path=world.certificates.ca_file,
        enforced_tls_policy_impact_timeout=TIMEOUT, enforced_tls_policy_impact_allow_private=True), **extra)


def previews(run):
    return run.stdout.count('Impact preview:')


# -- 1. the guardrail holds for whichever hosts a condition selects -----------------------------------------------------

NOT_FIRST = "inventory_hostname != 'sub0001'"


def _guarded_play(form):
    """A user's play applying the role to every subuser but the play's first host, in one of the four `when:` forms."""
    role_vars = dict(enforced_tls_policy_impact_domains=['good.test', 'selfsigned.test'])
    if form == 'roles':
        return play(roles=[dict(role=ROLE, when=NOT_FIRST, **role_vars)])
    if form == 'block':
        return play(tasks=[dict(name='Block', when=NOT_FIRST, block=[
            {'ansible.builtin.import_role': dict(name=ROLE), 'vars': role_vars}])])
    return play(tasks=[{'name': 'Policy', 'ansible.builtin.%s' % form: dict(name=ROLE), 'vars': role_vars, 'when': NOT_FIRST}])


@pytest.mark.parametrize('form', ['import_role', 'roles', 'include_role', 'block'])
def test_guardrail_refuses_when_the_first_host_is_not_selected(sim, run_playbook, tmp_path, world, form):
    names = sim.populate_subusers(4)
    inventory = static_inventory(tmp_path, sim, names, **guardrail_vars(world))
    before = sim.state()
    run = run_playbook(playbook=_guarded_play(form), inventory=inventory, env=KEY_ENV)
    assert run.rc == 2, run.output
    assert sim.count() == 0 and sim.state() == before, 'nothing may be sent to SendGrid'
    text = ' '.join(run.stdout.split())
    assert previews(run) == 1, run.stdout
    fatal = [line for line in run.stdout.splitlines() if line.startswith('fatal:')]
    assert len(fatal) == 3 and all('Nothing was written: the policy would block 1 of 2 recipient domains' in line for line in fatal)
    assert 'selfsigned.test (blocked by require_valid_cert' in text
    recap = recap_lines(run)
    assert {name: recap[name][3] for name in names[1:]} == dict.fromkeys(names[1:], 'failed=1')
    assert recap[names[0]][3] == 'failed=0'


# -- 2. free and host_pinned: no run_once warning, one preview ----------------------------------------------------------

@pytest.mark.parametrize('strategy', ['free', 'host_pinned'])
def test_free_strategies_converge_with_one_preview_and_no_warning(sim, run_playbook, tmp_path, world, strategy):
    names = sim.populate_subusers(9)
    inventory = static_inventory(tmp_path, sim, names, **guardrail_vars(world, enforced_tls_policy_impact_domains=['good.test']))
    run = run_playbook(playbook=play(roles=[ROLE], strategy=strategy), inventory=inventory, env=KEY_ENV)
    assert run.rc == 0, run.output
    assert RUN_ONCE_WARNING not in run.output
    assert previews(run) == 1, run.stdout
    assert per_account(sim, 'PATCH') == names
    assert len([r for r in sim.requests if r['path'] == SETTINGS and r['on_behalf_of'] is None]) == 1, 'one preflight'

    again = run_playbook(playbook=play(roles=[ROLE], strategy=strategy), inventory=inventory, env=KEY_ENV)
    assert again.rc == 0 and RUN_ONCE_WARNING not in again.output
    assert per_account(sim, 'PATCH') == names, 'the second run writes nothing'


def test_enforce_playbook_under_free_strategy_from_the_environment(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(5)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_require_tls=True)
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=dict(KEY_ENV, ANSIBLE_STRATEGY='free'))
    assert run.rc == 0, run.output
    assert RUN_ONCE_WARNING not in run.output
    assert per_account(sim, 'PATCH') == names


# -- 3. the endpoint: role variables, then host variables, then the environment ------------------------------------------

def _bare_inventory(tmp_path, hosts, **group_vars):
    path = tmp_path / 'bare.yml'
    path.write_text(yaml.safe_dump({'all': {'children': {'sendgrid_subusers': {
        'hosts': hosts, 'vars': dict(ansible_connection='local', enforced_tls_policy_require_tls=True, **group_vars)}}}}))
    return path


@pytest.mark.parametrize('region, host', [('eu', 'api.eu.sendgrid.com'), (None, 'api.sendgrid.com')])
def test_sendgrid_region_reaches_its_endpoint(run_playbook, tmp_path, region, host):
    # A recording proxy on 127.0.0.1 sees where the key would go (it refuses the tunnel: nothing leaves this machine).
    inventory = _bare_inventory(tmp_path, dict.fromkeys(['sub0001', 'sub0002']), enforced_tls_policy_max_retries=0)
    env = dict(SENDGRID_API_KEY=API_KEY, NO_PROXY='', no_proxy='')
    if region:
        env['SENDGRID_REGION'] = region
    with RawServer(respond(403, 'no tunnels here', content_type='text/plain'), lifetime=60) as proxy:
        env.update(HTTPS_PROXY=proxy.url, https_proxy=proxy.url)
        run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=env)
    assert run.rc == 2
    assert [(r.method, r.path) for r in proxy.requests] == [('CONNECT', '%s:443' % host)], 'one preflight, to %s' % host
    assert 'preflight of https://%s failed' % host in run.stdout
    assert API_KEY not in run.output and not any(API_KEY.encode() in r.body for r in proxy.requests)


def test_host_variables_give_the_endpoint_before_the_environment(sim, run_playbook, tmp_path):
    # sendgrid_api_url as the subusers inventory sets it for a non-default api_url; SENDGRID_REGION would say EU.
    names = sim.populate_subusers(3)
    inventory = _bare_inventory(tmp_path, {name: dict(sendgrid_api_url=sim.url, sendgrid_region='eu') for name in names})
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=dict(KEY_ENV, SENDGRID_REGION='eu'))
    assert run.rc == 0, run.output
    assert per_account(sim, 'PATCH') == names


# -- 4. a revoked key fails every subuser host --------------------------------------------------------------------------

def test_revoked_key_fails_every_host_in_the_retry_file_and_runner_stats(sim, run_playbook, tmp_path):
    import ansible_runner  # what AWX runs jobs with
    names = sim.populate_subusers(12)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_require_tls=True)
    retry_dir = tmp_path / 'retry'
    env = dict(SENDGRID_API_KEY='revoked-key-123', ANSIBLE_RETRY_FILES_ENABLED='1', ANSIBLE_RETRY_FILES_SAVE_PATH=retry_dir)
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=env)
    assert run.rc == 2
    assert sorted((retry_dir / 'enforce.retry').read_text().split()) == names
    assert sim.count() == 1, 'one preflight, no request for any subuser'

    private = tmp_path / 'runner'
    (private / 'project').mkdir(parents=True)
    (private / 'project' / 'enforce.yml').write_text('- ansible.builtin.import_playbook: mailsec.sendgrid.enforce\n')
    runner_env = {k: v for k, v in ansible_env(SENDGRID_API_KEY='revoked-key-123').items()
                  if k.startswith(('ANSIBLE_', 'SENDGRID_', 'PATH'))}
    result = ansible_runner.run(private_data_dir=str(private), playbook='enforce.yml', inventory=str(inventory),
                                envvars=runner_env, quiet=True)
    assert result.stats['failures'] == dict.fromkeys(names, 1)
    assert sorted(e['event_data']['host'] for e in result.events if e['event'] == 'runner_on_failed') == names


# -- 5. a silent API fails once, within timeout x (max_retries + 1) plus backoff ----------------------------------------

def test_silent_api_fails_every_host_within_its_timeout(run_playbook, tmp_path):
    hosts = ['sub%04d' % n for n in range(1, 21)]
    with RawServer(silent, lifetime=60) as server:
        inventory = _bare_inventory(tmp_path, dict.fromkeys(hosts), enforced_tls_policy_api_url=server.url,
                                    enforced_tls_policy_timeout=3, enforced_tls_policy_max_retries=1)
        start = time.monotonic()
        run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=KEY_ENV)
        elapsed = time.monotonic() - start
        connections = server.connections
    assert run.rc == 2
    assert elapsed < 20, elapsed
    assert connections == 2, 'the first try and one retry, for the whole run'
    fatal = [line for line in run.stdout.splitlines() if line.startswith('fatal:')]
    assert len(fatal) == 20 and all('timed out' in line for line in fatal)
    assert {fields[3] for fields in recap_lines(run).values()} == {'failed=1'}


# -- 7. an applying run prints its journal's path once, at the end ------------------------------------------------------

def test_applying_run_prints_its_journal_once_at_the_end(sim, run_playbook, tmp_path):
    names = sim.populate_subusers(6)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_require_tls=True)
    check = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=KEY_ENV, check=True)
    assert check.rc == 0 and 'Snapshot journal of this run' not in check.stdout

    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=KEY_ENV)
    assert run.rc == 0, run.output
    assert run.stdout.count('Snapshot journal of this run: ') == 1
    tail = run.stdout[run.stdout.index('Snapshot journal of this run: '):]
    assert 'PLAY RECAP' in tail and 'TASK [mailsec.sendgrid.enforced_tls_policy' not in tail, 'printed after the role, at the end'
    journals = sorted((tmp_path / 'enforced_tls_snapshots').glob('*.jsonl'))
    assert len(journals) == 1 and '%s (6 subusers)' % journals[0] in ' '.join(run.stdout.split())

    again = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=KEY_ENV)
    assert again.rc == 0 and 'Snapshot journal of this run' not in again.stdout


def test_unknown_variable_names_are_still_caught(sim, run_playbook, tmp_path):
    # timeout and max_retries are role variables now, not typos; a misspelling of them still is.
    names = sim.populate_subusers(2)
    inventory = static_inventory(tmp_path, sim, names, enforced_tls_policy_require_tls=True, enforced_tls_policy_timeout=5,
                                 enforced_tls_policy_max_retries=2, enforced_tls_policy_max_retry=2)
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=KEY_ENV)
    assert run.rc == 0, run.output
    text = ' '.join(run.output.split())
    assert 'unknown variables ignored (a typo?): enforced_tls_policy_max_retry' in text
    assert 'enforced_tls_policy_timeout' not in text.split('typo?')[1].split('\n')[0]
    assert json.dumps(API_KEY) not in run.output
