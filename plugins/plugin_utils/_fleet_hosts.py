# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to mailsec.sendgrid: no stable interface for other collections or playbooks; it changes in any release.

"""A subuser host as the fleet engine sees it: its enforced_tls_policy_* variables resolved into an account (policy,
connection, guardrail), every error naming the variable; and, for batch mode, the other hosts' variables and the
conditions a task inherits (what Ansible keeps in objects it does not document)."""

from __future__ import annotations

import os

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.utils.sentinel import Sentinel

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import (
    CONNECTION_ARGUMENT_SPEC, DEFAULT_REGION, SendGridConfigError, check_concurrency, check_connection_params, normalize_api_key)
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import FIELDS, desired_state
from ansible_collections.mailsec.sendgrid.plugins.module_utils._values import strict_boolean
from ansible_collections.mailsec.sendgrid.plugins.plugin_utils._snapshot import DEFAULT_DIR as DEFAULT_SNAPSHOT_DIR

PREFIX = 'enforced_tls_policy_'
DEFAULT_TIMEOUT = CONNECTION_ARGUMENT_SPEC['timeout']['default']
DEFAULT_MAX_RETRIES = CONNECTION_ARGUMENT_SPEC['max_retries']['default']
# The guardrail's role variables (enforced_tls_policy_impact_*) and the recipient_tls_info options they set. The impact
# playbook maps its own impact_* variables to the same options in YAML (a task's options cannot come from Python
# without a templated args:, which Ansible warns is unsafe): tests/unit/plugins/plugin_utils/test_impact_options.py
# holds the two together.
IMPACT_OPTIONS = {'impact_' + option: option for option in ('domains', 'nameservers', 'smtp_port', 'ca_path', 'timeout',
                                                            'allow_private')}
# Every enforced_tls_policy_* variable the role and playbooks know; any other is most likely a typo.
KNOWN = frozenset(FIELDS + tuple(IMPACT_OPTIONS) + (
    'api_key', 'region', 'api_url', 'on_behalf_of', 'timeout', 'max_retries', 'concurrency', 'hosts', 'mode', 'result',
    'impact', 'max_blocked', 'batch', 'preflight', 'snapshot_dir'))


def unset(value):
    # Survey answers (AWX) arrive as '' when left empty: that means "not managed", like an undefined variable.
    return value is None or value == ''


def unknown_warning(unknown):
    """The warning about enforced_tls_policy_* variables nobody reads ([] when there are none). No host name in it:
    Ansible shows an identical warning once, not once per subuser."""
    return ['unknown variables ignored (a typo?): %s' % ', '.join(sorted(unknown))] if unknown else []


def asks_for_batch(variables, templar):
    """Whether the host's variables ask for batch mode (a hint only, so anything unreadable is a no)."""
    value = variables.get(PREFIX + 'batch')
    try:
        return not unset(value) and boolean(templar.template(value), strict=False)
    except Exception:  # pylint: disable=broad-except  # a hint only: the variable is not used in this mode
        return False


def _reader(variables, templar):
    def var(name, default=None):
        return templar.template(variables[PREFIX + name]) if PREFIX + name in variables else default
    return var


def _unknown(variables):
    return sorted(name for name in variables if name.startswith(PREFIX) and name[len(PREFIX):] not in KNOWN)


def resolve_account(host, variables, templar):
    """One host's account, policy and connection from its enforced_tls_policy_* variables (ValueError names the variable)."""
    var = _reader(variables, templar)
    try:
        policy = {field: var(field) for field in FIELDS}
        for field in ('require_tls', 'require_valid_cert'):
            policy[field] = strict_boolean(policy[field], PREFIX + field)
        desired = desired_state({k: v for k, v in policy.items() if not unset(v)}, name_prefix=PREFIX)
        if not desired:
            raise ValueError('no policy: set at least one of %s' % ', '.join(PREFIX + f for f in FIELDS))
        account = _connection(host, var, variables)
        account.update(desired=desired, impact=impact_settings(var, desired))
    except (TypeError, SendGridConfigError) as exc:
        raise ValueError(str(exc))
    return account, _unknown(variables)


def resolve_connection(host, variables, templar):
    """A host's account without its policy (a restore writes what a snapshot recorded): ({host, on_behalf_of, connection,
    concurrency, snapshot_dir}, unknown variables); ValueError names the variable."""
    try:
        return _connection(host, _reader(variables, templar), variables), _unknown(variables)
    except (TypeError, SendGridConfigError) as exc:
        raise ValueError(str(exc))


def _connection(host, var, variables):
    on_behalf_of = var('on_behalf_of', host)
    region, api_url = resolve_endpoint(var, variables)
    connection = dict(
        # Normalized here, so that "KEY" and "KEY\n" (a vault file's newline) share one preflight and one client.
        api_key=normalize_api_key(var('api_key') or os.environ.get('SENDGRID_API_KEY'), PREFIX + 'api_key'),
        region=region,
        api_url=api_url,
        timeout=_number(var('timeout'), float, PREFIX + 'timeout', DEFAULT_TIMEOUT),
        max_retries=_number(var('max_retries'), int, PREFIX + 'max_retries', DEFAULT_MAX_RETRIES),
    )
    check_connection_params(dict(connection, on_behalf_of=on_behalf_of or None), prefix=PREFIX)
    concurrency = check_concurrency(var('concurrency', 8), PREFIX + 'concurrency')
    snapshot_dir = var('snapshot_dir', DEFAULT_SNAPSHOT_DIR)
    if not isinstance(snapshot_dir, str) or not snapshot_dir.strip():
        raise ValueError('%ssnapshot_dir must be a directory path (where every write\'s previous settings are kept), got %r'
                         % (PREFIX, snapshot_dir))
    return dict(host=host, on_behalf_of=on_behalf_of or None, connection=connection, concurrency=concurrency,
                snapshot_dir=snapshot_dir)


def resolve_endpoint(var, variables):
    """(region, api_url) of a host: the first of these that is set wins, api_url over region within it.

    The role's variables; the host's own (sendgrid_api_url, sendgrid_region: the subusers inventory sets them from where
    the subuser lives and the endpoint it was listed from); the environment (SENDGRID_API_URL, SENDGRID_REGION, as for
    the modules and the AWX credential type); else SendGrid's global endpoint.
    """
    levels = (
        (var('api_url'), var('region')),
        (variables.get('sendgrid_api_url'), variables.get('sendgrid_region')),
        (os.environ.get('SENDGRID_API_URL'), os.environ.get('SENDGRID_REGION')),
    )
    for api_url, region in levels:
        if not unset(api_url):
            return region if not unset(region) else DEFAULT_REGION, api_url
        if not unset(region):
            return region, None
    return DEFAULT_REGION, None


def impact_settings(var, desired):
    """The guardrail of one host: None without enforced_tls_policy_impact_domains, else what its preview needs.

    The preview judges the host's own policy; a setting it leaves unmanaged counts as SendGrid's default (what the
    account has unless someone changed it).
    """
    domains = var('impact_domains')
    if unset(domains) or domains == []:
        return None
    options = {option: var(name) for name, option in IMPACT_OPTIONS.items()}
    options = {option: value for option, value in options.items() if not unset(value)}
    if not isinstance(options['domains'], list):
        raise ValueError('%simpact_domains must be a list of recipient domains, got %r' % (PREFIX, options['domains']))
    if 'allow_private' in options:
        options['allow_private'] = strict_boolean(options['allow_private'], PREFIX + 'impact_allow_private')
    for option, kind in (('smtp_port', int), ('timeout', float)):
        if option in options:
            options[option] = _number(options[option], kind, PREFIX + 'impact_' + option)
    options.update(desired)
    max_blocked = _number(var('max_blocked'), int, PREFIX + 'max_blocked', 0)
    if max_blocked < 0:
        raise ValueError('%smax_blocked must be a whole number of 0 or more, got %d' % (PREFIX, max_blocked))
    return dict(options=options, max_blocked=max_blocked)


def _number(value, kind, name, default=None):
    """An int or float variable (survey answers are strings), or ``default`` when unset; ValueError names it."""
    if unset(value):
        return default
    what = 'a whole number' if kind is int else 'a number'
    if isinstance(value, bool):
        raise ValueError('%s must be %s, got %r' % (name, what, value))
    try:
        number = kind(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError('%s must be %s, got %r' % (name, what, value))
    if kind is int and isinstance(value, float) and value != number:
        raise ValueError('%s must be %s, got %r' % (name, what, value))
    return number


# -- batch mode: the other hosts of the play, and the task's scope -------------------------------------------------------

def play_vars_for_host(manager, play, host, task, names):
    """VariableManager.get_vars for another host of the play (batch mode only).

    ``_hosts``/``_hosts_all`` spare Ansible from listing the play's hosts once per host (~0.3 s instead of minutes for
    1,000 hosts); every ansible-core this collection supports (meta/runtime.yml) takes them.
    """
    return manager.get_vars(play=play, host=host, task=task, _hosts=names, _hosts_all=names)


def _own(node, name):
    """A playbook object's own value of an attribute, not the one it inherits from its parents."""
    value = getattr(node, '_' + name, Sentinel)
    return None if value is Sentinel else value


def scope_conditions(task):
    """The when: conditions the task inherits (blocks, includes, imports, roles: entries), and a looping include."""
    conditions, include, seen = [], None, set()
    nodes = [task._parent, task._role]  # pylint: disable=protected-access
    while nodes:
        node = nodes.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        own = _own(node, 'when')
        if own:
            conditions.extend(own if isinstance(own, list) else [own])
        if _own(node, 'loop') is not None:
            include = getattr(node, 'action', 'an include')
        nodes.extend((getattr(node, '_parent', None), getattr(node, '_role', None)))
        nodes.extend(getattr(node, '_parents', None) or ())
        nodes.extend(getattr(node, '_dep_chain', None) or ())
    return conditions, include
