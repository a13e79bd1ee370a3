# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""What the collection's Event-Driven Ansible sources share: their options, the client, the subusers watched, the
poll loop, its pacing and how failures are reported.

The client is blocking (requests): each call runs in a worker thread, so the rulebook's event loop never waits on
SendGrid.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import (
    SendGridClient, SendGridError, check_concurrency, check_connection_params, check_on_behalf_of, connection_argument_spec)
from ansible_collections.mailsec.sendgrid.plugins.module_utils._text import escape_text, shorten

SUBUSERS_PATH = '/v3/subusers'
# A subuser name travels as the run's host limit (event meta.hosts): only plain names, which no host pattern reads as
# more than one host (no * ? [ ] ! & : , ~, no leading @ that would read a file), nor as a template ({ }).
_PLAIN_NAME = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.@+-]*')
# A failing listing is tried again after 5 s, then 10, 20... up to the interval.
FIRST_RETRY = 5.0
SHOWN_CHARS = 300

WATCH_OPTIONS = dict(
    subusers=dict(type='list', elements='str'),
    interval=dict(type='float', default=300.0),
    refresh_interval=dict(type='float', default=3600.0),
    concurrency=dict(type='int', default=4),
    requests_per_second=dict(type='float'),
)


def plain_name_problem(name):
    """Why ``name`` cannot be watched (see _PLAIN_NAME), or None."""
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or '..' in name:
        return ('not a plain subuser name (letters, digits and _ . @ + -, not starting with a punctuation mark, no "..": '
                'it becomes the host limit of the healing run)')
    return None


def check_options(source, args, own_spec):
    """The validated options of ``source`` (its rulebook name): ValueError naming the option, before any request."""
    args = {key: value for key, value in (args or {}).items() if key != 'eda_feedback_queue'}
    spec = connection_argument_spec(**WATCH_OPTIONS)
    # Each source addresses subusers itself; on_behalf_of would be one fixed account.
    del spec['on_behalf_of']
    spec.update(own_spec)
    unknown = sorted(set(args) - set(spec))
    if unknown:
        raise ValueError('%s: unknown option(s) %s; supported: %s' % (source, ', '.join(unknown), ', '.join(sorted(spec))))
    # An empty variable (an unset --env-vars value, an empty credential field) means "not set", as in the inventory plugin.
    args = {key: value for key, value in args.items() if value != ''}
    result = ArgumentSpecValidator(spec).validate(args)
    if result.error_messages:
        raise ValueError('%s: %s' % (source, '; '.join(result.error_messages)))
    options = result.validated_parameters
    try:
        check_connection_params(options)
    except SendGridError as exc:
        raise ValueError('%s: %s' % (source, exc))
    for name, low in (('interval', 1.0), ('refresh_interval', 1.0), ('requests_per_second', 0.01)):
        if options[name] is None:
            continue
        if not (options[name] >= low and math.isfinite(options[name])):
            raise ValueError('%s: %s must be a number of at least %g, got %r' % (source, name, low, options[name]))
    options['concurrency'] = check_concurrency(options['concurrency'], '%s: concurrency' % source)
    for index, name in enumerate(options['subusers'] or ()):
        label = 'subusers[%d]' % index
        try:
            check_on_behalf_of(name, label)
        except SendGridError as exc:
            raise ValueError('%s: %s' % (source, exc))
        problem = plain_name_problem(name)
        if problem:
            raise ValueError('%s: %s is %s, got "%s"' % (source, label, problem, escape_text(name)))
    return options


def subuser_event(kind, subuser, **fields):
    """An event of a source: {"sendgrid": {...}}, limited to the subuser's host when it names one."""
    event = {'sendgrid': dict(type=kind, subuser=subuser, **fields)}
    if subuser:
        event['meta'] = {'hosts': subuser}
    return event


class Watch:
    """One source's client, subusers and poll loop. ``poll(name)`` reads one subuser and returns the events it makes."""

    def __init__(self, source, options, logger=None):
        self.source = source
        self.options = options
        self.log = logger or logging.getLogger(source)
        self.client = SendGridClient(
            api_key=options['api_key'], region=options.get('region'), api_url=options.get('api_url'),
            timeout=options['timeout'], validate_certs=options['validate_certs'], max_retries=options['max_retries'],
            pool_size=options['concurrency'])
        # The client paces every request from SendGrid's X-RateLimit-* answers already; requests_per_second is a lower
        # budget of the watch's own, to leave room in the account's limit for other automation.
        self._gap = 1.0 / options['requests_per_second'] if options['requests_per_second'] else 0.0
        self._next_slot = 0.0
        self._slot_lock = asyncio.Lock()
        self._subusers = list(options['subusers']) if options['subusers'] else None
        self._listed_at = None
        self._left_out = set()
        self._failing = {}

    async def call(self, function, *args, **kwargs):
        """``function(*args, **kwargs)`` in a worker thread, started no sooner than the pace allows."""
        async with self._slot_lock:
            now = time.monotonic()
            start = max(now, self._next_slot)
            self._next_slot = start + self._gap
        if start > now:
            await asyncio.sleep(start - now)
        return await asyncio.to_thread(function, *args, **kwargs)

    async def subusers(self):
        """The names watched: the subusers option, or every enabled subuser, listed again every refresh_interval."""
        if self.options['subusers']:
            return self._subusers
        if self._listed_at is None or time.monotonic() - self._listed_at >= self.options['refresh_interval']:
            items = await self.call(lambda: list(self.client.paginate(SUBUSERS_PATH, limit=500)))
            names = []
            for item in items:
                if not isinstance(item, dict) or item.get('disabled'):
                    continue
                problem = plain_name_problem(item.get('username'))
                if problem:
                    shown = self._shown(repr(item.get('username')))
                    if shown not in self._left_out:
                        self._left_out.add(shown)
                        self.log.warning('%s: subuser %s left out: its name is %s', self.source, shown, problem)
                    continue
                names.append(item['username'])
            self._subusers, self._listed_at = names, time.monotonic()
        return self._subusers

    def _shown(self, text):
        return shorten(escape_text(self.client.redact(text)), SHOWN_CHARS)

    async def _failed(self, queue, subuser, exc):
        """A failure is logged every time, and becomes one error event per run of failures of that subuser (or of the
        listing, subuser None), so a rulebook can alert without being flooded."""
        message = self._shown(str(exc))
        self.log.warning('%s: %s', self.source, message)
        if subuser not in self._failing:
            self._failing[subuser] = message
            await queue.put(subuser_event('error', subuser, message=message))

    def _recovered(self, subuser):
        if self._failing.pop(subuser, None) is not None:
            self.log.warning('%s: %s answers again', self.source, subuser or 'the subuser listing')

    async def poll_once(self, queue, poll):
        """One round over every subuser watched; False when even the listing failed."""
        try:
            names = await self.subusers()
        except SendGridError as exc:
            await self._failed(queue, None, exc)
            return False
        self._recovered(None)
        gate = asyncio.Semaphore(self.options['concurrency'])

        async def one(name):
            async with gate:
                try:
                    events = await poll(name)
                except SendGridError as exc:
                    await self._failed(queue, name, exc)
                    return
                self._recovered(name)
                for event in events:
                    await queue.put(event)

        await asyncio.gather(*(one(name) for name in names))
        return True

    async def run(self, queue, poll):
        """Poll every interval (a round that takes longer is followed at once by the next), forever."""
        interval = self.options['interval']
        retry = FIRST_RETRY
        try:
            while True:
                started = time.monotonic()
                if await self.poll_once(queue, poll):
                    retry = FIRST_RETRY
                    pause = interval - (time.monotonic() - started)
                else:
                    pause, retry = min(retry, interval), min(retry * 2, interval)
                await asyncio.sleep(max(pause, 0))
        finally:
            self.client.close()


async def run_source(source, queue, args, own_spec, make_poll, check=None):
    """The body of a source's main(): options checked before anything else, then the poll loop forever.

    ``check(options)`` returns the options with the source's own checks done (ValueError names the option);
    ``make_poll(options, watch)`` returns the coroutine function that reads one subuser."""
    options = check_options(source, args, own_spec)
    if check:
        try:
            options = check(options)
        except ValueError as exc:
            raise ValueError('%s: %s' % (source, exc)) from None
    watch = Watch(source, options)
    await watch.run(queue, make_poll(options, watch))
