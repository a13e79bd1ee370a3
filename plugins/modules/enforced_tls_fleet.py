#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: enforced_tls_fleet
short_description: The engine of the enforced_tls_policy role - converge, audit or preflight subuser hosts on the controller
version_added: 0.1.0
description:
  - The engine of the P(mailsec.sendgrid.enforced_tls_policy#role) role, usable on its own. It is an action plugin, so it
    works on the controller, with no module start-up per subuser.
  - For a host it reads the variables C(enforced_tls_policy_require_tls), C(enforced_tls_policy_require_valid_cert),
    C(enforced_tls_policy_version), C(enforced_tls_policy_api_key), C(enforced_tls_policy_region),
    C(enforced_tls_policy_api_url), C(enforced_tls_policy_on_behalf_of), C(enforced_tls_policy_timeout),
    C(enforced_tls_policy_max_retries) and the guardrail's C(enforced_tls_policy_impact_*) and
    C(enforced_tls_policy_max_blocked) as a task on that host sees them (host and group variables override play-wide
    ones as usual), and validates them before any HTTP request. An error names the variable and the host.
  - Unset variables mean "not managed". C(enforced_tls_policy_on_behalf_of) defaults to the host name, and an empty string
    addresses the parent account. C(enforced_tls_policy_api_key) defaults to E(SENDGRID_API_KEY).
  - The endpoint is the first of these that is set, an API URL winning over a region at the same level - the role's
    C(enforced_tls_policy_api_url) / C(enforced_tls_policy_region); the host's C(sendgrid_api_url) / C(sendgrid_region)
    (set by the P(mailsec.sendgrid.subusers#inventory) inventory plugin); E(SENDGRID_API_URL) / E(SENDGRID_REGION);
    else V(global).
  - By default it works on the host it runs for, in that host's own task run, so C(when:), includes, C(--limit),
    C(serial:), every strategy, the PLAY RECAP and AWX host events hold. One GET per subuser, a PATCH only where
    something differs, none in check mode.
  - Before its first subuser, each endpoint and key is checked once per C(ansible-playbook) run by reading the parent
    account, by whichever host comes first (under a lock in the run's private directory; every other host reuses the
    verdict, under every strategy and whichever hosts a C(when:) selects). When that fails (HTTP 401/403, an unreachable
    API), no request is made for any subuser with that endpoint and key; each fails under its own name, the others as
    "not attempted" with the preflight's reason.
  - With C(enforced_tls_policy_impact_domains) (O(mode=enforce)), the impact guardrail runs before that, once per run and
    policy in the same way - M(mailsec.sendgrid.recipient_tls_info)'s preview of those recipient domains under the host's
    policy, printed once - and when more than C(enforced_tls_policy_max_blocked) would be blocked, every host with that
    policy fails with the list of blocked domains, before any request to SendGrid (in check mode too).
  - With O(batch=true) and C(run_once), it converges every host of the play batch (or O(hosts)) in one task, O(concurrency)
    accounts at a time, one HTTP client per API endpoint and key, and prints the batch's totals. It refuses, before any request, to run under a
    C(when:) condition (its own, a block's, an include's, an import's or a C(roles:) entry's), inside a looping include,
    or under a strategy other than C(linear).
  - Before each write (O(mode=enforce), not in check mode) it records the subuser's previous values of the fields it
    changes, with the endpoint, the region and a UTC timestamp, in the run's snapshot file in the directory
    C(enforced_tls_policy_snapshot_dir) (default C(./enforced_tls_snapshots), relative to where C(ansible-playbook) runs),
    one JSON Lines journal per run (an event a line; the record of a write is appended and synced before its PATCH),
    shared by every worker process under a lock, mode C(0600) in a directory created C(0700). A write that fails is
    taken out again; the API key is never in it. If the previous values cannot be recorded, the subuser fails and is
    not written. The file's path and the number of subusers in it are
    published as custom stats (C(enforced_tls_snapshot), C(enforced_tls_snapshot_subusers)), as C(set_stats) does.
  - O(mode=restore) returns the host to what O(snapshot) recorded for it, the same way (one GET, a PATCH of the recorded
    fields that differ, none in check mode); a host the snapshot does not name is skipped. The key, the endpoint and the
    account written come from the host's variables, never from the file; an entry recorded for another account (or the
    parent) or on another endpoint is refused for that host before any request.
    O(mode=check_snapshot), on every host, checks the file and that every subuser it names is a host of the play
    (unless C(--limit) is given) before any request. A malformed, truncated, edited, re-sealed or foreign file (each line
    is sealed with an HMAC-SHA256 under a key derived from the API key), one sealed under another (for example a
    rotated) key, and a file or folder that others may write or another user owns are refused, naming the problem.
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
    description: Returns the diff of each changed (or, in check mode, would-be changed) account.
  idempotent:
    support: full
    description: When run twice with the same variables, the second run changes nothing and writes nothing.
  bypass_host_loop:
    support: none
    description: Runs for the host it is given; batch mode needs C(run_once) so that it runs once for the whole play.
options:
  mode:
    description:
      - V(enforce) converges the accounts.
      - V(audit) only reads them and reports drift; a drifted account is V(changed) only in check mode
        (where "changed" means "would change").
      - V(preflight) reads the parent account once for the endpoint and key of the host it runs on, and fails when that
        read fails. Use it with C(run_once).
      - V(restore) returns the host to the settings O(snapshot) recorded for it.
      - V(check_snapshot) checks O(snapshot) before a restore, without any request. Run it on every host, not with
        C(run_once); the file is read once per run, and a refusal fails every host under its own name.
      - V(journal) reports the snapshot journals this C(ansible-playbook) run has written so far (RV(journals)), without
        any request; the enforce and rollout playbooks print them at the end.
    type: str
    choices: [enforce, audit, preflight, restore, check_snapshot, journal]
    default: enforce
  snapshot:
    description:
      - With O(mode=restore) and O(mode=check_snapshot), the snapshot file, relative to where C(ansible-playbook) runs.
    type: path
  from_run:
    description:
      - With O(mode=restore), restore from the snapshot this C(ansible-playbook) run recorded in the host's
        C(enforced_tls_policy_snapshot_dir) (the rollout playbook does), instead of O(snapshot). The file is checked
        against the end and last seal the run noted in its private run directory, so a file swapped or changed since
        (even a sound journal of the same key) is refused.
    type: bool
    default: false
  batch:
    description:
      - Work on every host of the play batch (or O(hosts)) in one task. Needs C(run_once). See the description for where
        it refuses to run.
    type: bool
    default: false
  hosts:
    description:
      - Batch mode only. The inventory hosts to work on. Defaults to the current play batch (C(ansible_play_batch)).
    type: list
    elements: str
  concurrency:
    description:
      - Batch mode only. How many accounts are worked on at the same time, an integer from 1 to 64 (a string such as
        V("16"), as a template or a survey gives it, is read as one). The workers share one rate-limit pause.
    type: raw
    default: 8
  fail_on_error:
    description:
      - Batch mode only. Fail the task when an account failed - after the play's last C(serial:) batch, naming the failed
        accounts of every batch (RV(failed_hosts_all)), since a failed C(run_once) task ends the play; with O(hosts),
        at once. When V(false), failures are only reported in RV(failed_hosts) and RV(failed_hosts_all).
    type: bool
    default: true
  fail_on_drift:
    description:
      - With O(mode=audit), fail a host whose account drifts from its policy (it is still reported).
    type: bool
    default: false
notes:
  - The preflight verdicts are kept in Ansible's per-run local temporary directory (E(ANSIBLE_LOCAL_TEMP)), never with
    the key, and removed when the run ends.
  - The snapshot's seal is keyed; only a holder of the API key (who can write to SendGrid anyway) can write a journal that
    verifies. Restore a subset with C(--limit), not by editing the file.
seealso:
  - module: mailsec.sendgrid.enforced_tls
  - module: mailsec.sendgrid.tls_blocks_info
  - ref: mailsec.sendgrid.enforced_tls_policy
    description: The role built on this action.
"""

EXAMPLES = r"""
- name: Converge each subuser host of the play (the key and endpoint are checked once, by the first host)
  mailsec.sendgrid.enforced_tls_fleet:
  register: converged

- name: List the snapshot journals this run wrote
  mailsec.sendgrid.enforced_tls_fleet:
    mode: journal
  delegate_to: localhost
  run_once: true
  register: journals

- name: Report drift without changing anything, failing the subusers that drift
  mailsec.sendgrid.enforced_tls_fleet:
    mode: audit
    fail_on_drift: true

- name: Return each subuser host to the settings a snapshot recorded
  mailsec.sendgrid.enforced_tls_fleet:
    mode: restore
    snapshot: enforced_tls_snapshots/enforced-tls-20250131T090000Z-3f2a1c.jsonl

- name: Converge every subuser of the play batch in one task (batch mode)
  mailsec.sendgrid.enforced_tls_fleet:
    batch: true
    concurrency: 16
  run_once: true
  register: fleet
"""

RETURN = r"""
host:
  description: The inventory host (per-host runs).
  returned: per host
  type: str
  sample: sub0001
on_behalf_of:
  description: The account addressed (null for the parent).
  returned: per host
  type: str
  sample: sub0001
status:
  description: V(compliant), V(changed), V(would_change) (check mode and audit) or V(failed).
  returned: per host
  type: str
  sample: would_change
desired:
  description: The managed settings, as resolved for this host.
  returned: per host, unless its variables are invalid
  type: dict
  sample: {"require_tls": true, "version": "1.2"}
before:
  description: The settings read.
  returned: per host, unless failed
  type: dict
enforced_tls:
  description: The settings after (predicted in check mode and audit).
  returned: per host, unless failed
  type: dict
changes:
  description: The settings that differ from the policy (written, unless check mode or audit).
  returned: per host, unless failed
  type: dict
  sample: {"version": "1.2"}
compliant:
  description: Whether the account already matched its policy when it was read.
  returned: per host, unless failed
  type: bool
differences:
  description: For each setting that differed, the value read and the value of the policy.
  returned: per host, unless failed
  type: dict
  sample: {"version": {"current": "1.1", "desired": "1.2"}}
snapshot:
  description:
    - Where the previous settings of this write were recorded (enforce mode, only when it wrote). The rollout playbook
      restores a batch from it.
  returned: per host, when something was written
  type: dict
  contains:
    path:
      description: The run's snapshot file.
      type: str
      sample: /work/enforced_tls_snapshots/enforced-tls-20250131T090000Z-3f2a1c.jsonl
    subusers:
      description: How many subusers the file holds after this write.
      type: int
    new:
      description: Whether this subuser's entry is new in the run.
      type: bool
    recorded:
      description: The fields whose previous value this write added.
      type: list
      elements: str
      sample: [require_tls]
    endpoint:
      description: The API base URL written to.
      type: str
      sample: https://api.sendgrid.com
impact:
  description:
    - The guardrail's preview of C(enforced_tls_policy_impact_domains) under this host's policy (O(mode=enforce)), shared by
      every host with the same policy.
  returned: per host, with C(enforced_tls_policy_impact_domains)
  type: dict
  contains:
    summary:
      description: Counts of the verdicts, as M(mailsec.sendgrid.recipient_tls_info) returns them.
      type: dict
    policy:
      description: The policy judged (unmanaged settings as SendGrid's defaults).
      type: dict
    domains:
      description: Each domain's C(domain), C(verdict), C(reason) and C(blocked_by).
      type: list
      elements: dict
journals:
  description: The snapshot journals this run has written (O(mode=journal)), each with C(path) and C(subusers).
  returned: with O(mode=journal)
  type: list
  elements: dict
  sample: [{"path": "/work/enforced_tls_snapshots/enforced-tls-20250131T090000Z-3f2a1c.jsonl", "subusers": 12}]
restored_from:
  description: The snapshot file (O(mode=restore)).
  returned: per host, with O(mode=restore)
  type: str
subusers:
  description: The subusers of O(snapshot) that are hosts of this play (O(mode=check_snapshot)).
  returned: with O(mode=check_snapshot)
  type: list
  elements: str
results:
  description: Batch mode. One entry per host, in the order of O(hosts), with the keys of a per-host run.
  returned: batch mode
  type: list
  elements: dict
summary:
  description: Batch mode. Host names by status.
  returned: batch mode
  type: dict
  sample: {"compliant": ["sub0002"], "changed": ["sub0001"], "would_change": [], "failed": []}
failed_hosts:
  description: Batch mode. This batch's failed hosts and why.
  returned: batch mode
  type: dict
  sample: {"sub0003": "SendGrid API error: HTTP 403 Forbidden on GET /v3/user/settings/enforced_tls (on behalf of sub0003): access forbidden"}
failed_hosts_all:
  description: Batch mode. The failed hosts of every C(serial:) batch of the play so far.
  returned: batch mode
  type: dict
last_batch:
  description: Batch mode. Whether this is the play's last C(serial:) batch (always true without C(serial:)).
  returned: batch mode
  type: bool
"""
