#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: enforced_tls
short_description: Manage the Enforced TLS settings of SendGrid accounts
version_added: 0.1.0
description:
  - Sets whether SendGrid requires recipients to support TLS, to present a valid certificate,
    and the minimum TLS version, for the parent account or a subuser (O(on_behalf_of)).
  - Reads the settings with exactly one GET per account. Only the settings you give are compared and changed;
    when they already match, nothing is written. Otherwise one PATCH carries only the differing settings.
  - With O(accounts), converges many accounts in one task, O(concurrency) at a time. One account's failure
    does not stop the others; the task fails at the end, naming each failed account.
  - Settings absent from SendGrid's answer are taken as their documented defaults
    (C(require_tls=false), C(require_valid_cert=false), C(version=1.1)).
author:
  - mailsec.sendgrid maintainers (@mailsec)
extends_documentation_fragment:
  - mailsec.sendgrid.api
  - mailsec.sendgrid.api.on_behalf_of
  - mailsec.sendgrid.api.attributes
  - mailsec.sendgrid.api.action_group
attributes:
  check_mode:
    support: full
    details:
      - In check mode only the GET is made; the result predicts the state after.
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  require_tls:
    description:
      - Require recipients to support TLS. When they cannot, SendGrid drops the message and sends a block event
        ("TLS required but not supported").
      - Not managed when left out.
    type: bool
  require_valid_cert:
    description:
      - Require recipients to present a valid certificate.
      - Not managed when left out.
    type: bool
  version:
    description:
      - The minimum TLS version recipients must support.
      - A string V("1.1"), V("1.2") or V("1.3"); a YAML float such as V(1.2) is accepted too.
      - Not managed when left out.
    type: raw
  accounts:
    description:
      - Converge several accounts in one task. The top-level O(require_tls), O(require_valid_cert) and O(version)
        act as the policy for every item.
      - Each item is either a string, a subuser's username or V(account-id <id>), or a dict with the key
        C(on_behalf_of) (the same; left out or V(null) for the parent account) and any of C(require_tls),
        C(require_valid_cert) and C(version) to override the policy for that account. Any other key is refused.
      - The same shapes as M(mailsec.sendgrid.enforced_tls_info)'s O(mailsec.sendgrid.enforced_tls_info#module:accounts).
      - Mutually exclusive with O(on_behalf_of).
    type: list
    elements: raw
  concurrency:
    description:
      - With O(accounts), how many accounts are converged at the same time.
      - Workers share one connection pool and one rate-limit pause, so a 429 slows all of them.
    type: int
    default: 8
seealso:
  - module: mailsec.sendgrid.enforced_tls_info
  - ref: mailsec.sendgrid.enforced_tls_policy
    description: The role that applies one policy to every subuser of an inventory.
  - name: SendGrid API reference, Enforced TLS
    description: The API this module calls (GET and PATCH /v3/user/settings/enforced_tls).
    link: https://www.twilio.com/docs/sendgrid/api-reference/enforced-tls/update-enforced-tls-settings
"""

EXAMPLES = r"""
- name: Require TLS 1.2 and a valid certificate on the parent account
  mailsec.sendgrid.enforced_tls:
    require_tls: true
    require_valid_cert: true
    version: "1.2"
  environment:
    SENDGRID_API_KEY: "{{ vault_sendgrid_api_key }}"

- name: Require TLS from the recipients of one subuser (other settings untouched)
  mailsec.sendgrid.enforced_tls:
    api_key: "{{ vault_sendgrid_api_key }}"
    on_behalf_of: marketing
    require_tls: true

- name: An EU regional subuser
  mailsec.sendgrid.enforced_tls:
    api_key: "{{ vault_sendgrid_api_key }}"
    region: eu
    on_behalf_of: billing-eu
    version: "1.2"

- name: One policy for several subusers in one task, with an exception
  mailsec.sendgrid.enforced_tls:
    api_key: "{{ vault_sendgrid_api_key }}"
    require_tls: true
    version: "1.2"
    accounts:
      - on_behalf_of: marketing
      - on_behalf_of: transactional
      - on_behalf_of: legacy-partner
        version: "1.1"
  register: converged

- name: Set the connection once for every module of the collection
  module_defaults:
    group/mailsec.sendgrid.api:
      api_key: "{{ vault_sendgrid_api_key }}"
      region: eu
  block:
    - name: Require a valid certificate
      mailsec.sendgrid.enforced_tls:
        require_valid_cert: true
"""

RETURN = r"""
enforced_tls:
  description:
    - The account's settings after the task (predicted in check mode), every field filled in.
    - Not returned with O(accounts); see RV(results).
  returned: success, without O(accounts)
  type: dict
  contains:
    require_tls:
      description: Whether recipients must support TLS.
      type: bool
      sample: true
    require_valid_cert:
      description: Whether recipients must present a valid certificate.
      type: bool
      sample: true
    version:
      description: The minimum TLS version, as a string.
      type: str
      sample: "1.2"
results:
  description: One entry per item of O(accounts), in the same order.
  returned: when O(accounts) is given
  type: list
  elements: dict
  contains:
    on_behalf_of:
      description: The account (null for the parent).
      type: str
      sample: marketing
    status:
      description: V(compliant) (nothing to do), V(changed), V(would_change) (check mode) or V(failed).
      type: str
      sample: changed
    changed:
      description: Whether the account was (or in check mode would be) changed.
      type: bool
    failed:
      description: Whether this account failed.
      type: bool
    msg:
      description: Why it failed.
      type: str
      returned: when failed
    before:
      description: The settings read before any change.
      type: dict
      returned: unless failed
    enforced_tls:
      description: The settings after (predicted in check mode).
      type: dict
      returned: unless failed
    changes:
      description: The settings that were (or would be) written.
      type: dict
      returned: unless failed
      sample: {"version": "1.2"}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import (
    SendGridConfigError, SendGridError, check_concurrency, client_from_module, connection_argument_spec)
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import (
    FIELDS, POLICY_ARGUMENT_SPEC, account_items, account_label, converge, desired_state, diff_entry, failures_message,
    run_batch)


def batch_accounts(params):
    """Each account's desired settings: the top-level policy with the item's overrides."""
    policy = {field: params[field] for field in FIELDS}
    accounts = []
    for index, item in enumerate(account_items(params['accounts'])):
        name = 'accounts[%d].' % index
        merged = dict(policy, **{field: item[field] for field in FIELDS if item.get(field) is not None})
        desired = desired_state(merged, name)
        if not desired:
            raise ValueError('%s needs at least one of require_tls, require_valid_cert, version '
                             '(set it on the item or at the top level)' % name.rstrip('.'))
        accounts.append(dict(on_behalf_of=item.get('on_behalf_of'), desired=desired))
    return accounts


def main():
    module = AnsibleModule(
        argument_spec=connection_argument_spec(
            # raw, then checked by account_items: usernames and dicts alike, as enforced_tls_info takes them.
            accounts=dict(type='list', elements='raw'),
            concurrency=dict(type='int', default=8),
            **POLICY_ARGUMENT_SPEC),
        mutually_exclusive=[('accounts', 'on_behalf_of')],
        supports_check_mode=True,
    )
    params = module.params
    try:
        if params['accounts'] is None:
            desired = desired_state(params)
            if not desired:
                raise ValueError('at least one of require_tls, require_valid_cert, version is required')
            accounts = None
        else:
            accounts = batch_accounts(params)
        check_concurrency(params['concurrency'])
    except (ValueError, SendGridConfigError) as exc:
        module.fail_json(msg=str(exc))

    client = client_from_module(module, pool_size=params['concurrency'])

    if accounts is None:
        try:
            result = converge(client, desired, params['on_behalf_of'], module.check_mode)
        except SendGridError as exc:
            module.fail_json(msg=str(exc))
        module.exit_json(changed=result['changed'], enforced_tls=result['enforced_tls'], diff=diff_entry(result))

    results = run_batch(
        lambda account: converge(client, account['desired'], account['on_behalf_of'], module.check_mode),
        accounts, params['concurrency'])
    failed = [r for r in results if r['failed']]
    output = dict(
        changed=any(r['changed'] for r in results),
        results=results,
        diff=[diff_entry(r, full=True) for r in results if r['changed']],
    )
    if failed:
        module.fail_json(msg=failures_message({account_label(r['on_behalf_of']): r['msg'] for r in failed}, len(results)),
                         **output)
    module.exit_json(**output)


if __name__ == '__main__':
    main()
