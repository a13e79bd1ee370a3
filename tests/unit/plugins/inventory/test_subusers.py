# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The subusers inventory plugin, loaded as Ansible loads it, against canned answers of GET /v3/subusers: the hosts,
groups and variables it makes, values from the API that are never templated, and the exact username filter."""

from __future__ import annotations

import pytest
import yaml
from ansible.errors import AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader
from ansible.template import Templar

from ansible_collections.mailsec.sendgrid.tests.unit.http_conversation import answer

try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core < 2.19 treats every string as a template
    def trust_as_template(value):
        return value

KEY = 'unit-key-0123456789'
API = 'http://127.0.0.1:8025'
PLUGIN = 'mailsec.sendgrid.subusers'
GROUP = 'sendgrid_subusers'
# A subuser name, address or region that is a Jinja expression: rendered, it would print 42.
TEMPLATE = '{{ 6 * 7 }}'


def subuser(username, number, **fields):
    item = dict(id=number, username=username, email='%s@example.com' % username, disabled=False, region='global')
    item.update(fields)
    return item


def page_url(limit=500, offset=0, **params):
    query = '&'.join('%s=%s' % item for item in dict(dict(include_region='true'), **params, limit=limit, offset=offset).items())
    return '%s/v3/subusers?%s' % (API, query)


@pytest.fixture
def parse(tmp_path):
    """parse(**options) -> InventoryData: the plugin reads a configuration file with these options."""
    def run(**options):
        config = tmp_path / 'unit.sendgrid.yml'
        config.write_text(yaml.safe_dump(dict(dict(plugin=PLUGIN, api_key=KEY, api_url=API), **options)))
        plugin = inventory_loader.get(PLUGIN)
        assert plugin.verify_file(str(config))
        inventory = InventoryData()
        plugin.parse(inventory, DataLoader(), str(config), cache=False)
        return inventory
    return run


def hostvars(inventory, name):
    """The variables the plugin set (InventoryData adds inventory_file and inventory_dir itself)."""
    return {key: value for key, value in inventory.get_host(name).vars.items() if key not in ('inventory_file', 'inventory_dir')}


def rendered(value):
    """What a play gets where it uses the value, e.g. "{{ sendgrid_email }}"."""
    return Templar(loader=DataLoader(), variables=dict(value=value)).template(trust_as_template('{{ value }}'))


def test_each_enabled_subuser_is_a_local_host_with_its_variables(conversation, parse):
    conv = conversation([answer(body=[
        subuser('marketing', 1001), subuser('billing', 1002, region='eu'), subuser('legacy', 1003, region=None),
        subuser('retired', 1004, disabled=True)])])
    inventory = parse()
    assert [(call['method'], call['url']) for call in conv.calls] == [('GET', page_url())]
    assert conv.calls[0]['headers']['Authorization'] == 'Bearer ' + KEY
    assert sorted(host.name for host in inventory.groups[GROUP].get_hosts()) == ['billing', 'legacy', 'marketing']
    assert 'retired' not in inventory.hosts
    # No interpreter: the collection's tasks run on the controller; AWX would keep the one of the environment that synced.
    assert hostvars(inventory, 'billing') == dict(ansible_connection='local', sendgrid_subuser_id=1002,
                                                  sendgrid_email='billing@example.com', sendgrid_disabled=False,
                                                  sendgrid_region='eu', sendgrid_api_url=API)
    assert hostvars(inventory, 'legacy')['sendgrid_region'] == 'global'


def test_disabled_subusers_on_request(conversation, parse):
    conversation([answer(body=[subuser('marketing', 1001), subuser('retired', 1004, disabled=True)])])
    inventory = parse(include_disabled=True)
    assert sorted(host.name for host in inventory.groups[GROUP].get_hosts()) == ['marketing', 'retired']
    assert hostvars(inventory, 'retired')['sendgrid_disabled'] is True


def test_pages_until_a_short_page(conversation, parse):
    names = ['sub%d' % number for number in range(5)]
    conv = conversation([answer(body=[subuser(name, number) for number, name in enumerate(names)][start:start + 2])
                         for start in (0, 2, 4)])
    inventory = parse(page_size=2)
    assert [call['url'] for call in conv.calls] == [page_url(limit=2, offset=offset) for offset in (0, 2, 4)]
    assert sorted(inventory.hosts) == names


def test_username_is_an_exact_match(conversation, parse):
    """Whatever the API matches for the username filter, only the subuser with exactly that name becomes a host."""
    conv = conversation([answer(body=[subuser('ops-eu', 1), subuser('ops', 2), subuser('devops', 3), subuser('OPS', 4)])])
    inventory = parse(username='ops')
    assert [call['url'] for call in conv.calls] == [page_url(username='ops')]
    assert list(inventory.hosts) == ['ops']
    assert hostvars(inventory, 'ops')['sendgrid_subuser_id'] == 2


def test_username_without_match_is_an_empty_group(conversation, parse):
    conversation([answer(body=[subuser('ops-eu', 1)])])
    inventory = parse(username='ops')
    assert not inventory.hosts and not inventory.groups[GROUP].get_hosts()


def test_values_from_the_api_are_never_templated(conversation, parse):
    """A subuser named or addressed like a Jinja expression stays text wherever a play uses it (ansible-core < 2.19
    would render it, on the controller, unless it is marked unsafe; 2.19 and later never template inventory values)."""
    # A name without whitespace: names with whitespace never become hosts (see test_trust_boundaries.py).
    name, email = 'x' + TEMPLATE.replace(' ', ''), TEMPLATE + '@example.com'
    conversation([answer(body=[subuser(name, 1, email=email), subuser('plain', 2)])])
    inventory = parse(compose=dict(mailbox="'mailbox ' + sendgrid_email"))
    host = inventory.get_host(name)
    assert rendered(host.name) == name
    assert rendered(host.vars['sendgrid_email']) == email
    # Built by compose from an API value: as untrusted as its parts.
    assert rendered(host.vars['mailbox']) == 'mailbox ' + email
    assert rendered(hostvars(inventory, 'plain')['mailbox']) == 'mailbox plain@example.com'


def test_an_item_without_username_is_refused(conversation, parse):
    conversation([answer(body=[subuser('marketing', 1), dict(id=2, email='x@example.com')])])
    with pytest.raises(AnsibleParserError, match='answered an item without a username'):
        parse()


def test_an_api_error_names_the_request_never_the_key(conversation, parse):
    conversation([answer(status=401, body=dict(errors=[dict(message='bad key ' + KEY)]))])
    with pytest.raises(AnsibleParserError) as error:
        parse()
    assert 'HTTP 401' in str(error.value) and '/v3/subusers' in str(error.value)
    assert KEY not in str(error.value)
