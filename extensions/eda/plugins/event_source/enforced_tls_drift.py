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
short_description: Events when a SendGrid subuser's Enforced TLS settings drift from the policy, and when they are back.
description:
  - An ansible-rulebook event source. Every O(interval) seconds it reads the Enforced TLS settings of each watched
    subuser (C(GET /v3/user/settings/enforced_tls) with C(on-behalf-of)), one request per subuser, through the
    collection's client (the key masked in every message, TLS 1.2 or newer, retries with backoff, rate-limit pauses,
    the EU endpoint with O(region=eu)).
  - It compares only the fields of the policy that are set (O(require_tls), O(require_valid_cert), O(version)), as the
    C(enforce) playbook does.
  - 'It emits C({"sendgrid": {"type": "drift", "subuser", "current", "desired", "differences"}}) once when a subuser
    leaves the policy (again when it drifts differently, or after O(repeat_drift_after) seconds still drifted), and
    C({"sendgrid": {"type": "compliant", "subuser", "current", "desired"}}) once when it is back. A subuser that meets
    the policy from the start makes no event. C(differences) maps each differing field to C({current, desired}).'
  - Events about a subuser carry C(meta.hosts) set to its name, so a C(run_playbook) action runs on that host alone.
  - 'A failing read is retried by the client, then logged on each round and reported once per run of failures as
    C({"sendgrid": {"type": "error", "subuser", "message"}}) (C(subuser) null when the subuser listing failed, which is
    tried again after 5, 10, 20... seconds up to O(interval)). The source never stops on an API failure.'
  - Bad options stop the source at start with a message naming the option, before any request.
options:
  api_key:
    description: SendGrid API key. Never printed. Prefer the environment variable to a rulebook value.
    type: str
    env:
      - name: SENDGRID_API_KEY
  region:
    description: V(global) or V(eu) (C(https://api.eu.sendgrid.com)).
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
    description: Verify the API's certificate. Turn off only for a test endpoint you control.
    type: bool
    default: true
  max_retries:
    description: Tries again (with backoff, or after the Retry-After of a 429) before a read counts as failed.
    type: int
    default: 5
  subusers:
    description:
      - Usernames of the subusers to watch. Default every enabled subuser of C(GET /v3/subusers), listed again every
        O(refresh_interval) seconds.
      - Only plain names (letters, digits, C(_ . @ + -)) are watched, because the name becomes the host limit of the
        healing run; a listed subuser with another name is left out with a warning.
    type: list
    elements: str
  require_tls:
    description: Desired C(require_tls). Not set means not watched.
    type: bool
  require_valid_cert:
    description: Desired C(require_valid_cert). Not set means not watched.
    type: bool
  version:
    description: Desired minimum TLS version, V(1.1), V(1.2) or V(1.3). Not set means not watched.
    type: str
  interval:
    description: Seconds from the start of one round to the start of the next (a longer round is followed at once).
    type: float
    default: 300
  refresh_interval:
    description: Seconds after which the list of subusers is read again (without O(subusers)).
    type: float
    default: 3600
  repeat_drift_after:
    description:
      - Seconds after which a subuser still drifted is announced again (a healing run that failed gets another
        chance). V(0) announces each drift once only.
    type: float
    default: 3600
  concurrency:
    description: Subusers read at the same time (1 to 64).
    type: int
    default: 4
  requests_per_second:
    description:
      - At most this many reads start per second, to leave room in the account's rate limit for other automation.
      - Unset, the watch reads as fast as O(concurrency) allows, and the collection's client paces every request from
        SendGrid's C(X-RateLimit-Remaining) and C(X-RateLimit-Reset) answers, so the watch stays within the limit.
    type: float
"""

EXAMPLES = r"""
- name: Heal drifted subusers
  hosts: all
  sources:
    - mailsec.sendgrid.enforced_tls_drift:
        interval: 300
        require_tls: true
        require_valid_cert: true
        version: "1.2"
  rules:
    - name: Drift
      condition: event.sendgrid.type == "drift"
      action:
        run_playbook:
          name: mailsec.sendgrid.enforce
"""


# ansible-rulebook runs a source by its path: the folder that holds ansible_collections/, eight levels up, may not be
# on the path yet (appended, so a collection found first elsewhere still wins).
sys.path.append(os.path.normpath(os.path.join(__file__, *['..'] * 8)))

from ansible_collections.mailsec.sendgrid.extensions.eda.plugins.module_utils import _watch as watch_utils  # noqa: E402
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import (  # noqa: E402
    POLICY_ARGUMENT_SPEC, desired_state, plan, read)

NAME = 'mailsec.sendgrid.enforced_tls_drift'


def _make_poll(options, watch):
    desired = options['desired']
    repeat = options['repeat_drift_after']
    # subuser -> (the drifted values last announced, when); absent: compliant or not yet read.
    drifted = {}

    async def poll(name):
        current = await watch.call(read, watch.client, name)
        changes = plan(current, desired)
        shown = {field: current[field] for field in desired}
        if not changes:
            if drifted.pop(name, None) is None:
                return []
            return [watch_utils.subuser_event('compliant', name, current=shown, desired=desired)]
        now = time.monotonic()
        last = drifted.get(name)
        if last is not None and last[0] == shown and not (repeat and now - last[1] >= repeat):
            return []
        drifted[name] = (shown, now)
        differences = {field: {'current': current[field], 'desired': value} for field, value in changes.items()}
        return [watch_utils.subuser_event('drift', name, current=shown, desired=desired, differences=differences)]
    return poll


async def main(queue: Any, args: dict[str, Any]) -> None:
    """Watch the subusers' Enforced TLS settings until the rulebook stops."""
    own = dict(POLICY_ARGUMENT_SPEC, repeat_drift_after=dict(type='float', default=3600.0))

    def checked(options):
        options['desired'] = desired_state(options)
        if not options['desired']:
            raise ValueError('set at least one of require_tls, require_valid_cert, version: nothing would be watched')
        if options['repeat_drift_after'] < 0:
            raise ValueError('repeat_drift_after must be 0 (announce once) or a number of seconds, got %r'
                             % options['repeat_drift_after'])
        return options

    await watch_utils.run_source(NAME, queue, args, own, _make_poll, check=checked)
