# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""The one escaping point for text from the network shown to people.

Text from SendGrid's API, a server in between or a subuser's name reaches terminals, AWX job output and Markdown
reports. A control character there can clear the screen or fake lines (ESC sequences), a bidi or other format
character (U+202E, U+200B) can make a name read as another. Everything such a string shows passes through
:func:`escape_text`; Markdown table cells through :func:`markdown_cell`, which adds the escapes of Markdown and HTML.
"""

from __future__ import annotations

import unicodedata

# Control (C0, DEL, C1), format (bidi overrides, zero-width characters), lone surrogates (printing one fails with
# UnicodeEncodeError) and the Unicode line and paragraph separators (a line break to many viewers).
_ESCAPED_CATEGORIES = frozenset(('Cc', 'Cf', 'Cs', 'Zl', 'Zp'))
_SHORT = {'\n': '\\n', '\r': '\\r', '\t': '\\t'}
_MARKDOWN = {'\\': '\\\\', '|': '\\|', '`': '\\`', '[': '\\[', ']': '\\]', '<': '&lt;', '>': '&gt;', '&': '&amp;'}


def _escape_character(character):
    if character in _SHORT:
        return _SHORT[character]
    if unicodedata.category(character) not in _ESCAPED_CATEGORIES:
        return character
    code = ord(character)
    if code < 0x100:
        return '\\x%02x' % code
    if code < 0x10000:
        return '\\u%04x' % code
    return '\\U%08x' % code


def escape_text(text):
    """``text`` with every control, format, surrogate and line/paragraph separator character shown as an escape.

    ``'\\x1b[2J'`` becomes ``'\\\\x1b[2J'`` (a backslash, then ``x1b``), U+202E ``'\\\\u202e'``, a newline ``'\\\\n'``.
    Anything else (printable text in any script) is kept. A value that is not a string is shown as ``str()`` does.
    """
    if not isinstance(text, str):
        text = str(text)
    if text.isprintable():  # the common case, without a loop over the characters
        return text
    return ''.join(_escape_character(character) for character in text)


def markdown_cell(text):
    """``text`` safe inside one cell of a Markdown table: escaped as ``escape_text`` does (so no line breaks remain),
    then ``\\``, ``|``, backquote and square brackets backslash-escaped and ``<``, ``>``, ``&`` as HTML entities,
    so a value can neither end its cell, nor become a link, code or HTML in a Markdown viewer."""
    return ''.join(_MARKDOWN.get(character, character) for character in escape_text(text))


def shorten(text, limit):
    """``text`` cut to at most ``limit`` characters, the cut marked with '...'. Cut only what is masked and escaped:
    a secret cut first would no longer be recognised by the masking."""
    return text if len(text) <= limit else text[:max(limit - 3, 0)] + '...'
