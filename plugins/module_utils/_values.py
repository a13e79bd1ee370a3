# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""Two small value rules shared by the modules and the controller: the one UTC timestamp format and strict booleans."""

from __future__ import annotations

import datetime

from ansible.module_utils.parsing.convert_bool import boolean

# Fixed width, so that such strings also compare in time order.
ISO_FORMAT = '%Y-%m-%dT%H:%M:%SZ'
UTC = datetime.timezone.utc


def utc_now():
    """Now in UTC as ISO 8601 text (``2025-01-31T09:00:00Z``)."""
    return datetime.datetime.now(UTC).strftime(ISO_FORMAT)


def strict_boolean(value, name):
    """A boolean given as a string ("true", "no": survey answers, inventory files) as a bool; any other string is a
    ValueError naming ``name``, never guessed. Anything that is not a non-empty string is returned as it is."""
    if isinstance(value, str) and value != '':
        try:
            return boolean(value, strict=True)
        except TypeError:
            raise ValueError('%s must be a boolean (true or false), got %r' % (name, value))
    return value
