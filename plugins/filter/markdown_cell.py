# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: markdown_cell
short_description: Text from the network made safe for one cell of a Markdown table
version_added: 0.1.0
author:
  - mailsec.sendgrid maintainers (@mailsec)
description:
  - Shows control, format (bidi, zero-width), surrogate and line or paragraph separator characters as escapes
    (C(\x1b), C(\u202e), C(\n)), as the P(mailsec.sendgrid.escape_text#filter) filter does, then escapes C(\), C(|), the backquote
    and square brackets with a backslash and C(<), C(>), C(&) as HTML entities.
  - A value from an API, a DNS answer or a certificate can then neither end its cell or its row, nor become HTML, a link
    or code in a Markdown viewer. The collection's Markdown reports use it for every such value.
options:
  _input:
    description: The text. A value that is not a string is converted to text first.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: One row of a report, whatever a subuser's name holds
  ansible.builtin.debug:
    msg: "| {{ subuser | mailsec.sendgrid.markdown_cell }} | {{ message | mailsec.sendgrid.markdown_cell }} |"
  vars:
    subuser: "a|b<img src=x onerror=alert(1)>"
    message: "first line\nsecond line"
  # msg: "| a\\|b&lt;img src=x onerror=alert(1)&gt; | first line\\nsecond line |"
"""

RETURN = r"""
_value:
  description: The text, escaped; one line.
  type: str
"""

from ansible_collections.mailsec.sendgrid.plugins.module_utils._text import markdown_cell


class FilterModule:
    def filters(self):
        return {'markdown_cell': markdown_cell}
