# -*- coding: utf-8 -*-
"""The AWX way: the project's enforce and audit playbooks run as controller jobs (ansible-runner), against the simulator.

Each job is what the bootstrap playbook's job template makes the controller run: the template's playbook,
job type (check: --check), diff mode (--diff), extra variables and survey answers (strings, as the controller
sends them), the "SendGrid API" credential's environment variables, and the project's inventory directory
(the subusers plugin file and group_vars). The assertions read what the controller keeps: status and job events.
"""

from __future__ import annotations

import json

from tests.awx.controller_job import ControllerJob, files_containing, job_template, survey_defaults, template_cmdline
from tests.conftest import API_KEY
from tests.contract.openapi_check import validate_logged_requests

COMPLIANT = dict(require_tls=True, require_valid_cert=True, version=1.2)
SETTINGS_PATH = '/v3/user/settings/enforced_tls'


def _job(sim, tmp_path, ident, template_name, job_type=None, verbosity=0, api_key=API_KEY, extravars=None):
    template = job_template(template_name)
    variables = dict(template.get('extra_vars') or {}, **survey_defaults(template))
    variables.update(extravars or {})
    job = ControllerJob(tmp_path, ident, api_key, sim.url)
    return job.prepare(template['playbook'], variables, template_cmdline(template, job_type=job_type, verbosity=verbosity))


def _finished(job):
    rc, output = job.run()
    assert rc == 0 and job.status == 'successful', job.describe() + output
    return job.fleet_result()


def _assert_no_leak(jobs, secret):
    """The key is in the job's input (env/envvars) and in ansible-runner's record of the job's environment, nowhere else."""
    for job in jobs:
        command = job.artifacts.relative_to(job.dir) / 'command'
        assert files_containing(job.dir, secret) == sorted(['env/envvars', str(command)]), job.ident
        # ansible-runner writes the job's whole environment to artifacts/<ident>/command; the controller stores it
        # masked (variable names with KEY are hidden) and deletes the directory after the job. The key must be in
        # that environment only, as the credential's variable, not on the command line or in any other entry.
        record = json.loads((job.dir / command).read_text())
        assert record['env'].pop('SENDGRID_API_KEY') == secret
        assert secret not in json.dumps(record), job.ident


def test_enforce_check_run_rerun_and_audit_as_controller_jobs(sim, tmp_path):
    names = sim.populate_subusers(30, drift_mixed=True)
    drifted = sorted(n for n in names if sim.settings(n) != COMPLIANT)
    assert 0 < len(drifted) < 30, 'the seed must give both drifted and compliant subusers'
    reports = tmp_path / 'reports'
    reports.mkdir()
    jobs = []

    # 1. The scheduled audit: job type check, diff on, read-only.
    audit = _job(sim, tmp_path, 101, 'Audit enforced TLS', extravars=dict(audit_report_dir=str(reports)))
    jobs.append(audit)
    result = _finished(audit)
    assert sorted(result['res']['summary']['would_change']) == drifted
    # One preflight read of the parent account, then one GET per subuser.
    assert sim.count('PATCH') == 0 and sim.count('GET', SETTINGS_PATH) == 31
    report = json.loads((reports / 'enforced_tls_audit.json').read_text())
    assert report['totals'] == dict(subusers=30, compliant=30 - len(drifted), drifted=len(drifted), failed=0)

    # 2. "Enforce TLS policy" launched as a check job (the template prompts for the job type), at verbosity 3.
    sim.clear_log()
    check = _job(sim, tmp_path, 102, 'Enforce TLS policy', job_type='check', verbosity=3)
    jobs.append(check)
    result = _finished(check)
    res = result['res']
    assert not res['changed'] or res['summary']['changed'] == []
    assert sorted(res['summary']['would_change']) == drifted and res['summary']['changed'] == []
    assert sorted(res['summary']['compliant']) == sorted(set(names) - set(drifted)) and res['failed_hosts'] == {}
    per_host = {item['host']: item for item in res['results']}
    assert sorted(per_host) == names
    # The survey's answers arrive as strings ("true", "1.2"); the policy the action applied is typed.
    assert all(item['desired'] == dict(require_tls=True, require_valid_cert=True, version='1.2') for item in per_host.values())
    assert sorted(d['before_header'] for d in res['diff']) == drifted
    assert sim.count('PATCH') == 0 and sim.count('GET', SETTINGS_PATH) == 31

    # 3. The real run: one PATCH per drifted subuser, and only those.
    sim.clear_log()
    run = _job(sim, tmp_path, 103, 'Enforce TLS policy')
    jobs.append(run)
    result = _finished(run)
    res = result['res']
    assert res['changed'] is True
    assert sorted(res['summary']['changed']) == drifted and res['summary']['would_change'] == []
    assert sorted(r['on_behalf_of'] for r in sim.requests if r['method'] == 'PATCH') == drifted
    assert all(sim.settings(n) == COMPLIANT for n in names)
    validate_logged_requests(sim.requests)

    # 4. Again: nothing to do.
    sim.clear_log()
    again = _job(sim, tmp_path, 104, 'Enforce TLS policy')
    jobs.append(again)
    result = _finished(again)
    assert result['res']['changed'] is False and sorted(result['res']['summary']['compliant']) == names
    assert sim.count('PATCH') == 0 and sim.count('GET', SETTINGS_PATH) == 31
    stats = [e for e in again.events() if e['event'] == 'playbook_on_stats'][0]['event_data']
    assert not stats['changed'] and not stats['failures']

    # 5. The next scheduled audit finds no drift.
    sim.clear_log()
    audit_after = _job(sim, tmp_path, 105, 'Audit enforced TLS', extravars=dict(audit_report_dir=str(reports)))
    jobs.append(audit_after)
    result = _finished(audit_after)
    assert sorted(result['res']['summary']['compliant']) == names and sim.count('PATCH') == 0

    _assert_no_leak(jobs, API_KEY)


def test_wrong_key_fails_the_job_without_printing_the_key(sim, tmp_path):
    sim.populate_subusers(3)
    bad_key = 'bad-key-55aa-do-not-print'
    job = _job(sim, tmp_path, 201, 'Enforce TLS policy', api_key=bad_key, verbosity=3)
    rc, output = job.run()
    assert rc != 0 and job.status == 'failed', job.describe() + output
    assert 'HTTP 401 Unauthorized on GET /v3/subusers' in job.stdout
    assert [r['path'] for r in sim.requests] == ['/v3/subusers']
    _assert_no_leak([job], bad_key)
