# -*- coding: utf-8 -*-
"""The User-Agent's version is written by hand (an installed collection has no galaxy.yml to read at run time): it must
be galaxy.yml's, or every request of a release would name the wrong version."""

from __future__ import annotations

from pathlib import Path

import yaml

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import COLLECTION_VERSION, USER_AGENT

GALAXY = Path(__file__).resolve().parents[4] / 'galaxy.yml'


def test_collection_version_is_galaxy_yml_version():
    version = yaml.safe_load(GALAXY.read_text(encoding='utf-8'))['version']
    assert COLLECTION_VERSION == str(version), (
        'COLLECTION_VERSION in plugins/module_utils/_api.py is %r but galaxy.yml says version: %s; change both together'
        % (COLLECTION_VERSION, version))
    assert USER_AGENT == 'mailsec.sendgrid/%s (Ansible collection)' % version
