# -*- coding: utf-8 -*-
"""Shared test fixtures: the collection on Ansible's path, the SendGrid simulator, real ansible-playbook runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.utils.collection_loader import AnsibleCollectionConfig

ROOT = Path(__file__).resolve().parent.parent
if ROOT.parts[-3:] == ('ansible_collections', 'mailsec', 'sendgrid'):
    # Already where Ansible looks for collections (ansible-test's copy): no link needed.
    COLLECTIONS = ROOT.parents[2]
else:
    COLLECTIONS = ROOT / '.tmp' / 'collections'
LINK = COLLECTIONS / 'ansible_collections' / 'mailsec' / 'sendgrid'
BIN = Path(sys.executable).parent
# Recognisable, so that a leak is easy to grep for; shaped nothing like a real SendGrid key.
API_KEY = 'test-key-7f3c9e1d-never-print-me'

if not LINK.exists():
    LINK.parent.mkdir(parents=True, exist_ok=True)
    LINK.symlink_to(Path('..', '..', '..', '..'))
os.environ['ANSIBLE_COLLECTIONS_PATH'] = str(COLLECTIONS)
if AnsibleCollectionConfig.collection_finder is None:
    # ansible_collections.* is imported through Ansible's collection loader, as under ansible-test (whose pytest plugin
    # has installed it already): one way under both runners, and plugins load as Ansible loads them.
    from ansible.plugins.loader import init_plugin_loader
    init_plugin_loader()


@pytest.fixture
def sim():
    from tests.simulator.sendgrid_sim import Simulator

    simulator = Simulator(api_keys=(API_KEY,))
    simulator.start()
    yield simulator
    simulator.stop()


def ansible_env(**extra):
    env = {key: value for key, value in os.environ.items() if not key.startswith(('ANSIBLE_', 'SENDGRID_'))}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false',
        ANSIBLE_NOCOLOR='1',
        ANSIBLE_FORCE_COLOR='0',
        ANSIBLE_RETRY_FILES_ENABLED='0',
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_LOCALHOST_WARNING='0',
        ANSIBLE_INVENTORY_UNPARSED_WARNING='0',
        ANSIBLE_DEPRECATION_WARNINGS='0',
        ANSIBLE_LOCAL_TEMP=str(ROOT / '.tmp' / 'ansible-local'),
        PATH=str(BIN) + os.pathsep + env.get('PATH', ''),
    )
    env.update({key: str(value) for key, value in extra.items()})
    return env


class PlaybookRun:
    def __init__(self, proc, results_file):
        self.rc = proc.returncode
        # ansible-core < 2.19 prints results as JSON, so quotes in messages arrive escaped.
        self.stdout = proc.stdout.replace('\\"', '"')
        self.stderr = proc.stderr
        self.output = self.stdout + proc.stderr
        self._results_file = results_file

    @property
    def results(self):
        """What the playbook saved with the `save` helper task (see `playbook` fixture)."""
        return json.loads(self._results_file.read_text()) if self._results_file.exists() else {}

    def recap(self, host='localhost'):
        for line in self.stdout.splitlines():
            if line.startswith(host + ' ') and 'ok=' in line:
                return {k: int(v) for k, v in (item.split('=') for item in line.split(':', 1)[1].split())}
        raise AssertionError('no recap for %s in:\n%s' % (host, self.output))


@pytest.fixture
def run_playbook(tmp_path):
    """Run a real ansible-playbook. `tasks` is a list of tasks for a localhost play, or `playbook` a full play list.

    Tasks may `register` a result; a final task saves every registered name listed in `save` to a JSON file
    (with check_mode off, so it also works in --check runs): PlaybookRun.results.
    """
    def run(tasks=None, playbook=None, args=(), save=(), inventory=None, env=None, check=False, diff=False, verbosity=0,
            playbook_name=None):
        results_file = tmp_path / ('results-%d.json' % len(list(tmp_path.glob('results-*.json*'))))
        if playbook_name:
            path = playbook_name
        elif playbook is None:
            save_task = dict(name='Save results', **{
                'ansible.builtin.copy': dict(content='{{ %s | to_json }}' % ('{' + ', '.join(
                    '"%s": %s | default(None)' % (name, name) for name in save) + '}'), dest=str(results_file)),
                'check_mode': False, 'changed_when': False})
            playbook = [dict(name='Test play', hosts='localhost', gather_facts=False,
                             tasks=list(tasks) + ([save_task] if save else []))]
        if not playbook_name:
            path = tmp_path / 'playbook.yml'
            path.write_text(yaml.safe_dump(playbook, sort_keys=False))
        cmd = [str(BIN / 'ansible-playbook'), str(path)]
        cmd += ['-i', str(inventory)] if inventory else ['-i', 'localhost,', '-c', 'local']
        if check:
            cmd.append('--check')
        if diff:
            cmd.append('--diff')
        if verbosity:
            cmd.append('-' + 'v' * verbosity)
        cmd += list(args)
        proc = subprocess.run(cmd, env=ansible_env(**(env or {})), capture_output=True, text=True, timeout=600, check=False, cwd=str(tmp_path))
        run = PlaybookRun(proc, results_file)
        run.cmd = cmd
        return run
    return run
