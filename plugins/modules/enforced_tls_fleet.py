#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: enforced_tls_fleet
short_description: Converge or audit the Enforced TLS settings of every subuser host of the play in one task
version_added: 0.1.0
description:
  - The engine of the P(mailsec.sendgrid.enforced_tls_policy#role) role, usable on its own.
  - Runs once (it is an action plugin working on the controller) for a list of inventory hosts, by default
    the hosts of the current play batch, so C(--limit) and AWX limits and job slices apply.
  - For each host it reads the variables C(enforced_tls_policy_require_tls), C(enforced_tls_policy_require_valid_cert),
    C(enforced_tls_policy_version), C(enforced_tls_policy_api_key), C(enforced_tls_policy_region),
    C(enforced_tls_policy_api_url) and C(enforced_tls_policy_on_behalf_of) exactly as a task on that host would see them
    (host and group variables override play-wide ones as usual), and validates all of them before any HTTP request.
    An error names the variable and the host.
  - Unset variables mean "not managed". C(enforced_tls_policy_on_behalf_of) defaults to the host name, and an empty string
    addresses the parent account. C(enforced_tls_policy_region) defaults to the host's C(sendgrid_region), else V(global).
    C(enforced_tls_policy_api_key) and C(enforced_tls_policy_api_url) default to E(SENDGRID_API_KEY) and E(SENDGRID_API_URL).
  - Then it converges the accounts on the controller, with the same code as M(mailsec.sendgrid.enforced_tls) and its
    O(mailsec.sendgrid.enforced_tls#module:accounts), one HTTP client per API endpoint and key, O(concurrency) accounts
    at a time. That makes one GET per account, a PATCH only where something differs, and none in check mode.
requirements:
  - requests (Python library) on the controller
author:
  - mailsec.sendgrid maintainers (@mailsec)
attributes:
  check_mode:
    support: full
    description: Can run in check_mode and return changed status prediction without modifying the accounts.
  diff_mode:
    support: full
    description: Returns one diff per changed (or, in check mode, would-be changed) account.
  idempotent:
    support: full
    description: When run twice with the same variables, the second run changes nothing and writes nothing.
  bypass_host_loop:
    support: none
    description: Runs for the host it is given; use C(run_once) so that it runs once for the whole play.
options:
  mode:
    description:
      - V(enforce) converges the accounts. V(audit) only reads them (as in check mode) and reports drift.
    type: str
    choices: [enforce, audit]
    default: enforce
  hosts:
    description:
      - The inventory hosts to work on. Defaults to the current play batch (C(ansible_play_batch)).
    type: list
    elements: str
  concurrency:
    description:
      - How many accounts are worked on at the same time. The workers share one rate-limit pause.
    type: int
    default: 8
  fail_on_error:
    description:
      - Fail the task when any account failed. When V(false), failures are only reported in RV(failed_hosts)
        (the role does that, then fails at the end with a summary).
    type: bool
    default: true
notes:
  - Use it with C(run_once) (the role does).
seealso:
  - module: mailsec.sendgrid.enforced_tls
  - ref: mailsec.sendgrid.enforced_tls_policy
    description: The role built on this action.
"""

EXAMPLES = r"""
- name: Converge every subuser of the play in one task
  mailsec.sendgrid.enforced_tls_fleet:
    concurrency: 16
  run_once: true
  register: fleet

- name: Report drift without changing anything
  mailsec.sendgrid.enforced_tls_fleet:
    mode: audit
    fail_on_error: false
  run_once: true
  register: drift
"""

RETURN = r"""
results:
  description: One entry per host, in the order of O(hosts).
  returned: always
  type: list
  elements: dict
  contains:
    host:
      description: The inventory host.
      type: str
      sample: sub0001
    on_behalf_of:
      description: The account addressed (null for the parent).
      type: str
      sample: sub0001
    status:
      description: V(compliant), V(changed), V(would_change) (check mode and audit) or V(failed).
      type: str
      sample: would_change
    desired:
      description: The managed settings, as resolved for this host.
      type: dict
      sample: {"require_tls": true, "version": "1.2"}
    before:
      description: The settings read.
      type: dict
      returned: unless failed
    enforced_tls:
      description: The settings after (predicted in check mode and audit).
      type: dict
      returned: unless failed
    changes:
      description: The settings that differ from the policy (written, unless check mode or audit).
      type: dict
      returned: unless failed
      sample: {"version": "1.2"}
    compliant:
      description: Whether the account already matched its policy when it was read.
      type: bool
      returned: unless failed
    differences:
      description: For each setting that differed, the value read and the value of the policy.
      type: dict
      returned: unless failed
      sample: {"version": {"current": "1.1", "desired": "1.2"}}
    msg:
      description: Why the account failed.
      type: str
      returned: when failed
summary:
  description: Host names by status.
  returned: always
  type: dict
  sample: {"compliant": ["sub0002"], "changed": ["sub0001"], "would_change": [], "failed": []}
failed_hosts:
  description: Failed hosts and why.
  returned: always
  type: dict
  sample: {"sub0003": "SendGrid API error: HTTP 403 Forbidden on GET /v3/user/settings/enforced_tls (on behalf of sub0003): access forbidden"}
"""
