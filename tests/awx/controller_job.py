# -*- coding: utf-8 -*-
"""Run the AWX project's playbooks the way AWX / Automation Controller runs a job: through ansible-runner.

A controller job is an ansible-runner private data directory: ``env/envvars`` holds what the job's
credentials inject (for the "SendGrid API" type: SENDGRID_API_KEY, SENDGRID_REGION, SENDGRID_API_URL),
``env/extravars`` the template's extra variables and survey answers, ``env/cmdline`` the options the
template adds (``--check`` for job type check, ``--diff``, ``--limit``, ``-v``...), ``inventory/`` the
inventory and ``project/`` the synced project. The job's record is ``artifacts/<ident>/``: status, rc,
stdout, command and one JSON file per job event.

The job templates' settings are read from extensions/awx/bootstrap_controller.yml, so a test that runs
"the audit job template" runs what the bootstrap playbook configures in the controller.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import yaml

from tests.conftest import BIN, COLLECTIONS, ROOT, ansible_env

AWX = ROOT / 'extensions' / 'awx'
PROJECT = AWX / 'project'
BOOTSTRAP = AWX / 'bootstrap_controller.yml'
FLEET_ACTION = 'mailsec.sendgrid.enforced_tls_fleet'


def bootstrap_tasks(module):
    """The arguments of every task of the bootstrap playbook that calls awx.awx.<module>, by the object's name."""
    plays = yaml.safe_load(BOOTSTRAP.read_text())
    return {task['awx.awx.' + module]['name']: task['awx.awx.' + module]
            for play in plays for task in play['tasks'] if 'awx.awx.' + module in task}


def job_template(name):
    return bootstrap_tasks('job_template')[name]


def survey_defaults(template):
    """What the controller passes as extra variables when a survey is launched with its default answers."""
    if not template.get('survey_enabled'):
        return {}
    return {question['variable']: question['default'] for question in template['survey_spec']['spec']}


def template_cmdline(template, job_type=None, limit=None, verbosity=0):
    """The ansible-playbook options the controller adds for a job of this template."""
    args = []
    if (job_type or template.get('job_type', 'run')) == 'check':
        args.append('--check')
    if template.get('diff_mode'):
        args.append('--diff')
    if limit:
        args += ['--limit', limit]
    if verbosity:
        args.append('-' + 'v' * verbosity)
    return args


class ControllerJob:
    """One job: a private data directory built like the controller builds it, run with ansible-runner."""

    def __init__(self, base, ident, api_key, api_url, region='global'):
        self.ident = ident
        self.dir = base / ('job-%s' % ident)
        self.credential_env = dict(SENDGRID_API_KEY=api_key, SENDGRID_REGION=region, SENDGRID_API_URL=api_url)

    def prepare(self, playbook, extravars=None, cmdline=(), inventory_files=None):
        """Lay out the private data directory. inventory_files: {relative path: text}; default: the project's inventory."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        env = self.dir / 'env'
        env.mkdir(parents=True)
        # The project as the controller syncs it (the team's repository: playbooks and inventory directory).
        shutil.copytree(PROJECT, self.dir / 'project')
        assert (self.dir / 'project' / playbook).is_file(), 'the job template names %s, which the project lacks' % playbook
        inventory = self.dir / 'inventory'
        if inventory_files is None:
            shutil.copytree(PROJECT / 'inventory', inventory)
        else:
            for relative, text in inventory_files.items():
                (inventory / relative).parent.mkdir(parents=True, exist_ok=True)
                (inventory / relative).write_text(text)
        envvars = dict(
            self.credential_env,
            # Where the controller (or the execution environment) has the collections.
            ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
            # Each job on its own: no temporary files shared with another job (an EE job has its own container).
            ANSIBLE_LOCAL_TEMP=str(self.dir / 'tmp'),
            # A controller job whose inventory sync failed does not run; the same when the job reads the plugin itself.
            ANSIBLE_INVENTORY_UNPARSED_FAILED='true',
        )
        (env / 'envvars').write_text(yaml.safe_dump(envvars))
        (env / 'extravars').write_text(yaml.safe_dump(dict(extravars or {}, awx_job_id=self.ident, awx_job_launch_type='manual')))
        (env / 'settings').write_text(yaml.safe_dump(dict(job_timeout=120, suppress_ansible_output=True)))
        (env / 'cmdline').write_text(shlex.join(cmdline))
        self.playbook = playbook
        return self

    def command(self):
        return [str(BIN / 'ansible-runner'), 'run', str(self.dir), '-p', self.playbook, '--ident', str(self.ident)]

    def start(self):
        """Start the job without waiting (for jobs running side by side, as the slices of a sliced job do)."""
        return subprocess.Popen(self.command(), env=self._runner_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def run(self):
        proc = subprocess.run(self.command(), env=self._runner_env(), capture_output=True, text=True, timeout=180, check=False)
        return proc.returncode, proc.stdout + proc.stderr

    @staticmethod
    def _runner_env():
        # The runner process itself knows nothing of SendGrid: the key reaches the job only through env/envvars.
        return ansible_env()

    # --- the job's record --------------------------------------------------------------------------------------------

    @property
    def artifacts(self):
        return self.dir / 'artifacts' / str(self.ident)

    @property
    def status(self):
        return (self.artifacts / 'status').read_text().strip()

    @property
    def rc(self):
        return int((self.artifacts / 'rc').read_text().strip())

    @property
    def stdout(self):
        return (self.artifacts / 'stdout').read_text()

    def events(self):
        files = sorted(self.artifacts.glob('job_events/*.json'), key=lambda path: int(path.name.split('-', 1)[0]))
        return [json.loads(path.read_text()) for path in files]

    def fleet_result(self):
        """Each subuser's result of the role's converge (or audit) task, as the controller stores them: one runner_on_ok
        or runner_on_failed event per host. Gathered into one record shaped like batch mode's single result."""
        results = [dict(event['event_data']['res'], host=event['event_data']['host']) for event in self.events()
                   if event['event'] in ('runner_on_ok', 'runner_on_failed')
                   and event['event_data'].get('task_action') == FLEET_ACTION and 'status' in event['event_data']['res']]
        assert results, 'no per-subuser event of %s; stdout:\n%s' % (FLEET_ACTION, self.stdout)
        assert len({r['host'] for r in results}) == len(results), 'more than one event for a subuser'
        summary = {status: sorted(r['host'] for r in results if r['status'] == status)
                   for status in ('compliant', 'changed', 'would_change', 'failed')}
        return dict(res=dict(results=results, summary=summary, changed=any(r['changed'] for r in results),
                             failed_hosts={r['host']: r['msg'] for r in results if r['status'] == 'failed'},
                             diff=[dict(r['diff'], before_header=r['host']) for r in results if r.get('diff')]))

    def describe(self):
        return 'job %s: status %s\n%s' % (self.ident, self.status if (self.artifacts / 'status').exists() else '?',
                                          self.stdout if (self.artifacts / 'stdout').exists() else '')


def files_containing(directory, secret):
    """The files under directory (relative paths) whose bytes contain secret."""
    needle = secret.encode()
    return sorted(str(path.relative_to(directory)) for path in directory.rglob('*') if path.is_file() and needle in path.read_bytes())
