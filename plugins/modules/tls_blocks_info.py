#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: tls_blocks_info
short_description: List the SendGrid blocks that a TLS requirement caused
version_added: 0.1.0
description:
  - Reads the blocks list of the parent account or a subuser (O(on_behalf_of)) with C(GET /v3/suppression/blocks),
    paged with C(limit) and C(offset) (at most 500 per page), optionally in a time window, and returns the blocks
    whose reason shows a TLS failure, with how many there are per recipient domain.
  - When Enforced TLS requires TLS and a recipient's server cannot meet it, SendGrid drops the message and records a
    block with the reason C(TLS required but not supported). This module is how a rollout sees that mail is lost.
  - 'A reason shows a TLS failure when it matches, case-insensitively, any of these regular expressions:
    C(TLS required but not supported) (SendGrid''s words for a message dropped by Enforced TLS),
    C(\b(?:START)?TLS\b), C(\bSSL\b), C(certificate), C(\bx\.?509\b), C(handshake) and C(encryption (?:is )?required).
    Other blocks (for example C(no route to host) or an MX lookup failure) are counted in RV(blocks_read) only.'
  - It sees only what SendGrid records, so only mail actually sent in the window; a domain you did not send to cannot
    show up. SendGrid keeps one block per recipient address, so a later block replaces an earlier one.
  - EU regional subusers are read on the EU endpoint (O(region=eu)).
author:
  - mailsec.sendgrid maintainers (@mailsec)
extends_documentation_fragment:
  - mailsec.sendgrid.api
  - mailsec.sendgrid.api.on_behalf_of
  - mailsec.sendgrid.api.attributes
  - mailsec.sendgrid.api.action_group
  - mailsec.sendgrid.api.info_module
options:
  start_time:
    description:
      - Only blocks created at or after this time, in epoch seconds (UTC).
    type: int
  end_time:
    description:
      - Only blocks created at or before this time, in epoch seconds (UTC).
    type: int
  email:
    description:
      - Only blocks whose e-mail address starts with this text (SendGrid's C(email) filter; C(%) stands for any text).
    type: str
  page_size:
    description:
      - How many blocks each request asks for (SendGrid's C(limit)), from 1 to 500.
    type: int
    default: 500
  max_pages:
    description:
      - At most this many pages are requested (200 pages of 500 are 100,000 blocks). A server that still answers full
        pages then fails the task with an error naming this option; one that answers the same full page twice fails
        at once. Narrow the time window, or raise this, for an account with more blocks.
      - The answers together may hold at most O(max_pages) x 256 KiB (a page of 500 blocks is under 100 KiB).
    type: int
    default: 200
notes:
  - Needs an API key with the C(suppression.blocks.read) scope.
seealso:
  - module: mailsec.sendgrid.enforced_tls
  - module: mailsec.sendgrid.recipient_tls_info
    description: Predicts, before a change, which recipient domains a policy would block.
"""

EXAMPLES = r"""
- name: TLS blocks of a subuser in the last hour
  mailsec.sendgrid.tls_blocks_info:
    api_key: "{{ vault_sendgrid_api_key }}"
    on_behalf_of: marketing
    start_time: "{{ (now().timestamp() - 3600) | int }}"
  register: tls_blocks

- name: Name the recipient domains that lose mail
  ansible.builtin.debug:
    msg: "{{ tls_blocks.tls_blocks }} messages blocked: {{ tls_blocks.domains }}"

- name: An EU subuser, on the EU endpoint
  mailsec.sendgrid.tls_blocks_info:
    region: eu
    on_behalf_of: eu-newsletters
"""

RETURN = r"""
blocks:
  description: The blocks whose reason shows a TLS failure, newest first as SendGrid lists them.
  returned: success
  type: list
  elements: dict
  contains:
    created:
      description: When SendGrid recorded the block, in epoch seconds.
      type: int
      sample: 1738314000
    email:
      description: The recipient address.
      type: str
      sample: someone@legacy.example
    reason:
      description: SendGrid's reason for the block.
      type: str
      sample: TLS required but not supported
    status:
      description: The block's status code, as SendGrid gives it.
      type: str
      sample: 4.0.0
    domain:
      description: The recipient domain (lower case).
      type: str
      sample: legacy.example
domains:
  description: For each recipient domain, how many TLS blocks it has.
  returned: success
  type: dict
  sample: {"legacy.example": 3}
tls_blocks:
  description: How many blocks show a TLS failure (the length of RV(blocks)).
  returned: success
  type: int
  sample: 3
blocks_read:
  description: How many blocks SendGrid listed in the window, TLS or not.
  returned: success
  type: int
  sample: 12
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import (
    MAX_PAGES, SendGridError, client_from_module, connection_argument_spec)
from ansible_collections.mailsec.sendgrid.plugins.module_utils._tls_blocks import (
    MAX_PAGE_SIZE, check_page_size, check_window, read_tls_blocks)


def main():
    module = AnsibleModule(
        argument_spec=connection_argument_spec(
            start_time=dict(type='int'),
            end_time=dict(type='int'),
            email=dict(type='str'),
            page_size=dict(type='int', default=MAX_PAGE_SIZE),
            max_pages=dict(type='int', default=MAX_PAGES)),
        supports_check_mode=True,
    )
    params = module.params
    try:
        check_window(params['start_time'], params['end_time'])
        check_page_size(params['page_size'])
        if params['max_pages'] < 1:
            raise ValueError('max_pages must be an integer of 1 or more, got %d' % params['max_pages'])
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    client = client_from_module(module)
    try:
        found = read_tls_blocks(client, params['on_behalf_of'], params['start_time'], params['end_time'], params['email'],
                                params['page_size'], max_pages=params['max_pages'])
    except SendGridError as exc:
        module.fail_json(msg=str(exc))
    finally:
        client.close()
    module.exit_json(changed=False, **found)


if __name__ == '__main__':
    main()
