# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: subusers
short_description: SendGrid subusers as inventory hosts
version_added: 0.1.0
author:
  - mailsec.sendgrid maintainers (@mailsec)
description:
  - Lists the subusers of a SendGrid parent account (C(GET /v3/subusers), paged with C(limit)/C(offset))
    and makes each one a host named after its username, in the group C(sendgrid_subusers).
  - Hosts run locally (C(ansible_connection=local)), since the tasks call SendGrid's API on their behalf. The
    collection's role and playbooks run nothing on them but controller-side actions, so no interpreter is set.
  - To run modules on these hosts with the Python that runs C(ansible-playbook) (the one with C(requests)), set
    C(ansible_python_interpreter) to C({{ ansible_playbook_python }}) in C(group_vars/sendgrid_subusers.yml). It is
    evaluated when the job runs, so AWX uses its execution environment's Python, not the one that synced the inventory.
  - Host variables C(sendgrid_subuser_id), C(sendgrid_email), C(sendgrid_disabled) and C(sendgrid_region)
    (V(global) or V(eu)).
  - Disabled subusers are left out unless O(include_disabled) is true.
  - The configuration file name must end in C(sendgrid.yml) or C(sendgrid.yaml).
  - Connection options are those of the collection's modules. O(api_key) and O(api_url) may be templates
    (for example a lookup).
  - A non-default O(api_url) (set in the file or by E(SENDGRID_API_URL)) is given to every host as the host variable
    C(sendgrid_api_url), which the role C(mailsec.sendgrid.enforced_tls_policy) uses, so the hosts are managed
    through the endpoint they were listed from.
  - Subuser names are untrusted. Only plain SendGrid usernames become hosts - printable ASCII without whitespace,
    without C(/) or C(\), without C(..) and not starting with C(account-id) (the form of C(on-behalf-of) that
    addresses an account by its id). Any other name is left out with a warning that shows it escaped (control
    and bidi characters as C(\x1b), C(\u202e)).
  - A name that another inventory source has already defined as a host is left out with a warning, never merged
    into that host (it would get C(ansible_connection=local) and this plugin's group). Ansible parses the sources of
    an inventory directory in alphabetical order, so a host defined by a source parsed after this one cannot be
    detected. Keep the subusers source in an inventory of its own (its own directory, or its own C(-i) file).
extends_documentation_fragment:
  - mailsec.sendgrid.api
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  api_key:
    env:
      - name: SENDGRID_API_KEY
  region:
    env:
      - name: SENDGRID_REGION
  api_url:
    env:
      - name: SENDGRID_API_URL
  plugin:
    description: The name of this plugin; must be V(mailsec.sendgrid.subusers).
    type: str
    required: true
    choices: [mailsec.sendgrid.subusers]
  include_disabled:
    description: Also list disabled subusers (with C(sendgrid_disabled=true)).
    type: bool
    default: false
  username:
    description:
      - Only the subuser with exactly this username (at most one host).
      - Sent as SendGrid's C(username) filter of C(GET /v3/subusers), documented as the subuser's username; the
        answer is also filtered by exact name here, so the result is the same whichever way the API matches.
    type: str
  page_size:
    description: Subusers asked for per request (SendGrid allows at most 500).
    type: int
    default: 500
  max_pages:
    description:
      - At most this many pages are requested (200 pages of O(page_size)=500 are 100,000 subusers). A server that
        still answers full pages then fails the source with an error naming this option; one that answers the same
        full page twice fails at once.
      - The answers together may hold at most O(max_pages) x 256 KiB (a page of 500 subusers is under 100 KiB).
    type: int
    default: 200
"""

EXAMPLES = r"""
# demo.sendgrid.yml — every enabled subuser of the account whose key is in SENDGRID_API_KEY
plugin: mailsec.sendgrid.subusers

# eu.sendgrid.yml — EU subusers in their own group, cached for an hour, key from a vault-encrypted variable file
# plugin: mailsec.sendgrid.subusers
# api_key: "{{ lookup('ansible.builtin.env', 'SENDGRID_PARENT_KEY') }}"
# include_disabled: true
# keyed_groups:
#   - key: sendgrid_region
#     prefix: region
# groups:
#   disabled: sendgrid_disabled
# cache: true
# cache_plugin: ansible.builtin.jsonfile
# cache_connection: ~/.cache/sendgrid-inventory
# cache_timeout: 3600
"""

import re
from collections.abc import Mapping

from ansible.errors import AnsibleParserError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.mailsec.sendgrid.plugins.module_utils._text import escape_text, shorten
from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import DEFAULT_REGION, SendGridClient, SendGridError
from ansible_collections.mailsec.sendgrid.plugins.module_utils._redact import redact

try:
    from ansible.utils.unsafe_proxy import wrap_var
except ImportError:  # an ansible-core without the module never templates what an inventory plugin sets
    def wrap_var(value):
        return value

GROUP = 'sendgrid_subusers'
_TEMPLATE_CHARACTERS = re.compile('[{}]')
# A plain SendGrid username as a host name: printable ASCII, no whitespace, no path separators.
_USERNAME = re.compile(r'[!-~]+')
_SHOWN_ITEM_CHARS = 300


def username_problem(name):
    """Why ``name`` (a subuser's username from the API) cannot be a host name, or None when it is a plain username.

    Anything else could address another account (``account-id 4242`` is how on-behalf-of names an account by id),
    make per-host files land outside their folder (``../../x``), or fool people and terminals (control, bidi and
    zero-width characters).
    """
    if not isinstance(name, str) or not name:
        return 'not a non-empty string'
    if not _USERNAME.fullmatch(name):
        return 'not printable ASCII without whitespace'
    if '/' in name or '\\' in name:
        return 'contains a path separator (/ or \\)'
    if '..' in name:
        return 'contains ".."'
    if name.lower().startswith('account-id'):
        return 'starts with "account-id", the form that addresses an account by its id'
    return None


def make_unsafe(value):
    """Mark strings that could be Jinja as unsafe, so that ansible-core 2.16-2.18 never templates them.

    Subuser names, e-mail addresses and regions come from the API: a name such as
    "{{ lookup('pipe', ...) }}" would otherwise run on the controller wherever a play uses it (2.19 and
    later do not template inventory values anyway). Plain strings stay plain: unsafe text is slower.
    """
    if isinstance(value, Mapping):
        return {make_unsafe(key): make_unsafe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(make_unsafe(item) for item in value)
    if isinstance(value, str) and _TEMPLATE_CHARACTERS.search(value):
        return wrap_var(value)
    return value


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):

    NAME = 'mailsec.sendgrid.subusers'

    def _sanitize_group_name(self, name):
        # Group names made by keyed_groups/groups from API values: unsafe like the values, or group_names
        # would carry a template into every play that reads it.
        return make_unsafe(super()._sanitize_group_name(name))

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(('sendgrid.yml', 'sendgrid.yaml'))

    def _option(self, name):
        value = self.get_option(name)
        if value == '':
            value = None  # an empty variable in an AWX credential or an env file means "not set"
        if isinstance(value, str) and name in ('api_key', 'api_url') and self.templar.is_possibly_template(value):
            value = self.templar.template(value)
        return value

    def _fetch(self):
        page_size = self.get_option('page_size')
        if not 1 <= page_size <= 500:
            raise AnsibleParserError('page_size must be an integer from 1 to 500, got %d' % page_size)
        max_pages = self.get_option('max_pages')
        if max_pages < 1:
            raise AnsibleParserError('max_pages must be an integer of 1 or more, got %d' % max_pages)
        self._api_key = self._option('api_key')
        client = SendGridClient(
            api_key=self._api_key, region=self._option('region'), api_url=self._api_url,
            timeout=self.get_option('timeout'), validate_certs=self.get_option('validate_certs'),
            max_retries=self.get_option('max_retries'))
        params = dict(include_region='true')
        if self.get_option('username'):
            params['username'] = self.get_option('username')
        try:
            subusers = list(client.paginate('/v3/subusers', params, limit=page_size, max_pages=max_pages))
        finally:
            client.close()
        if params.get('username'):
            subusers = [item for item in subusers if isinstance(item, dict) and item.get('username') == params['username']]
        return subusers

    def _check_config(self, config):
        """Refuse what Ansible's option layer would silently accept: unknown options, non-boolean words."""
        unknown = sorted(set(config) - set(self._options))
        if unknown:
            raise AnsibleParserError('mailsec.sendgrid.subusers: unknown option(s) %s; supported: %s' % (
                ', '.join(unknown), ', '.join(sorted(self._options))))
        for name in ('include_disabled', 'validate_certs', 'strict', 'cache', 'use_extra_vars', 'leading_separator'):
            if name in config and not isinstance(config[name], bool):
                # Ansible reads any word it does not know as false: "validate_certs: maybe" would turn checks off.
                try:
                    boolean(config[name], strict=True)
                except TypeError:
                    raise AnsibleParserError("mailsec.sendgrid.subusers: '%s' must be a boolean (true or false), got %r"
                                             % (name, config[name]))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._api_key = None
        self._check_config(self._read_config_data(path))
        # Read before the cache, because hosts get it even from a cached listing.
        self._api_url = self._option('api_url')
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option('cache') and cache
        subusers = None
        if use_cache:
            subusers = self._cache.get(cache_key)
        if subusers is None:
            try:
                subusers = self._fetch()
            except SendGridError as exc:
                # The client masked its own key already; the raw option value is masked too (a trailing newline).
                raise AnsibleParserError(redact('mailsec.sendgrid.subusers: %s' % exc, (self._api_key,)))
            if self.get_option('cache'):
                self._cache[cache_key] = subusers
        self._populate(subusers)

    def _shown_item(self, item):
        # An answer may echo the key (in any form): masked, then escaped, then cut, in that order.
        return shorten(escape_text(redact(repr(item), (self._api_key,))), _SHOWN_ITEM_CHARS)

    def _populate(self, subusers):
        self.inventory.add_group(GROUP)
        strict = self.get_option('strict')
        # Hosts that exist before this source adds any are another source's: never merged into.
        others = set(self.inventory.hosts)
        for item in subusers:
            if not isinstance(item, dict) or not item.get('username'):
                raise AnsibleParserError('mailsec.sendgrid.subusers: GET /v3/subusers answered an item without a username: %s'
                                         % self._shown_item(item))
            if item.get('disabled') and not self.get_option('include_disabled'):
                continue
            name = item['username']
            problem = username_problem(name)
            if problem:
                self.display.warning('mailsec.sendgrid.subusers: subuser "%s" left out: its name is %s (only plain SendGrid '
                                     'usernames become hosts)' % (shorten(escape_text(name), _SHOWN_ITEM_CHARS), problem))
                continue
            if name in others:
                self.display.warning('mailsec.sendgrid.subusers: subuser "%s" left out: another inventory source already '
                                     'defines a host of that name, which is not merged with a subuser (keep the subusers '
                                     'source in an inventory of its own)' % name)
                continue
            item = make_unsafe(item)
            host = self.inventory.add_host(item['username'], group=GROUP)
            hostvars = dict(
                ansible_connection='local',
                sendgrid_subuser_id=item.get('id'),
                sendgrid_email=item.get('email'),
                sendgrid_disabled=bool(item.get('disabled')),
                sendgrid_region=item.get('region') or DEFAULT_REGION,
            )
            if self._api_url:
                hostvars['sendgrid_api_url'] = self._api_url
            for name, value in hostvars.items():
                self.inventory.set_variable(host, name, value)
            self._set_composite_vars(self.get_option('compose'), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option('groups'), hostvars, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option('keyed_groups'), hostvars, host, strict=strict)
            # compose: results built from API values (a string concatenation) are as untrusted as their parts.
            for name, value in list(self.inventory.get_host(host).vars.items()):
                self.inventory.set_variable(host, name, make_unsafe(value))
