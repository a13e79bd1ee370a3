# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""The rate-limit pace of one API key, shared by the worker processes of one ``ansible-playbook`` run (controller only).

In the role's per-subuser mode each subuser host runs in a worker process of its own, which makes two requests and
exits: a pace kept in the process would learn nothing from the others, so every worker would spend the window as if
alone. This keeps module_utils/_pacing.py's state in a small file of the run's private directory instead, read and
written under an fcntl lock by each worker before and after each request (about 0.1 ms).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading

from ansible_collections.mailsec.sendgrid.plugins.module_utils._pacing import Pace

# The state is a handful of numbers; anything longer was not written by us and is ignored.
_MAX_STATE_BYTES = 4096


class FileStore:
    """A pace state in the file ``path`` (created 0600), changed under an exclusive lock on that file."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()

    def update(self, change):
        """``change(state)`` under the lock, the state written back if it changed; returns what ``change`` returns.

        A file that cannot be used (removed with the run's directory, a full disk) costs the pacing, never the request.
        """
        # Opened for each change, never kept: a descriptor inherited across a fork would share the parent's lock.
        with self._lock:
            try:
                handle = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            except OSError:
                return change({})
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
                raw = os.pread(handle, _MAX_STATE_BYTES + 1, 0)
                try:
                    state = json.loads(raw) if 0 < len(raw) <= _MAX_STATE_BYTES else {}
                except ValueError:
                    state = {}
                if not isinstance(state, dict):
                    state = {}
                before = dict(state)
                result = change(state)
                if state != before:
                    data = json.dumps(state, separators=(',', ':')).encode()
                    os.pwrite(handle, data, 0)
                    os.ftruncate(handle, len(data))
                return result
            except OSError:
                return change({})
            finally:
                os.close(handle)  # releases the lock


def shared_pace(path):
    """A Pace whose state all the run's workers share through the file ``path`` (in the run's private directory)."""
    return Pace(FileStore(path))
