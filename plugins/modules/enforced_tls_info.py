#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: enforced_tls_info
short_description: Read the Enforced TLS settings of SendGrid accounts
version_added: 0.1.0
description:
  - Reads whether SendGrid requires recipients to support TLS, to present a valid certificate,
    and the minimum TLS version, for the parent account or a subuser (O(on_behalf_of)). One GET per account.
  - With O(accounts), reads many accounts in one task, O(concurrency) at a time.
  - Settings absent from SendGrid's answer are reported as their documented defaults.
author:
  - mailsec.sendgrid maintainers (@mailsec)
extends_documentation_fragment:
  - mailsec.sendgrid.api
  - mailsec.sendgrid.api.on_behalf_of
  - mailsec.sendgrid.api.attributes
  - mailsec.sendgrid.api.action_group
  - mailsec.sendgrid.api.info_module
options:
  accounts:
    description:
      - Read several accounts in one task. Each item is a string, a subuser's username or V(account-id <id>),
        or a dict with the key C(on_behalf_of) (the same; left out or V(null) for the parent account), so that the
        O(mailsec.sendgrid.enforced_tls#module:accounts) list of M(mailsec.sendgrid.enforced_tls) can be read back
        as it is (its C(require_tls), C(require_valid_cert) and C(version) keys are ignored here; other keys are refused).
      - Mutually exclusive with O(on_behalf_of).
    type: list
    elements: raw
  concurrency:
    description:
      - With O(accounts), how many accounts are read at the same time.
    type: int
    default: 8
seealso:
  - module: mailsec.sendgrid.enforced_tls
"""

EXAMPLES = r"""
- name: Read the parent account's settings
  mailsec.sendgrid.enforced_tls_info:
    api_key: "{{ vault_sendgrid_api_key }}"
  register: parent

- name: Show the minimum TLS version
  ansible.builtin.debug:
    msg: "Recipients must support TLS {{ parent.enforced_tls.version }} or newer"

- name: Read a subuser through SendGrid's TLS 1.2 test host
  mailsec.sendgrid.enforced_tls_info:
    api_key: "{{ vault_sendgrid_api_key }}"
    api_url: https://tls12.api.sendgrid.com
    on_behalf_of: marketing

- name: Read many subusers in one task
  mailsec.sendgrid.enforced_tls_info:
    accounts: "{{ groups['sendgrid_subusers'] }}"
  register: fleet
"""

RETURN = r"""
enforced_tls:
  description: The account's settings, every field filled in.
  returned: success, without O(accounts)
  type: dict
  contains:
    require_tls:
      description: Whether recipients must support TLS.
      type: bool
      sample: false
    require_valid_cert:
      description: Whether recipients must present a valid certificate.
      type: bool
      sample: false
    version:
      description: The minimum TLS version, as a string.
      type: str
      sample: "1.1"
results:
  description: One entry per item of O(accounts), in the same order.
  returned: when O(accounts) is given
  type: list
  elements: dict
  contains:
    on_behalf_of:
      description: The account.
      type: str
      sample: marketing
    failed:
      description: Whether reading this account failed.
      type: bool
    msg:
      description: Why it failed.
      type: str
      returned: when failed
    enforced_tls:
      description: The account's settings.
      type: dict
      returned: unless failed
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import (
    SendGridConfigError, SendGridError, check_concurrency, client_from_module, connection_argument_spec)
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import (
    account_items, account_label, failures_message, read, run_batch)


def main():
    module = AnsibleModule(
        argument_spec=connection_argument_spec(
            # raw, then checked: Ansible's str conversion would turn a dict into a subuser name and send it.
            accounts=dict(type='list', elements='raw'),
            concurrency=dict(type='int', default=8)),
        mutually_exclusive=[('accounts', 'on_behalf_of')],
        supports_check_mode=True,
    )
    params = module.params
    try:
        accounts = [dict(on_behalf_of=item.get('on_behalf_of')) for item in account_items(params['accounts'] or [])]
        check_concurrency(params['concurrency'])
    except (ValueError, SendGridConfigError) as exc:
        module.fail_json(msg=str(exc))

    client = client_from_module(module, pool_size=params['concurrency'])

    if params['accounts'] is None:
        try:
            module.exit_json(changed=False, enforced_tls=read(client, params['on_behalf_of']))
        except SendGridError as exc:
            module.fail_json(msg=str(exc))

    results = run_batch(lambda account: dict(changed=False, enforced_tls=read(client, account['on_behalf_of'])),
                        accounts, params['concurrency'])
    failed = [r for r in results if r['failed']]
    if failed:
        module.fail_json(msg=failures_message({account_label(r['on_behalf_of']): r['msg'] for r in failed}, len(results),
                                              verb='could not be read'), changed=False, results=results)
    module.exit_json(changed=False, results=results)


if __name__ == '__main__':
    main()
