# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Each action plugin's argument spec is what its module stub documents: names, types, elements, choices, defaults.

ansible-doc shows the stub; Ansible validates with the spec. Nothing else holds the two together.
"""

from __future__ import annotations

import importlib
import pathlib

import pytest
import yaml

PLUGINS = pathlib.Path(__file__).resolve().parents[4] / 'plugins'
ACTIONS = sorted(path.stem for path in (PLUGINS / 'action').glob('*.py') if not path.name.startswith('_'))


def _documented(name):
    namespace = {}
    exec(compile((PLUGINS / 'modules' / ('%s.py' % name)).read_text(encoding='utf-8'), name, 'exec'), namespace)  # pylint: disable=exec-used
    return yaml.safe_load(namespace['DOCUMENTATION'])['options']


def _shape(option):
    """What both sides must agree on, with Ansible's defaults made explicit (type str, no default, no choices)."""
    return dict(type=option.get('type', 'str'), elements=option.get('elements'), choices=option.get('choices'),
                default=option.get('default'), required=option.get('required', False))


def test_every_action_has_a_documented_module_stub():
    assert ACTIONS
    for name in ACTIONS:
        assert (PLUGINS / 'modules' / ('%s.py' % name)).is_file(), name


@pytest.mark.parametrize('name', ACTIONS)
def test_the_argument_spec_is_the_documented_one(name):
    action = importlib.import_module('ansible_collections.mailsec.sendgrid.plugins.action.%s' % name).ActionModule
    spec = {option: _shape(values) for option, values in action.ARGUMENT_SPEC.items()}
    documented = {option: _shape(values) for option, values in _documented(name).items()}
    assert sorted(spec) == sorted(documented)
    for option, shape in spec.items():
        assert shape == documented[option], option
