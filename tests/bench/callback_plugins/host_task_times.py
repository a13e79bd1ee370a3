# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""For tests/bench/host_tasks.py: each task's wall time and how long each host's run of it took (from the worker's
start to its result), one JSON line per task in $HOST_TASK_TIMES. Not part of the collection."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = '''
name: host_task_times
type: aggregate
short_description: per-task, per-host durations for tests/bench/host_tasks.py
description: Writes one JSON line per task to the file named by the HOST_TASK_TIMES environment variable.
'''


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'host_task_times'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._path = os.environ.get('HOST_TASK_TIMES')
        self._task, self._task_start, self._starts, self._durations = None, None, {}, []

    def _close_task(self):
        if self._task is not None and self._path:
            with open(self._path, 'a', encoding='utf-8') as handle:
                handle.write(json.dumps(dict(task=self._task, wall=time.monotonic() - self._task_start,
                                             durations=self._durations)) + '\n')
        self._task, self._starts, self._durations = None, {}, []

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._close_task()
        self._task, self._task_start = task.get_name(), time.monotonic()

    def v2_playbook_on_play_start(self, play):
        self._close_task()

    def v2_runner_on_start(self, host, task):
        self._starts[host.name] = time.monotonic()

    def v2_runner_on_ok(self, result):
        started = self._starts.pop(result._host.name, None)  # pylint: disable=protected-access
        if started is not None:
            self._durations.append(time.monotonic() - started)

    def v2_playbook_on_stats(self, stats):
        self._close_task()
