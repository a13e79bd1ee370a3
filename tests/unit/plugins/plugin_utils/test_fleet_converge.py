# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet engine's converge against the simulator: a subuser whose previous settings cannot be recorded fails under
its own name and is not written, although a SnapshotError is not a SendGridError (nothing was sent to SendGrid)."""

from __future__ import annotations

from ansible import constants as C

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import SendGridError
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._fleet_converge import converge_accounts
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._snapshot import SnapshotError
from tests.conftest import API_KEY


def _account(sim, snapshot_dir, host='sub0001'):
    connection = dict(api_key=API_KEY, region='global', api_url=sim.url, timeout=5.0, max_retries=0)
    return dict(host=host, on_behalf_of=host, desired=dict(require_tls=True), snapshot_dir=snapshot_dir,
                connection=connection)


def test_snapshot_errors_are_their_own_kind():
    assert not issubclass(SnapshotError, SendGridError)


def test_an_unrecordable_write_fails_that_subuser_and_writes_nothing(sim, tmp_path, monkeypatch):
    monkeypatch.setattr(C, 'DEFAULT_LOCAL_TMP', str(tmp_path / 'run'))
    sim.add_subuser('sub0001')
    sim.add_subuser('sub0002')
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    unrecordable, recordable = _account(sim, str(blocker / 'snapshots')), _account(sim, str(tmp_path / 'snapshots'), 'sub0002')
    results = converge_accounts(unrecordable['connection'], [unrecordable, recordable], False, 2)
    failed = results['sub0001']
    assert failed['failed'] and failed['status'] == 'failed' and failed['on_behalf_of'] == 'sub0001'
    assert failed['msg'].startswith('no snapshot can be written in %s' % (blocker / 'snapshots'))
    assert not results['sub0002']['failed'] and results['sub0002']['snapshot']['recorded'] == ['require_tls']
    assert [entry['path'] for entry in sim.requests if entry['method'] == 'PATCH'] == ['/v3/user/settings/enforced_tls']
    assert sim.settings('sub0001')['require_tls'] is False and sim.settings('sub0002')['require_tls'] is True
