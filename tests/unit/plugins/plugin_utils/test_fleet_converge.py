# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet engine's converge (the HTTP conversation canned): a subuser whose previous settings cannot be recorded fails
under its own name and is not written, although a SnapshotError is not a SendGridError (nothing was sent to SendGrid)."""

from __future__ import annotations

from ansible import constants as C

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import SendGridError
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._fleet_converge import converge_accounts
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._snapshot import SnapshotError
from ansible_collections.mailsec.sendgrid.tests.unit.http_conversation import answer

KEY = 'unit-key-0123456789'
STATE = dict(require_tls=False, require_valid_cert=False, version=1.1)


def _account(host, snapshot_dir):
    return dict(host=host, on_behalf_of=host, desired=dict(require_tls=True), snapshot_dir=snapshot_dir,
                connection=dict(api_key=KEY, region='global', api_url=None, timeout=5.0, max_retries=0))


def test_snapshot_errors_are_their_own_kind():
    assert not issubclass(SnapshotError, SendGridError)


def test_an_unrecordable_write_fails_that_subuser_and_writes_nothing(conversation, tmp_path, monkeypatch):
    monkeypatch.setattr(C, 'DEFAULT_LOCAL_TMP', str(tmp_path / 'run'))
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    conv = conversation([answer(body=STATE), answer(body=STATE), answer(body=dict(STATE, require_tls=True))])
    accounts = [_account('sub0001', str(blocker / 'snapshots')), _account('sub0002', str(tmp_path / 'snapshots'))]
    results = converge_accounts(accounts[0]['connection'], accounts, False, 1)
    failed = results['sub0001']
    assert failed['failed'] and failed['status'] == 'failed' and failed['on_behalf_of'] == 'sub0001'
    assert failed['msg'].startswith('no snapshot can be written in %s' % (blocker / 'snapshots'))
    assert not results['sub0002']['failed'] and results['sub0002']['snapshot']['recorded'] == ['require_tls']
    assert [(call['method'], call['headers']['on-behalf-of']) for call in conv.calls] == [
        ('GET', 'sub0001'), ('GET', 'sub0002'), ('PATCH', 'sub0002')]
