# -*- coding: utf-8 -*-
"""Job slicing, the controller's way to scale out: slices of one enforce job run side by side on different nodes.

The controller gives slice k of n the hosts k, k+n, k+2n... of the inventory (round-robin), each slice a job of its
own that shares nothing with the others. Here each slice is a controller job (ansible-runner, its own private data directory) limited to its hosts,
and the three run at the same time against one simulator. Each slice gets its own API key (the simulator accepts
all of them), so the simulator's request log tells which slice made each request.
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from tests.awx.controller_job import ControllerJob, job_template, survey_defaults, template_cmdline
from tests.conftest import API_KEY

SLICES = 3
SUBUSERS = 90
COMPLIANT = dict(require_tls=True, require_valid_cert=True, version=1.2)
SETTINGS_PATH = '/v3/user/settings/enforced_tls'


@pytest.fixture
def slice_sim():
    from tests.simulator.sendgrid_sim import Simulator

    simulator = Simulator(api_keys=[API_KEY] + [_key(k) for k in range(1, SLICES + 1)])
    simulator.start()
    yield simulator
    simulator.stop()


def _key(slice_number):
    return 'slice-%d-key-0c7e' % slice_number


def _slice_of(request):
    return request['headers']['authorization'].split(' ', 1)[1]


def _window(job):
    events = {e['event']: e['created'] for e in job.events() if e['event'] in ('playbook_on_start', 'playbook_on_stats')}
    return datetime.fromisoformat(events['playbook_on_start']), datetime.fromisoformat(events['playbook_on_stats'])


def test_slices_converge_disjoint_subusers_concurrently(slice_sim, tmp_path):
    sim = slice_sim
    names = sim.populate_subusers(SUBUSERS, drift_mixed=True)
    drifted = {n for n in names if sim.settings(n) != COMPLIANT}
    template = job_template('Enforce TLS policy')
    # The controller's partition: slice k (1-based) of n gets hosts[k - 1::n].
    partition = {k: sorted(names)[k - 1::SLICES] for k in range(1, SLICES + 1)}
    assert sorted(sum(partition.values(), [])) == names

    jobs = {}
    for k, hosts in partition.items():
        job = ControllerJob(tmp_path, 300 + k, _key(k), sim.url)
        jobs[k] = job.prepare(template['playbook'], survey_defaults(template), template_cmdline(template, limit=','.join(hosts)))
    # Answers in 300 ms: each slice's HTTP work lasts seconds, so the slices overlap clearly even when a busy machine
    # starts their ansible-runner processes unevenly.
    sim.latency = 0.3
    started = time.monotonic()
    procs = {k: job.start() for k, job in jobs.items()}
    try:
        outputs = {k: proc.communicate(timeout=180)[0] for k, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - started

    for k, job in jobs.items():
        assert procs[k].returncode == 0 and job.status == 'successful', job.describe() + outputs[k]
        res = job.fleet_result()['res']
        # Each slice saw and converged its own subusers, and no other.
        assert sorted(item['host'] for item in res['results']) == partition[k]
        assert sorted(res['summary']['changed']) == sorted(drifted & set(partition[k]))

    by_slice = {k: [r for r in sim.requests if _slice_of(r) == _key(k)] for k in partition}
    assert sum(len(requests) for requests in by_slice.values()) == len(sim.requests)
    for k, requests in by_slice.items():
        # Each slice is its own ansible-playbook run: one preflight read of the parent account each.
        assert len([r for r in requests if r['path'] == SETTINGS_PATH and r['on_behalf_of'] is None]) == 1
        settings = [r for r in requests if r['path'] == SETTINGS_PATH and r['on_behalf_of'] is not None]
        # Every request a slice made about an account was about one of its own subusers...
        assert {r['on_behalf_of'] for r in settings} == set(partition[k])
        # ...one GET each, and a PATCH for exactly its drifted ones.
        assert sorted(r['on_behalf_of'] for r in settings if r['method'] == 'GET') == partition[k]
        assert sorted(r['on_behalf_of'] for r in settings if r['method'] == 'PATCH') == sorted(drifted & set(partition[k]))
        # The only other request: the slice's own inventory listing (the controller would have synced it once).
        assert [r['path'] for r in requests if r['path'] != SETTINGS_PATH] == ['/v3/subusers']
    # The slices ran side by side: each started (playbook_on_start event) before any of them had finished.
    windows = {k: _window(job) for k, job in jobs.items()}
    assert max(start for start, _end in windows.values()) < min(end for _start, end in windows.values()), windows
    # No state between slices: separate private data directories, temporary directories and records.
    assert len({job.dir for job in jobs.values()}) == SLICES and all((job.dir / 'tmp').is_dir() for job in jobs.values())
    # Together they converged the whole fleet.
    assert all(sim.settings(n) == COMPLIANT for n in names)
    assert elapsed < 120

    # The whole inventory again, unsliced: all compliant, not one write.
    sim.latency = 0
    sim.clear_log()
    rerun = ControllerJob(tmp_path, 310, API_KEY, sim.url).prepare(template['playbook'], survey_defaults(template), template_cmdline(template))
    rc, output = rerun.run()
    assert rc == 0 and rerun.status == 'successful', rerun.describe() + output
    res = rerun.fleet_result()['res']
    assert sorted(res['summary']['compliant']) == names and res['changed'] is False
    assert sim.count('PATCH') == 0 and sim.count('GET', SETTINGS_PATH) == SUBUSERS + 1
