# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import sys
import time
from typing import Any

DOCUMENTATION = r"""
---
short_description: One event per new SendGrid block caused by TLS, per subuser.
description:
  - An ansible-rulebook event source. Every O(interval) seconds it reads the blocks of each watched subuser
    (C(GET /v3/suppression/blocks) with C(on-behalf-of), paged, in a time window) through the collection's client, and
    keeps those whose reason shows a TLS failure, with the reason matching of the C(mailsec.sendgrid.tls_blocks_info)
    module.
  - 'Each block created since the source started becomes one event
    C({"sendgrid": {"type": "tls_block", "subuser", "email", "domain", "reason", "created"}}), never twice (a block
    is the same when its subuser, address, reason and creation time are). C(created) is epoch seconds.'
  - Each round asks for the blocks created since the newest one seen of that subuser, less 600 seconds (blocks
    SendGrid lists late are still caught), and not before the source started; so a round costs one request per
    subuser unless that many blocks were created.
  - Events carry C(meta.hosts) set to the subuser's name, so a C(run_playbook) action runs on that host alone.
  - Addresses, domains and reasons come from the API and are untrusted; pass them to a playbook as data, never into a
    template or a command.
  - Failures, the key, pacing and bad options as in the C(mailsec.sendgrid.enforced_tls_drift) source (an error
    event once per run of failures of a subuser, a log line each round, never a stop).
options:
  api_key:
    description: As in C(mailsec.sendgrid.enforced_tls_drift) (also E(SENDGRID_API_KEY)); never printed.
    type: str
  region:
    description: As in C(mailsec.sendgrid.enforced_tls_drift) (also E(SENDGRID_REGION)).
    type: str
  api_url:
    description: As in C(mailsec.sendgrid.enforced_tls_drift) (also E(SENDGRID_API_URL)).
    type: str
  timeout:
    description: As in C(mailsec.sendgrid.enforced_tls_drift).
    type: float
  validate_certs:
    description: As in C(mailsec.sendgrid.enforced_tls_drift).
    type: bool
  max_retries:
    description: As in C(mailsec.sendgrid.enforced_tls_drift).
    type: int
  subusers:
    description: Subusers to watch; default every enabled subuser with a plain name (as in C(mailsec.sendgrid.enforced_tls_drift)).
    type: list
    elements: str
  interval:
    description: Seconds from the start of one round to the start of the next (default 300).
    type: float
  refresh_interval:
    description: As in C(mailsec.sendgrid.enforced_tls_drift) (default 3600).
    type: float
  concurrency:
    description: As in C(mailsec.sendgrid.enforced_tls_drift) (default 4).
    type: int
  requests_per_second:
    description: As in C(mailsec.sendgrid.enforced_tls_drift) (unset, the client's pacing from the rate-limit headers).
    type: float
  page_size:
    description: Blocks asked for per page (SendGrid allows at most 500).
    type: int
    default: 500
  max_pages:
    description: Pages one subuser's read may take; more fails that read (reported, retried next round).
    type: int
    default: 200
"""

EXAMPLES = r"""
- name: Report TLS blocks
  hosts: all
  sources:
    - mailsec.sendgrid.tls_blocks:
        interval: 300
  rules:
    - name: TLS block
      condition: event.sendgrid.type == "tls_block"
      action:
        print_event:
          pretty: true
"""


# ansible-rulebook runs a source by its path: the folder that holds ansible_collections/, eight levels up, may not be
# on the path yet (appended, so a collection found first elsewhere still wins).
sys.path.append(os.path.normpath(os.path.join(__file__, *['..'] * 8)))

from ansible_collections.mailsec.sendgrid.extensions.eda.plugins.module_utils import _watch as watch_utils  # noqa: E402
from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import MAX_PAGES  # noqa: E402
from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_blocks import (  # noqa: E402
    MAX_PAGE_SIZE, check_page_size, read_tls_blocks)

NAME = 'mailsec.sendgrid.tls_blocks'
# SendGrid may list a block some time after its creation time: each round looks this far back before the newest seen.
LOOKBACK = 600


def _make_poll(options, watch, started=None):
    started = int(time.time()) if started is None else started
    # subuser -> {block key: created} of the blocks announced within the window still read; newest created seen.
    seen = {}
    newest = {}

    async def poll(name):
        since = max(started, newest.get(name, started) - LOOKBACK)
        result = await watch.call(read_tls_blocks, watch.client, on_behalf_of=name, start_time=since,
                                  page_size=options['page_size'], max_pages=options['max_pages'])
        known = seen.setdefault(name, {})
        events = []
        # Oldest first, so events follow the order the blocks happened in.
        for block in sorted(result['blocks'], key=lambda item: item['created']):
            key = (block['email'], block['reason'], block['created'])
            if block['created'] < since or key in known:
                continue
            known[key] = block['created']
            events.append(watch_utils.subuser_event('tls_block', name, email=block['email'], domain=block['domain'],
                                                    reason=block['reason'], created=block['created']))
        if known:
            newest[name] = max(newest.get(name, started), *known.values())
            floor = max(started, newest[name] - LOOKBACK)
            # What the next round cannot read again need not be remembered: memory stays bounded by the window.
            seen[name] = {key: created for key, created in known.items() if created >= floor}
        return events
    return poll


async def main(queue: Any, args: dict[str, Any]) -> None:
    """Report new TLS blocks until the rulebook stops."""
    own = dict(page_size=dict(type='int', default=MAX_PAGE_SIZE), max_pages=dict(type='int', default=MAX_PAGES))

    def checked(options):
        check_page_size(options['page_size'])
        if options['max_pages'] < 1:
            raise ValueError('max_pages must be an integer of 1 or more, got %r' % options['max_pages'])
        return options

    await watch_utils.run_source(NAME, queue, args, own, _make_poll, check=checked)
