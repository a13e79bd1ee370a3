# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The impact guardrail's options are written twice, by necessity: the role's engine maps enforced_tls_policy_impact_*
to recipient_tls_info's options in Python (IMPACT_OPTIONS), the impact playbook maps its impact_* variables in YAML
(Ansible takes a task's options from Python only through a templated args:, which it warns is unsafe). This holds them
together: the same options, from the same-named variables, and the same policy variables."""

from __future__ import annotations

import pathlib

import yaml

from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import FIELDS
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._fleet_hosts import IMPACT_OPTIONS, PREFIX

PLAYBOOK = pathlib.Path(__file__).resolve().parents[4] / 'playbooks' / 'impact.yml'


def _preview_task_arguments():
    """The options of the playbook's one recipient_tls_info task, its play's variables resolved one level deep."""
    found = [(task['mailsec.sendgrid.recipient_tls_info'], play.get('vars', {}))
             for play in yaml.safe_load(PLAYBOOK.read_text(encoding='utf-8')) for task in play['tasks']
             if 'mailsec.sendgrid.recipient_tls_info' in task]
    assert len(found) == 1
    return found[0]


def test_the_impact_playbook_passes_the_guardrails_options_from_the_same_named_variables():
    arguments, play_vars = _preview_task_arguments()
    for variable, option in IMPACT_OPTIONS.items():
        if option == 'domains':  # the playbook adds the domains of a file (domains_file) to impact_domains
            assert arguments[option] == '{{ impact_all_domains }}'
            assert '(impact_domains | default([]))' in play_vars['impact_all_domains']
        else:
            assert arguments[option] == '{{ %s | default(omit) }}' % variable, option


def test_the_impact_playbook_judges_the_roles_policy_variables():
    arguments = _preview_task_arguments()[0]
    for field in FIELDS:
        assert arguments[field] == '{{ %s%s | default(omit) }}' % (PREFIX, field), field
