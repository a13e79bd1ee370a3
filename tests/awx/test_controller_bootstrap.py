# -*- coding: utf-8 -*-
"""extensions/awx: the credential type, the bootstrap playbook for the controller and the project's playbooks.

The bootstrap playbook needs awx.awx, which the `ansible` package carries: the Makefile installs that package
(without its dependencies) into .tmp/ansible-pkg, outside the venv, and these tests put it on the collections path.
No controller is needed: besides the syntax check and ansible-lint, the playbook runs for real against stand-ins
of the awx.awx modules that record what they would send to the controller.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tests.awx.controller_job import AWX, BOOTSTRAP, PROJECT, job_template, survey_defaults, template_cmdline
from tests.conftest import BIN, COLLECTIONS, ROOT, ansible_env

AWX_COLLECTIONS = ROOT / '.tmp' / 'ansible-pkg'
PLAYBOOKS = [BOOTSTRAP, PROJECT / 'enforce.yml', PROJECT / 'audit.yml']
# What the controller hides in a job's stored environment (awx build_safe_env: names matching API|TOKEN|KEY|SECRET|PASS).
CONTROLLER_MASKED_NAMES = re.compile('API|TOKEN|KEY|SECRET|PASS', re.I)

# A stand-in for every awx.awx module the bootstrap uses: records the task's arguments as the module would get them.
STUB_ACTION = '''
from __future__ import annotations

import json
import os

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        super().run(tmp, task_vars)
        with open(os.environ['AWX_STUB_LOG'], 'a', encoding='utf-8') as log:
            log.write(json.dumps(dict(module=self._task.action, args=self._task.args, no_log=self._task.no_log), default=str) + '\\n')
        # Like a real module: the result echoes its arguments, so a task without no_log would print them.
        return dict(changed=True, invocation=dict(module_args=self._task.args))
'''


def _env(collections):
    return ansible_env(ANSIBLE_COLLECTIONS_PATH=os.pathsep.join(str(c) for c in collections))


def _needs_awx_collection():
    assert (AWX_COLLECTIONS / 'ansible_collections' / 'awx' / 'awx').is_dir(), (
        'awx.awx is missing: pip install --no-deps --target .tmp/ansible-pkg ansible==<12.x> (see the Makefile)')


def _bootstrap_modules():
    plays = yaml.safe_load(BOOTSTRAP.read_text())
    return sorted({key.split('.')[-1] for play in plays for task in play['tasks'] for key in task if key.startswith('awx.awx.')})


def test_syntax_check():
    _needs_awx_collection()
    proc = subprocess.run([str(BIN / 'ansible-playbook'), '--syntax-check'] + [str(p) for p in PLAYBOOKS],
                          env=_env([COLLECTIONS, AWX_COLLECTIONS]), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ansible_lint_production():
    _needs_awx_collection()
    proc = subprocess.run([str(BIN / 'ansible-lint'), '--profile', 'production', '--offline', '--nocolor', 'extensions/'], cwd=ROOT,
                          env=_env([COLLECTIONS, AWX_COLLECTIONS]), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr


def test_credential_type_injects_what_the_collection_reads():
    from ansible_collections.mailsec.sendgrid.plugins.inventory.subusers import DOCUMENTATION
    from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import CONNECTION_ARGUMENT_SPEC

    # What the inventory plugin reads (its options' env: entries) and what the modules fall back to.
    inventory_env = {entry['name'] for option in yaml.safe_load(DOCUMENTATION)['options'].values() for entry in option.get('env', ())}
    module_env = {name for option in CONNECTION_ARGUMENT_SPEC.values() for name in (option.get('fallback') or (None, ()))[1]}

    definition = yaml.safe_load((AWX / 'credential_type.yml').read_text())
    assert definition['name'] == 'SendGrid API' and definition['kind'] == 'cloud'
    fields = {field['id']: field for field in definition['inputs']['fields']}
    assert sorted(fields) == ['api_key', 'api_url', 'region']
    assert fields['api_key']['secret'] is True and definition['inputs']['required'] == ['api_key']
    assert fields['region']['choices'] == ['global', 'eu'] and fields['region']['default'] == 'global'
    assert not fields['region'].get('secret') and not fields['api_url'].get('secret')
    injected = definition['injectors']['env']
    # The very variables the inventory plugin, the modules and the fleet action fall back to.
    assert sorted(injected) == sorted(inventory_env) == sorted(module_env) == ['SENDGRID_API_KEY', 'SENDGRID_API_URL', 'SENDGRID_REGION']
    # The controller masks the key's variable in the job's stored environment by its name.
    assert CONTROLLER_MASKED_NAMES.search('SENDGRID_API_KEY')

    def inject(**inputs):
        # As the controller renders injectors: a Jinja sandbox, only the inputs that have a value in the namespace.
        sandbox = ImmutableSandboxedEnvironment()
        namespace = {name: value for name, value in inputs.items() if value}
        return {name: sandbox.from_string(template).render(**namespace) for name, template in injected.items()}

    assert inject(api_key='k', region='eu', api_url='https://tls12.api.sendgrid.com') == dict(
        SENDGRID_API_KEY='k', SENDGRID_REGION='eu', SENDGRID_API_URL='https://tls12.api.sendgrid.com')
    # A credential made through the API with the key alone still works: region global, no URL override.
    assert inject(api_key='k') == dict(SENDGRID_API_KEY='k', SENDGRID_REGION='global', SENDGRID_API_URL='')
    assert inject(api_key='k', region='', api_url='') == dict(SENDGRID_API_KEY='k', SENDGRID_REGION='global', SENDGRID_API_URL='')


def test_bootstrap_sends_the_controller_the_expected_objects(tmp_path):
    """Run the bootstrap for real, with stand-in awx.awx modules, at -vvv: what reaches the controller, and what is printed."""
    stub = tmp_path / 'stub' / 'ansible_collections' / 'awx' / 'awx'
    (stub / 'plugins' / 'action').mkdir(parents=True)
    (stub / 'meta').mkdir()
    (stub / 'meta' / 'runtime.yml').write_text('---\nrequires_ansible: ">=2.16"\n')
    for module in _bootstrap_modules():
        (stub / 'plugins' / 'action' / ('%s.py' % module)).write_text(STUB_ACTION)
    secret = 'SG.bootstrap-secret-9d1e-never-print'
    variables = tmp_path / 'vars.yml'
    variables.write_text(yaml.safe_dump(dict(sendgrid_api_key=secret, sendgrid_project_scm_url='https://git.example.com/mail/tls.git',
                                             sendgrid_job_slice_count=4, sendgrid_ee_image='registry.example.com/sendgrid-ee:0.1.0')))
    log = tmp_path / 'sent.jsonl'
    env = _env([tmp_path / 'stub', COLLECTIONS])
    env['AWX_STUB_LOG'] = str(log)
    proc = subprocess.run([str(BIN / 'ansible-playbook'), str(BOOTSTRAP), '-e', '@%s' % variables, '-vvv'], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert secret not in output
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    calls = {}
    for call in sent:
        calls.setdefault(call['module'].split('.')[-1], []).append(call['args'])
    assert [c['module'] for c in sent] == ['awx.awx.' + m for m in (
        'execution_environment', 'credential_type', 'credential', 'project', 'inventory', 'inventory_source', 'job_template',
        'job_template', 'schedule')]

    definition = yaml.safe_load((AWX / 'credential_type.yml').read_text())
    (credential_type,) = calls['credential_type']
    # The injector placeholders reach the controller as written: Ansible did not render them.
    assert credential_type['injectors'] == definition['injectors'] and credential_type['inputs'] == definition['inputs']
    assert credential_type['name'] == 'SendGrid API'
    (credential,) = calls['credential']
    assert credential['credential_type'] == 'SendGrid API' and credential['inputs']['api_key'] == secret
    assert [c['no_log'] for c in sent if c['module'] == 'awx.awx.credential'] == [True]

    (project,) = calls['project']
    (source,) = calls['inventory_source']
    assert source['source'] == 'scm' and source['source_project'] == project['name']
    assert source['credential'] == credential['name'] and source['inventory'] == calls['inventory'][0]['name']
    # The project's inventory directory has the plugin file the source names (a name the plugin accepts).
    assert (PROJECT / source['source_path']).is_file() and source['source_path'].endswith('sendgrid.yml')
    assert yaml.safe_load((PROJECT / source['source_path']).read_text())['plugin'] == 'mailsec.sendgrid.subusers'

    templates = {t['name']: t for t in calls['job_template']}
    assert sorted(templates) == ['Audit enforced TLS', 'Enforce TLS policy']
    for template in templates.values():
        assert template['project'] == project['name'] and template['credentials'] == [credential['name']]
        assert template['execution_environment'] == 'SendGrid EE' and (PROJECT / template['playbook']).is_file()
    enforce = templates['Enforce TLS policy']
    assert enforce['job_slice_count'] == 4 and enforce['survey_enabled'] is True and enforce['ask_limit_on_launch'] is True
    assert [q['variable'] for q in enforce['survey_spec']['spec']] == sorted(survey_defaults(job_template('Enforce TLS policy')))
    (schedule,) = calls['schedule']
    assert schedule['unified_job_template'] == 'Audit enforced TLS' and 'RRULE:FREQ=DAILY' in schedule['rrule']


def test_bootstrap_refuses_to_run_without_key_or_project(tmp_path):
    proc = subprocess.run([str(BIN / 'ansible-playbook'), str(BOOTSTRAP)], env=_env([COLLECTIONS, AWX_COLLECTIONS]), cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and 'Set sendgrid_api_key' in proc.stdout, proc.stdout + proc.stderr


def test_job_templates():
    """The two templates the runner tests run: project playbooks, job types, survey, limit and slicing prompts."""
    audit = job_template('Audit enforced TLS')
    enforce = job_template('Enforce TLS policy')
    assert (audit['playbook'], audit['job_type'], audit['diff_mode']) == ('audit.yml', 'check', True)
    assert (enforce['playbook'], enforce['job_type'], enforce['diff_mode']) == ('enforce.yml', 'run', True)
    assert 'audit_report_dir' in audit['extra_vars']
    assert enforce['ask_limit_on_launch'] is True and 'sendgrid_job_slice_count' in enforce['job_slice_count']
    assert sorted(survey_defaults(enforce)) == ['enforced_tls_policy_require_tls', 'enforced_tls_policy_require_valid_cert',
                                                'enforced_tls_policy_version']
    for question in enforce['survey_spec']['spec']:
        assert question['required'] is True and question['default'] in question['choices'], question
    assert template_cmdline(audit) == ['--check', '--diff'] and template_cmdline(enforce) == ['--diff']
    for name in ('enforce', 'audit'):
        plays = yaml.safe_load((PROJECT / ('%s.yml' % name)).read_text())
        assert [play['ansible.builtin.import_playbook'] for play in plays] == ['mailsec.sendgrid.' + name]
    requirements = yaml.safe_load((PROJECT / 'collections' / 'requirements.yml').read_text())
    assert [c['name'] for c in requirements['collections']] == ['mailsec.sendgrid']
