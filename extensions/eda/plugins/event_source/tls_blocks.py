# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import importlib
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
    description: SendGrid API key. Never printed. Prefer the environment variable to a rulebook value.
    type: str
    env:
      - name: SENDGRID_API_KEY
  region:
    description: V(global) or V(eu).
    type: str
    default: global
    env:
      - name: SENDGRID_REGION
  api_url:
    description: Base URL of the API instead of the region's (https, or http to a loopback address only).
    type: str
    env:
      - name: SENDGRID_API_URL
  timeout:
    description: Seconds one request may take, connection and whole answer.
    type: float
    default: 30
  validate_certs:
    description: Verify the API's certificate.
    type: bool
    default: true
  max_retries:
    description: Tries again (with backoff, or after the Retry-After of a 429) before a read counts as failed.
    type: int
    default: 5
  subusers:
    description:
      - Usernames of the subusers to watch. Default every enabled subuser with a plain name, listed again every
        O(refresh_interval) seconds.
    type: list
    elements: str
  interval:
    description: Seconds from the start of one round to the start of the next.
    type: float
    default: 300
  refresh_interval:
    description: Seconds after which the list of subusers is read again (without O(subusers)).
    type: float
    default: 3600
  concurrency:
    description: Subusers read at the same time (1 to 64).
    type: int
    default: 4
  requests_per_second:
    description: At most this many subuser reads start per second.
    type: float
    default: 8
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

NAME = 'mailsec.sendgrid.tls_blocks'
_WATCH = 'ansible_collections.mailsec.sendgrid.extensions.eda.plugins.module_utils._watch'
_BLOCKS = 'ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_blocks'
# SendGrid may list a block some time after its creation time: each round looks this far back before the newest seen.
LOOKBACK = 600


def _import(name):
    """``name`` of this collection. ansible-rulebook runs a source by its path, so the folder holding
    ansible_collections/ may not be importable yet: it is the one seven levels above this file."""
    try:
        return importlib.import_module(name)
    except ImportError:
        root = os.path.abspath(__file__)
        for _level in range(8):
            root = os.path.dirname(root)
        if root not in sys.path:
            sys.path.append(root)
        return importlib.import_module(name)


def _make_poll(options, watch, started=None):
    blocks = _import(_BLOCKS)
    subuser_event = _import(_WATCH).subuser_event
    started = int(time.time()) if started is None else started
    # subuser -> {block key: created} of the blocks announced within the window still read; newest created seen.
    seen = {}
    newest = {}

    async def poll(name):
        since = max(started, newest.get(name, started) - LOOKBACK)
        result = await watch.call(blocks.read_tls_blocks, watch.client, on_behalf_of=name, start_time=since,
                                  page_size=options['page_size'], max_pages=options['max_pages'])
        known = seen.setdefault(name, {})
        events = []
        # Oldest first, so events follow the order the blocks happened in.
        for block in sorted(result['blocks'], key=lambda item: item['created']):
            key = (block['email'], block['reason'], block['created'])
            if block['created'] < since or key in known:
                continue
            known[key] = block['created']
            events.append(subuser_event('tls_block', name, email=block['email'], domain=block['domain'],
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
    watch = _import(_WATCH)
    blocks = _import(_BLOCKS)
    api = _import('ansible_collections.mailsec.sendgrid.plugins.module_utils._api')
    own = dict(page_size=dict(type='int', default=blocks.MAX_PAGE_SIZE), max_pages=dict(type='int', default=api.MAX_PAGES))

    def checked(options):
        blocks.check_page_size(options['page_size'])
        if options['max_pages'] < 1:
            raise ValueError('max_pages must be an integer of 1 or more, got %r' % options['max_pages'])
        return options

    await watch.run_source(NAME, queue, args, own, _make_poll, check=checked)


if __name__ == '__main__':
    import asyncio

    class _PrintQueue:
        async def put(self, event):
            print(event)

    asyncio.run(main(_PrintQueue(), {'interval': 60}))
