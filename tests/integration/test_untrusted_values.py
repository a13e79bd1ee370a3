# -*- coding: utf-8 -*-
"""Strings from the API are data, never templates, on every supported ansible-core (the matrix runs this file).

Subusers whose username, e-mail address or region is a Jinja expression that would create a marker file on the
controller go through the inventory plugin (keyed_groups, groups and compose as the README shows them), a user's
play that prints every one of those values, and the audit playbook with its reports. No marker may appear, and
the values must arrive verbatim.
"""

from __future__ import annotations

import json
import subprocess

import yaml

from tests.conftest import API_KEY, BIN, ansible_env


def payload(marker):
    # No whitespace: SendGrid usernames have none; ${IFS} gives the shell its space.
    return "{{lookup('ansible.builtin.pipe','touch${IFS}%s')}}" % marker


def username_payload(marker):
    # Nor a '/' (the inventory plugin leaves such names out): ${PWNED_DIR} gives the shell the marker's directory.
    return "{{lookup('ansible.builtin.pipe','touch${IFS}${PWNED_DIR}%s')}}" % marker.name


def _plain(obj):
    return obj['__ansible_unsafe'] if set(obj) == {'__ansible_unsafe'} else obj


def test_api_strings_are_never_templated(sim, tmp_path):
    markers = {field: tmp_path / ('pwned-by-' + field) for field in ('username', 'email', 'region', 'compose')}
    evil_user = username_payload(markers['username'])
    sim.add_subuser(evil_user, email='%s@example.com' % payload(markers['email']))
    sim.add_subuser('plain-user')
    sim.tamper_subuser('plain-user', region=payload(markers['region']))
    source = tmp_path / 'evil.sendgrid.yml'
    source.write_text(yaml.safe_dump(dict(
        plugin='mailsec.sendgrid.subusers', api_url=sim.url,
        keyed_groups=[dict(key='sendgrid_region', prefix='region'), dict(key='sendgrid_email', prefix='mail')],
        groups=dict(templated="'lookup' in sendgrid_email"),
        compose=dict(contact="'contact ' ~ sendgrid_email", compose_marker="'{{' ~ \"lookup('ansible.builtin.pipe','touch${IFS}%s')\" ~ '}}'"
                     % markers['compose']))))
    env = ansible_env(SENDGRID_API_KEY=API_KEY, ANSIBLE_INVENTORY_UNPARSED_FAILED='true', PWNED_DIR=str(tmp_path) + '/')

    listing = subprocess.run([str(BIN / 'ansible-inventory'), '-i', str(source), '--list'], env=env, capture_output=True,
                             text=True, timeout=120, check=False)
    assert listing.returncode == 0, listing.stderr
    data = json.loads(listing.stdout, object_hook=_plain)
    assert evil_user in data['_meta']['hostvars'] and evil_user in data['templated']['hosts']
    assert data['_meta']['hostvars']['plain-user']['sendgrid_region'] == payload(markers['region'])

    # A user's play that uses every value: in messages, in a file it writes, in conditions.
    play = tmp_path / 'use.yml'
    out = tmp_path / 'values.txt'
    play.write_text(yaml.safe_dump([dict(name='Use the values', hosts='sendgrid_subusers', gather_facts=False, tasks=[
        dict(name='Print', **{'ansible.builtin.debug': dict(
            msg='{{ inventory_hostname }} | {{ sendgrid_email }} | {{ sendgrid_region }} | {{ group_names }} | {{ contact }}'
                ' | {{ compose_marker }}')}),
        # throttle: two forks editing one file with lineinfile race (each rewrites the whole file), and a lost line
        # would read as a lost host; users writing one file from many hosts serialise it the same way.
        dict(name='Write', delegate_to='localhost', throttle=1, **{'ansible.builtin.lineinfile': dict(
            path=str(out), create=True, mode='0600', line='{{ inventory_hostname }} {{ sendgrid_email }} {{ group_names | join(",") }}')}),
    ])]))
    run = subprocess.run([str(BIN / 'ansible-playbook'), '-i', str(source), str(play)], env=env, capture_output=True,
                         text=True, timeout=300, check=False, cwd=str(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "lookup('ansible.builtin.pipe'" in run.stdout.replace('\\"', '"')
    assert evil_user in out.read_text()

    # The audit over the same hosts: the plain-user's region is refused as a region, the other subuser is read. The
    # endpoint is the hosts' own (sendgrid_api_url and sendgrid_region, from the inventory), as without role variables.
    audit = subprocess.run([str(BIN / 'ansible-playbook'), '-i', str(source), 'mailsec.sendgrid.audit', '-e',
                            'enforced_tls_policy_require_tls=true'],
                           env=env, capture_output=True, text=True, timeout=300, check=False, cwd=str(tmp_path))
    assert audit.returncode == 2 and 'region must be one of' in audit.stdout, audit.stdout + audit.stderr
    report = json.loads((tmp_path / 'enforced_tls_audit.json').read_text())
    assert {row['subuser'] for row in report['subusers']} == {evil_user, 'plain-user'}
    # The subuser with the bad region got no request; the other was read under its own (verbatim) name.
    assert [r['on_behalf_of'] for r in sim.requests if r['on_behalf_of']] == [evil_user]

    assert [m.name for m in markers.values() if m.exists()] == []
