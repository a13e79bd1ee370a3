# -*- coding: utf-8 -*-
"""What several reliability tests (and the fleet bench script) share: fleet inventories and ansible-inventory runs."""

from __future__ import annotations

import json
import subprocess

import yaml

from tests.conftest import BIN, ansible_env

POLICY = dict(enforced_tls_policy_require_tls=True, enforced_tls_policy_require_valid_cert=True, enforced_tls_policy_version='1.2')
# The policy as the simulator stores it (version is a JSON number there).
COMPLIANT = dict(require_tls=True, require_valid_cert=True, version=1.2)


def write_fleet_inventory(directory, api_url, policy=None, plugin_options=None, group_vars_extra=None):
    """An inventory directory as a user would keep it: the subusers plugin file and the policy in group_vars.

    Returns the directory (pass it to -i); host_vars/<subuser>.yml may be added with write_host_vars().
    """
    (directory / 'group_vars').mkdir(parents=True, exist_ok=True)
    (directory / 'host_vars').mkdir(exist_ok=True)
    config = dict(plugin='mailsec.sendgrid.subusers', api_url=api_url, **(plugin_options or {}))
    (directory / 'demo.sendgrid.yml').write_text(yaml.safe_dump(config))
    group_vars = dict(policy if policy is not None else POLICY, enforced_tls_policy_api_url=api_url, **(group_vars_extra or {}))
    (directory / 'group_vars' / 'sendgrid_subusers.yml').write_text(yaml.safe_dump(group_vars))
    return directory


def write_host_vars(inventory, host, **values):
    (inventory / 'host_vars' / ('%s.yml' % host)).write_text(yaml.safe_dump(values))


def run_ansible_inventory(source, *args, env=None, timeout=120):
    """ansible-inventory -i SOURCE ARGS; a source that fails to parse fails the run (instead of a mere warning)."""
    environment = dict(ANSIBLE_INVENTORY_UNPARSED_FAILED='true', **(env or {}))
    return subprocess.run([str(BIN / 'ansible-inventory'), '-i', str(source), *args], env=ansible_env(**environment),
                          capture_output=True, text=True, timeout=timeout, check=False)


def inventory_listing(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout, object_hook=_plain)


def _plain(obj):
    # ansible-core 2.19 marks inventory strings as unsafe in --list output: {"__ansible_unsafe": "eu"}.
    return obj['__ansible_unsafe'] if set(obj) == {'__ansible_unsafe'} else obj


def fault_figures(sim):
    """Figures of a run from the simulator's log: requests, faults it injected, by status and method."""
    summary = sim.log_summary()
    by_status = summary['by_status']
    return dict(
        requests=summary['total'],
        faults=sum(count for status, count in by_status.items() if status in ('429', '500', '502', '503', '504')),
        faults_429=by_status.get('429', 0),
        faults_5xx=sum(count for status, count in by_status.items() if status.startswith('5')),
        gets=summary['by_method'].get('GET', 0),
        patches=summary['by_method'].get('PATCH', 0),
    )
