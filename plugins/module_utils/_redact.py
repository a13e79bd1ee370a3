# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""The one masking point: API keys and anything credential-shaped out of every text that people or logs see.

Apart from the client so that whatever shows text from a server or an exception (modules, the fleet action, the
inventory plugin, the snapshot journal) masks it the same way, with nothing to import but the standard library.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from urllib.parse import quote

MASK = '********'
# Credentials of any account in a header or in SendGrid's own key format, whoever's they are (an echoing
# server may print another key than ours); at least 8 characters so ordinary words are left alone.
_CREDENTIAL_PATTERNS = (
    re.compile(r'\b(?:Bearer|Basic) [A-Za-z0-9._~+/=-]{8,}'),
    re.compile(r'\bSG\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}'),
)


@functools.lru_cache(maxsize=16)
def _secret_pattern(secrets):
    """One regular expression for every form in which any of ``secrets`` can appear in a message.

    The forms: as given, stripped, repr/JSON-escaped, URL-quoted and base64 (standard and URL-safe) at the
    three byte alignments, so the key is found inside a longer encoded string too (``Basic base64(user:key)``);
    of base64 only the characters that depend on the key alone are kept.
    """
    forms = set()
    for text in {t for secret in secrets for t in (secret, secret.strip())}:
        if not text:
            continue
        forms.update((text, repr(text)[1:-1], json.dumps(text)[1:-1], quote(text, safe=''),
                      text.encode('unicode_escape').decode('ascii')))
        raw = text.encode('utf-8', 'replace')
        for offset in range(3):
            start, end = -(-offset * 8 // 6), (offset + len(raw)) * 8 // 6
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                forms.add(encode(b'\0' * offset + raw + b'\0\0').decode('ascii')[start:end])
    # Too short a fragment would mask ordinary text; longest first, so a longer form wins over its own prefix.
    forms = sorted((form for form in forms if len(form) >= 4), key=len, reverse=True)
    return re.compile('|'.join(re.escape(form) for form in forms)) if forms else None


def redact(text, secrets=()):
    """The one masking point: ``text`` without any of ``secrets`` in any form, nor anything credential-shaped.

    Every message built from an exception or a server's answer passes through here (client errors, the
    fleet action's results and reports, the inventory plugin's errors), so masking never depends on
    Ansible's ``no_log`` matching the exact string.
    """
    if not isinstance(text, str):
        return text
    # Whole headers first: "Bearer <key>" becomes one mask, not "Bearer " and a masked key.
    for credential in _CREDENTIAL_PATTERNS:
        text = credential.sub(MASK, text)
    pattern = _secret_pattern(tuple(sorted(s for s in secrets if isinstance(s, str) and s)))
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return text


def redact_data(data, secrets=()):
    """``redact`` applied to every string of a result (dicts, lists), keys included."""
    if isinstance(data, str):
        return redact(data, secrets)
    if isinstance(data, dict):
        return type(data)((redact_data(key, secrets), redact_data(value, secrets)) for key, value in data.items())
    if isinstance(data, (list, tuple)):
        return type(data)(redact_data(item, secrets) for item in data)
    return data
