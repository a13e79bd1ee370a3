# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: escape_text
short_description: Text from the network with control and bidi characters shown escaped
version_added: 0.1.0
author:
  - mailsec.sendgrid maintainers (@mailsec)
description:
  - Shows control characters (C0, DEL, C1), format characters (Unicode category Cf, for example the bidi override
    U+202E or the zero-width space U+200B), lone surrogates and the line and paragraph separators U+2028/U+2029 as
    escapes, C(\x1b), C(\u202e), and C(\n), C(\r), C(\t) for line breaks and tabs. Everything else is kept.
  - For a value from an API or a peer shown to people (a terminal, AWX job output, a log), so that it can neither
    send terminal sequences nor read as something it is not.
options:
  _input:
    description: The text. A value that is not a string is converted to text first.
    type: raw
    required: true
seealso:
  - plugin: mailsec.sendgrid.markdown_cell
    plugin_type: filter
    description: The same, for a cell of a Markdown table.
"""

EXAMPLES = r"""
- name: Show an API message safely
  ansible.builtin.debug:
    msg: "{{ result.msg | mailsec.sendgrid.escape_text }}"
"""

RETURN = r"""
_value:
  description: The text, escaped.
  type: str
"""

from ansible_collections.mailsec.sendgrid.plugins.module_utils._text import escape_text


class FilterModule:
    def filters(self):
        return {'escape_text': escape_text}
