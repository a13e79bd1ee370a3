# -*- coding: utf-8 -*-
"""The API key never appears in anything a user, a log or AWX keeps: every byte is grepped.

A recognisable key (tests.conftest.API_KEY) goes through every way in (environment, module option,
module_defaults, role variable, inventory file, ansible-runner's env/envvars) and every way things
go wrong (401, 403, 500 after retries, bad options, transport failures), at -vvvv with --diff.
Then stdout, stderr, Ansible's log file, saved results and every file ansible-runner wrote are searched
for the key, for its distinctive middle part (catches truncated echoes), and for "Bearer ".
"""

from __future__ import annotations

import json
import subprocess
import traceback
from pathlib import Path

import pytest
import yaml

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import SendGridClient, SendGridError
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import read
from tests.conftest import API_KEY, BIN, ansible_env
from tests.reliability.helpers import POLICY, run_ansible_inventory, write_fleet_inventory, write_host_vars
from tests.reliability.raw_server import RawServer, http_response, reset_after, respond, silent
from tests.simulator.sendgrid_sim import Simulator
from tests.tls_servers import Certificates, free_port, server_context

# The key, a fragment of it (a truncated or wrapped echo still contains it), and the header's scheme.
NEEDLES = (API_KEY, API_KEY[9:17], 'Bearer ')


def assert_no_secret(text, where):
    for needle in NEEDLES:
        assert needle not in text, 'found %r in %s:\n%s' % (needle, where, _around(text, needle))


def _around(text, needle, width=300):
    index = text.find(needle)
    return text[max(0, index - width):index + width]


def grep_tree(root, skip=()):
    """Search every file under root (bytes, so binary files count too); return how many files were searched."""
    searched = 0
    for path in sorted(Path(root).rglob('*')):
        if not path.is_file() or path in skip:
            continue
        assert_no_secret(path.read_bytes().decode('utf-8', 'replace'), str(path))
        searched += 1
    return searched


@pytest.fixture
def rejecting_sim():
    """A second simulator that does not know our key: every request with it is a 401."""
    simulator = Simulator(api_keys=('some-other-key',))
    simulator.start()
    yield simulator
    simulator.stop()


def test_modules_never_print_the_key(sim, rejecting_sim, run_playbook, tmp_path):
    for name in ('marketing', 'batch1', 'batch2', 'forbidden', 'broken', 'grouped'):
        sim.add_subuser(name)
    sim.fail_account('forbidden', 403)
    sim.inject(500, 10, account='broken')
    log_file = tmp_path / 'ansible.log'

    def task(name, module, **options):
        return {'name': name, 'mailsec.sendgrid.' + module: dict(dict(api_url=sim.url), **options), 'register': name, 'ignore_errors': True}

    key = '{{ sendgrid_key }}'
    tasks = [
        task('env_key_changed', 'enforced_tls', on_behalf_of='marketing', require_tls=True, version='1.2'),
        task('param_key_batch', 'enforced_tls', api_key=key, require_valid_cert=True,
             accounts=[dict(on_behalf_of='batch1'), dict(on_behalf_of='batch2', version='1.3'), dict(on_behalf_of='forbidden')]),
        task('unauthorized', 'enforced_tls', api_key=key, api_url=rejecting_sim.url, require_tls=True),
        task('info_unauthorized', 'enforced_tls_info', api_key=key, api_url=rejecting_sim.url),
        task('forbidden', 'enforced_tls', api_key=key, on_behalf_of='forbidden', require_tls=True),
        task('server_error_after_retries', 'enforced_tls', api_key=key, on_behalf_of='broken', require_tls=True, max_retries=1),
        task('bad_version', 'enforced_tls', api_key=key, version='1.4'),
        task('bad_timeout', 'enforced_tls_info', api_key=key, timeout=-1),
        task('unknown_option', 'enforced_tls', api_key=key, require_tls=True, colour='blue'),
        task('refused', 'enforced_tls_info', api_key=key, api_url='http://127.0.0.1:%d' % free_port(), max_retries=0),
        task('info_batch', 'enforced_tls_info', api_key=key, accounts=['marketing', 'forbidden']),
        dict(task('info_check_mode', 'enforced_tls_info', api_key=key, on_behalf_of='marketing'), check_mode=True),
        {'name': 'module_defaults', 'module_defaults': {'group/mailsec.sendgrid.api': dict(api_key=key, api_url=sim.url)},
         'block': [{'name': 'grouped', 'mailsec.sendgrid.enforced_tls': dict(on_behalf_of='grouped', version='1.3'), 'register': 'grouped'}]},
    ]
    names = [t.get('register') for t in tasks if t.get('register')] + ['grouped']
    results_file = tmp_path / 'results.json'
    save = {'name': 'Save', 'ansible.builtin.copy': dict(content='{{ %s | to_json }}' % ('{' + ', '.join(
        '"%s": %s | default(None)' % (n, n) for n in names) + '}'), dest=str(results_file))}
    # The key as a play variable (the playbook file itself is the user's, not output, so it is not searched).
    playbook = [dict(name='Secrets', hosts='localhost', gather_facts=False, vars=dict(sendgrid_key=API_KEY), tasks=tasks + [save])]

    run = run_playbook(playbook=playbook, verbosity=4, diff=True, env=dict(SENDGRID_API_KEY=API_KEY, ANSIBLE_LOG_PATH=log_file))
    results = json.loads(results_file.read_text())
    # The failures really happened, with the requests that carry the key really sent.
    assert results['env_key_changed']['changed'] is True and results['grouped']['changed'] is True
    assert 'HTTP 401 Unauthorized' in results['unauthorized']['msg'] and 'HTTP 401' in results['info_unauthorized']['msg']
    assert 'HTTP 403 Forbidden' in results['forbidden']['msg'] and 'HTTP 403' in results['param_key_batch']['msg']
    assert 'HTTP 500' in results['server_error_after_retries']['msg'] and '(after 1 retries)' in results['server_error_after_retries']['msg']
    assert 'version must be one of' in results['bad_version']['msg'] and 'timeout must be' in results['bad_timeout']['msg']
    assert 'Unsupported parameters' in results['unknown_option']['msg'] and 'connection failed' in results['refused']['msg']
    assert rejecting_sim.requests[0]['headers']['authorization'] == 'Bearer ' + API_KEY
    assert '--- before' in run.stdout or '"before"' in run.stdout, 'the --diff output must be there to be searched'
    assert_no_secret(run.stdout, 'ansible-playbook stdout')
    assert_no_secret(run.stderr, 'ansible-playbook stderr')
    assert_no_secret(log_file.read_text(), 'ANSIBLE_LOG_PATH')
    assert_no_secret(results_file.read_text(), 'registered results')


def enforce(run_playbook, inventory, **kwargs):
    return run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, verbosity=4, diff=True, **kwargs)


def test_role_never_prints_the_key(sim, run_playbook, tmp_path):
    sim.populate_subusers(4)
    sim.fail_account('sub0002', 403)
    sim.inject(500, 20, account='sub0003')
    log_file = tmp_path / 'ansible.log'
    env = dict(ANSIBLE_LOG_PATH=log_file)

    # 1. Key from the environment; a 403 and a 500 after every retry among successes.
    inventory = write_fleet_inventory(tmp_path / 'env-key', sim.url)
    applied = enforce(run_playbook, inventory, env=dict(env, SENDGRID_API_KEY=API_KEY))
    assert applied.rc == 2 and applied.stdout.count('fatal: [') == 2 and '(after 5 retries)' in applied.stdout
    outputs = [applied]

    # 2. Key as a role variable and in the inventory file (no environment), check mode.
    inventory = write_fleet_inventory(tmp_path / 'var-key', sim.url, plugin_options=dict(api_key=API_KEY),
                                      group_vars_extra=dict(enforced_tls_policy_api_key=API_KEY))
    sim.clear_faults()
    checked = enforce(run_playbook, inventory, check=True, env=env)
    assert checked.rc == 0 and '"status": "would_change"' in checked.stdout, checked.output
    outputs.append(checked)

    # 3. Same, with a bad policy value that Ansible's argument_specs validation catches (it prints the role's variables).
    (inventory / 'group_vars' / 'sendgrid_subusers.yml').write_text(yaml.safe_dump(dict(
        POLICY, enforced_tls_policy_api_key=API_KEY, enforced_tls_policy_api_url=sim.url, enforced_tls_policy_require_tls='maybe')))
    refused = enforce(run_playbook, inventory, env=env)
    assert refused.rc == 2 and 'enforced_tls_policy_require_tls' in refused.stdout, refused.output
    outputs.append(refused)

    # 4. A per-subuser bad variable that the fleet action catches.
    (inventory / 'group_vars' / 'sendgrid_subusers.yml').write_text(yaml.safe_dump(dict(
        POLICY, enforced_tls_policy_api_key=API_KEY, enforced_tls_policy_api_url=sim.url)))
    write_host_vars(inventory, 'sub0004', enforced_tls_policy_api_url='http://api.example.com')
    invalid = enforce(run_playbook, inventory, env=env)
    assert invalid.rc == 2 and 'fatal: [sub0004]' in invalid.stdout and 'enforced_tls_policy_api_url' in invalid.stdout, invalid.output
    outputs.append(invalid)

    for number, run in enumerate(outputs, 1):
        assert_no_secret(run.stdout, 'run %d stdout' % number)
        assert_no_secret(run.stderr, 'run %d stderr' % number)
    assert_no_secret(log_file.read_text(), 'ANSIBLE_LOG_PATH')


def test_inventory_plugin_never_prints_the_key(sim, rejecting_sim, tmp_path):
    sim.populate_subusers(3)
    cases = [
        ('listing, key from the environment', dict(api_url=sim.url), dict(SENDGRID_API_KEY=API_KEY), 0, None),
        ('401, key in the file', dict(api_url=rejecting_sim.url, api_key=API_KEY), {}, 1, 'HTTP 401 Unauthorized on GET /v3/subusers'),
        ('bad option, key in the file', dict(api_url=sim.url, api_key=API_KEY, region='us'), {}, 1, "Invalid value 'us'"),
        ('bad option, key from the environment', dict(api_url=sim.url, timeout=-1), dict(SENDGRID_API_KEY=API_KEY), 1, 'timeout must be'),
    ]
    for case_id, options, env, rc, expected in cases:
        source = tmp_path / ('%d.sendgrid.yml' % len(list(tmp_path.glob('*.sendgrid.yml'))))
        source.write_text(yaml.safe_dump(dict(plugin='mailsec.sendgrid.subusers', **options)))
        proc = run_ansible_inventory(source, '--list', '-vvvv', env=env)
        assert proc.returncode == rc, (case_id, proc.stdout + proc.stderr)
        if expected:
            # ansible-core up to 2.18 wraps warnings at the terminal's width (the message may span lines) and quotes
            # an invalid option value with double quotes.
            assert expected in ' '.join(proc.stderr.split()).replace('"', "'"), (case_id, proc.stderr)
        assert_no_secret(proc.stdout, case_id + ': stdout')
        assert_no_secret(proc.stderr, case_id + ': stderr')
    assert len(rejecting_sim.requests) == 1


def test_ansible_runner_with_env_envvars(sim, tmp_path):
    """As AWX injects a credential: the key only in env/envvars of ansible-runner's private data directory."""
    sim.populate_subusers(3)
    sim.fail_account('sub0002', 403)
    private = tmp_path / 'private'
    (private / 'env').mkdir(parents=True)
    (private / 'project').mkdir()
    envvars = private / 'env' / 'envvars'
    envvars.write_text(yaml.safe_dump(dict(SENDGRID_API_KEY=API_KEY)))
    (private / 'env' / 'cmdline').write_text('--diff -vvvv')
    (private / 'project' / 'site.yml').write_text(yaml.safe_dump([{'ansible.builtin.import_playbook': 'mailsec.sendgrid.enforce'}]))
    write_fleet_inventory(private / 'inventory', sim.url)
    proc = subprocess.run([str(BIN / 'ansible-runner'), 'run', str(private), '-p', 'site.yml'], env=ansible_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'fatal: [sub0002]' in proc.stdout and sim.count('PATCH') == 2
    # env/cmdline was honoured: the output searched below is the most verbose there is, diffs included.
    assert 'verbosity: 4' in proc.stdout and '--- before' in proc.stdout and 'changed: [sub0001]' in proc.stdout
    assert_no_secret(proc.stdout, 'ansible-runner stdout')
    assert_no_secret(proc.stderr, 'ansible-runner stderr')
    # ansible-runner itself records the environment it gave ansible-playbook, envvars included, in
    # artifacts/<ident>/command: its own copy of env/envvars, like envvars itself not ours to keep clean.
    # Everywhere else in that file, and in every other file (job events, stdout, fact cache), the key must be absent.
    commands = list(private.glob('artifacts/*/command'))
    assert len(commands) == 1
    command = json.loads(commands[0].read_text())
    assert command['env']['SENDGRID_API_KEY'] == API_KEY
    del command['env']
    assert_no_secret(json.dumps(command), str(commands[0]) + ' (without its env)')
    searched = grep_tree(private, skip={envvars, commands[0]})
    assert searched >= 5 and list(private.glob('artifacts/*/job_events/*.json')), 'the job events must be there to be searched'


# --- exceptions from requests --------------------------------------------------------------------------------------

def _transport_failures(tmp_path):
    certificates = Certificates(tmp_path)
    yield 'connection refused', None, 'http://127.0.0.1:%d' % free_port()
    yield 'reset', RawServer(reset_after(http_response(200, b'{"a', content_length=50)), lifetime=20), None
    yield 'timeout', RawServer(silent, lifetime=20), None
    yield '401', RawServer(respond(401, {'errors': [{'message': 'authorization required'}]}), lifetime=20), None
    yield 'untrusted certificate', RawServer(respond(200, {}), tls_context=server_context(certificates.good), lifetime=20), None


def test_exceptions_never_carry_the_authorization_header(tmp_path):
    """Whatever fails, the error text (and the chained requests exception, and a full traceback) has no key."""
    for case_id, server, url in _transport_failures(tmp_path):
        if server is not None:
            server.start()
            url = server.url
        try:
            client = SendGridClient(api_key=API_KEY, api_url=url, timeout=0.3, max_retries=1, sleep=lambda seconds: None)
            with pytest.raises(SendGridError) as info:
                read(client, on_behalf_of='marketing')
        finally:
            if server is not None:
                server.stop()
        error = info.value
        texts = [str(error), repr(error), ''.join(traceback.format_exception(type(error), error, error.__traceback__))]
        if error.__context__ is not None:  # the requests exception our message was built from
            texts += [str(error.__context__), repr(error.__context__)]
        for text in texts:
            assert_no_secret(text, case_id)
        if server is not None and server.requests:
            # The key did travel in the request (so the check above is not vacuous) and nowhere else.
            assert server.requests[0].headers['authorization'] == 'Bearer ' + API_KEY
