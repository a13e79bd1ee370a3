# -*- coding: utf-8 -*-
"""The collection's rulebook under the real ansible-rulebook (its own venv, .tmp/eda-venv: `make eda-venv`, and Java),
against the simulator: a drifted subuser is healed by the enforce playbook alone, a TLS block becomes one event."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml

from tests.conftest import API_KEY, COLLECTIONS, ROOT, ansible_env
from tests.simulator.sendgrid_sim import COMPLIANT_SETTINGS, DEFAULT_SETTINGS, ENFORCED_TLS_PATH, TLS_BLOCK_REASON

EDA_BIN = ROOT / '.tmp' / 'eda-venv' / 'bin'
POLICY = dict(enforced_tls_policy_require_tls=True, enforced_tls_policy_require_valid_cert=True,
              enforced_tls_policy_version='1.2')
INTERVAL = 2


def wait_for(condition, timeout, what, output=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.2)
    raise AssertionError('%s not within %d s; ansible-rulebook said:\n%s' % (what, timeout, output() if output else ''))


def received_events(output):
    """The events ansible-rulebook received (--print-events prints each under a "[received event]" banner)."""
    return [part for part in output.split('\n** ') if '[received event]' in part.split('\n', 1)[0]]


@pytest.fixture
def rulebook(sim, tmp_path):
    """ansible-rulebook running the collection's enforced_tls_guard rulebook against ``sim``; yields its output reader."""
    if not (EDA_BIN / 'ansible-rulebook').exists():
        pytest.fail('ansible-rulebook is not installed: run `make eda-venv` (make test does)')
    for name in ('sub0001', 'sub0002', 'sub0003'):
        sim.add_subuser(name, settings=dict(COMPLIANT_SETTINGS))
    # Off the policy on purpose and not watched: a healing run that is not limited to its subuser would write here.
    sim.add_subuser('legacy', settings=dict(DEFAULT_SETTINGS))
    inventory = tmp_path / 'inventory' / 'test.sendgrid.yml'
    inventory.parent.mkdir()
    inventory.write_text('plugin: mailsec.sendgrid.subusers\n')
    variables = tmp_path / 'vars.yml'
    variables.write_text(yaml.safe_dump(dict(POLICY, sendgrid_watch_interval=INTERVAL,
                                             sendgrid_watch_subusers=['sub0001', 'sub0002', 'sub0003'])))
    log = tmp_path / 'rulebook.log'
    env = ansible_env(SENDGRID_API_KEY=API_KEY, SENDGRID_API_URL=sim.url)
    # ansible-galaxy (which ansible-rulebook asks where collections are) and the ansible-playbook it runs: its own venv's.
    env['PATH'] = str(EDA_BIN) + os.pathsep + env['PATH']
    env['ANSIBLE_COLLECTIONS_PATH'] = str(COLLECTIONS)
    with log.open('w') as out:
        proc = subprocess.Popen(
            [str(EDA_BIN / 'ansible-rulebook'), '--rulebook', 'mailsec.sendgrid.enforced_tls_guard', '-i', str(inventory),
             '--vars', str(variables), '--print-events'],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path), start_new_session=True)
    try:
        yield lambda: log.read_text(errors='replace')
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_drift_is_healed_and_a_tls_block_is_one_event(sim, rulebook):
    # The first round of the drift source: every subuser read, all compliant, so nothing to do.
    def read_all():
        read = {entry['on_behalf_of'] for entry in sim.requests if entry['path'] == ENFORCED_TLS_PATH}
        return read >= {'sub0001', 'sub0002', 'sub0003'}
    wait_for(read_all, 120, 'the first round of reads', rulebook)
    sim.clear_log()

    # A teammate turns Enforced TLS off for sub0002 in the UI; a recipient domain of sub0003 starts refusing TLS.
    sim.set_settings('sub0002', dict(DEFAULT_SETTINGS))
    sim.add_blocks('sub0003', [dict(email='ops@legacy.example', reason=TLS_BLOCK_REASON)])
    switched_off = time.monotonic()
    healed = wait_for(lambda: sim.settings('sub0002') == COMPLIANT_SETTINGS, 60, 'sub0002 back on the policy', rulebook)
    print('sub0002 healed %.1f s after it was switched off' % (healed - switched_off))

    patches = [entry for entry in sim.requests if entry['method'] == 'PATCH']
    assert patches, rulebook()
    assert {entry['on_behalf_of'] for entry in patches} == {'sub0002'}, patches
    # Compliant again: announced once, and the tls_block once, however many rounds pass.
    wait_for(lambda: 'sub0002 meets the Enforced TLS policy again' in rulebook(), 30, 'the compliant event', rulebook)
    time.sleep(3 * INTERVAL)
    output = rulebook()
    events = received_events(output)
    blocks = [event for event in events if "'type': 'tls_block'" in event]
    assert len(blocks) == 1, output
    assert "'subuser': 'sub0003'" in blocks[0] and "'domain': 'legacy.example'" in blocks[0], output
    assert len([event for event in events if "'type': 'drift'" in event]) == 1, output
    assert len([event for event in events if "'type': 'compliant'" in event]) == 1, output
    assert not [event for event in events if "'type': 'error'" in event], output
    assert sim.settings('sub0001') == sim.settings('sub0003') == COMPLIANT_SETTINGS
    assert sim.settings('legacy') == DEFAULT_SETTINGS
    assert API_KEY not in output
