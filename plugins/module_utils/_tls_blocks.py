# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""SendGrid's blocks list, narrowed to the blocks a TLS requirement causes.

When Enforced TLS is on and a recipient's server cannot meet it, SendGrid drops the message and records a block
"TLS required but not supported". That is the one signal of mail lost to the policy, so the rollout watches it.
"""

from __future__ import annotations

import re

from ansible_collections.mailsec.sendgrid.plugins.module_utils._text import escape_text, shorten
from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import MAX_PAGES, SendGridError

PATH = '/v3/suppression/blocks'
MAX_PAGE_SIZE = 500

# Reasons that show a TLS failure, matched case-insensitively anywhere in the block's reason. SendGrid's own words for
# a message dropped by Enforced TLS come first; the others cover what receiving servers and SendGrid say about TLS
# negotiation and certificates. Documented in the tls_blocks_info module: keep both in step.
TLS_REASON_PATTERNS = (
    r'TLS required but not supported',
    r'\b(?:START)?TLS\b',
    r'\bSSL\b',
    r'certificate',
    r'\bx\.?509\b',
    r'handshake',
    r'encryption (?:is )?required',
)
_TLS_REASON = re.compile('|'.join('(?:%s)' % pattern for pattern in TLS_REASON_PATTERNS), re.IGNORECASE)


def is_tls_block(reason):
    return isinstance(reason, str) and _TLS_REASON.search(reason) is not None


def check_window(start_time, end_time):
    """ValueError naming the option when the time window cannot be right (before any request)."""
    for name, value in (('start_time', start_time), ('end_time', end_time)):
        if value is not None and value < 0:
            raise ValueError('%s must be epoch seconds (0 or more), got %r' % (name, value))
    if start_time is not None and end_time is not None and start_time > end_time:
        raise ValueError('start_time (%d) must not be after end_time (%d)' % (start_time, end_time))


def check_page_size(value):
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise ValueError('page_size must be an integer from 1 to %d (SendGrid\'s largest page), got %r' % (MAX_PAGE_SIZE, value))


def _item(item, mask=str):
    """One block as SendGrid documents it (created, email, reason, status), its types checked: the answer is untrusted.

    Values shown in an error are masked (``mask``, the client's redact) before they are escaped and cut."""
    if not isinstance(item, dict) or not isinstance(item.get('email'), str):
        raise SendGridError('GET %s answered an item without an email address where a block was expected: %s' % (
            PATH, shorten(escape_text(mask(repr(item))), 200)))
    created = item.get('created')
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        raise SendGridError('GET %s answered a block of %s whose created is %s, not epoch seconds' % (
            PATH, shorten(escape_text(mask(item['email'])), 200), shorten(escape_text(mask(repr(created))), 50)))
    return dict(created=int(created), email=item['email'], reason=str(item.get('reason') or ''),
                status=str(item.get('status') or ''))


def domain_of(email):
    return email.rpartition('@')[2].strip().lower() or '(no domain)'


def read_tls_blocks(client, on_behalf_of=None, start_time=None, end_time=None, email=None, page_size=MAX_PAGE_SIZE,
                    max_pages=MAX_PAGES):
    """Every block of the account in the window, paged (at most ``max_pages`` pages); the TLS ones returned with
    counts per recipient domain."""
    params = {name: value for name, value in (('start_time', start_time), ('end_time', end_time), ('email', email))
              if value not in (None, '')}
    total = 0
    blocks = []
    domains = {}
    for raw in client.paginate(PATH, params, limit=page_size, on_behalf_of=on_behalf_of, max_pages=max_pages):
        total += 1
        block = _item(raw, client.redact)
        if not is_tls_block(block['reason']):
            continue
        block['domain'] = domain_of(block['email'])
        domains[block['domain']] = domains.get(block['domain'], 0) + 1
        blocks.append(block)
    return dict(blocks=blocks, domains=domains, tls_blocks=len(blocks), blocks_read=total)
