# -*- coding: utf-8 -*-
"""Trust boundaries: what a hostile API endpoint, a crafted subuser name or a crafted option can make the collection do.

Everything runs through real ansible-playbook / ansible-inventory processes against servers on 127.0.0.1
(tests/reliability/hostile.py), a few exact conversations through SendGridClient directly. Wall-time limits here are
generous safety nets only; the figures are measured by trust_boundaries_bench.py.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from ansible_collections.mailsec.sendgrid.plugins.module_utils._text import escape_text, markdown_cell
from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import (
    MAX_MESSAGES, MAX_MESSAGES_CHARS, SendGridClient, SendGridConfigError, SendGridError, check_on_behalf_of)
from tests.conftest import API_KEY, ROOT
from tests.reliability import hostile
from tests.reliability.helpers import inventory_listing, run_ansible_inventory
from tests.reliability.raw_server import RawServer, respond

SETTINGS = dict(require_tls=True, require_valid_cert=False, version=1.2)


def assert_no_key(text):
    """Nothing of the key's secret part, in any form the servers here echo it: plain, or base64."""
    for size in (8, 10):
        for start in range(0, len(API_KEY) - size + 1):
            assert API_KEY[start:start + size] not in text, (API_KEY[start:start + size], text)
    encoded = hostile.key_base64()
    for start in range(0, len(encoded) - 12 + 1, 4):
        assert encoded[start:start + 12] not in text, text


def assert_no_raw_controls(text):
    assert '\x1b' not in text and '\u202e' not in text, repr(text)


# --- the module against hostile endpoints, through one ansible-playbook run ------------------------------------------

HOSTILE = dict(
    endless=hostile.endless_chunked,
    drip_body=hostile.DRIP_BODY,
    drip_head=hostile.DRIP_HEAD,
    huge=hostile.huge_body(announced=True),
    huge_unannounced=hostile.huge_body(announced=False),
    echo=hostile.echo,
    escaping=hostile.escaping_errors,
)


def test_hostile_endpoints_through_ansible_playbook(run_playbook):
    """timeout 5, max_retries 0: each task fails alone with a clear, bounded message, and the run ends."""
    servers = {name: RawServer(behaviour, lifetime=120, io_timeout=10).start() for name, behaviour in HOSTILE.items()}
    # on_behalf_of with NUL, VT and ESC: refused before any request (this server would answer, and counts).
    servers['plain'] = RawServer(respond(200, SETTINGS), lifetime=120).start()
    tasks = [{'name': name, 'mailsec.sendgrid.enforced_tls_info': dict(api_url=server.url, timeout=5, max_retries=0),
              'register': name, 'ignore_errors': True} for name, server in servers.items() if name != 'plain']
    refused = dict(nul='sub\x000001', vt='sub\x0b0001', esc='sub\x1b[2J0001')
    tasks += [{'name': name, 'mailsec.sendgrid.enforced_tls_info': dict(
        api_url=servers['plain'].url, on_behalf_of=value, timeout=5, max_retries=0), 'register': name, 'ignore_errors': True}
        for name, value in refused.items()]
    started = time.monotonic()
    try:
        run = run_playbook(tasks=tasks, save=[task['register'] for task in tasks], env=dict(SENDGRID_API_KEY=API_KEY))
    finally:
        for server in servers.values():
            server.stop()
    elapsed = time.monotonic() - started
    assert elapsed < 60, elapsed  # safety net only: the attempts are bounded by 5 s each
    results = run.results
    assert set(results) == {task['register'] for task in tasks}, run.output
    assert 'Traceback' not in run.output and 'MODULE FAILURE' not in run.output, run.output
    for name, result in results.items():
        assert result['failed'] is True, (name, result)
    msg = {name: result['msg'] for name, result in results.items()}

    for name in ('endless', 'huge', 'huge_unannounced'):
        assert msg[name].startswith('SendGrid API answer refused: GET /v3/user/settings/enforced_tls answered more than '
                                    '4 MiB, the limit of one answer'), (name, msg[name])
    for name in ('drip_body', 'drip_head'):
        assert 'timed out on GET %s/v3/user/settings/enforced_tls: no complete answer within 5 s' % servers[name].url in msg[name], msg[name]

    # The echoed key straddled the old cut at 200 characters: nothing of it shows, masked before the cut.
    assert msg['echo'].startswith('SendGrid API error: HTTP 400 Bad Request on GET /v3/user/settings/enforced_tls: '
                                  'non-JSON answer (text/plain): Bad request from proxy '), msg['echo']
    assert len(msg['echo']) < 400, msg['echo']
    assert_no_key(run.output)

    # Terminal sequences and the bidi override shown escaped; one message and the whole message bounded.
    assert '\\x1b[2J\\x1b[H ok: [sub0001] => fine \\u202etxt.exe (field: require_tls)' in msg['escaping'], msg['escaping']
    assert_no_raw_controls(run.output)
    assert len(msg['escaping']) < MAX_MESSAGES_CHARS + 200 and 'm' * 300 not in msg['escaping'], len(msg['escaping'])

    for name, code in (('nul', 'U+0000'), ('vt', 'U+000B'), ('esc', 'U+001B')):
        assert msg[name].startswith('on_behalf_of contains %s: a subuser username or "account-id <id>" holds no control' % code), msg[name]
    assert servers['plain'].connections == 0


# --- exact conversations through the client ---------------------------------------------------------------------------

def client(url, **options):
    return SendGridClient(api_key=API_KEY, api_url=url, sleep=lambda seconds: None, **options)


def test_error_messages_are_capped_after_masking():
    with RawServer(hostile.escaping_errors, lifetime=20) as server:
        with pytest.raises(SendGridError) as info:
            client(server.url, max_retries=0).request('GET', '/v3/user/settings/enforced_tls')
    messages = info.value.messages
    # MAX_MESSAGES messages, then how many were left out; each escaped and cut.
    assert len(messages) == MAX_MESSAGES + 1 and messages[-1] == 'and %d more messages' % (1002 - MAX_MESSAGES)
    assert messages[0] == escape_text(hostile.TERMINAL_ATTACK) + ' (field: require_tls)'
    assert len(messages[1]) == 300 and messages[1].endswith('...')


def test_a_page_repeated_is_refused_at_the_second_request():
    with RawServer(hostile.same_page, lifetime=20) as server:
        with pytest.raises(SendGridError) as info:
            list(client(server.url).paginate('/v3/subusers', limit=50))
    assert str(info.value) == ('GET /v3/subusers answered the same page of 50 items at offset 50 as at offset 0: the server '
                               'ignores the offset, so the list would never end; stopped')
    assert len(server.requests) == 2


def test_the_page_cap_names_the_limit_and_how_to_raise_it():
    with RawServer(hostile.endless_pages, lifetime=20) as server:
        with pytest.raises(SendGridError) as info:
            list(client(server.url).paginate('/v3/subusers', limit=10, max_pages=7))
        assert len(server.requests) == 7
    assert str(info.value) == ('GET /v3/subusers: still full pages after 7 pages of 10 items (the page cap, max_pages=7); '
                               'stopped. If the account really holds more, raise the max_pages option')


def test_pages_together_are_bounded_in_bytes():
    """Pages near the size cap: max_pages of them may not all be held; max_pages x 256 KiB in all (1 MiB for 4)."""
    with RawServer(hostile.fat_pages(600), lifetime=20) as server:
        with pytest.raises(SendGridError) as info:
            list(client(server.url).paginate('/v3/subusers', limit=500, max_pages=4))
    assert str(info.value) == ('GET /v3/subusers: the pages so far hold more than 1 MiB (max_pages x 256 KiB on average); '
                               'stopped. If the account really holds that much, raise the max_pages option')
    assert len(server.requests) == 3


def test_a_large_error_page_is_read_in_part_and_still_names_the_status():
    page = '<html>' + 'x' * (8 * 1024 * 1024) + '</html>'
    with RawServer(respond(502, page, content_type='text/html'), lifetime=20) as server:
        with pytest.raises(SendGridError) as info:
            client(server.url, max_retries=0).request('GET', '/v3/user/settings/enforced_tls')
    assert str(info.value).startswith('SendGrid API error: HTTP 502 Bad Gateway on GET /v3/user/settings/enforced_tls: '
                                      'non-JSON answer (text/html): <html>xxx')


def test_deeply_nested_json_is_not_json():
    with RawServer(respond(200, b'[' * 100000 + b']' * 100000), lifetime=20) as server:
        with pytest.raises(SendGridError) as info:
            client(server.url).request('GET', '/v3/user/settings/enforced_tls')
    assert 'answer is not valid JSON (application/json): [[[[' in str(info.value)


@pytest.mark.parametrize('value', ['sub\x00x', 'sub\x0bx', 'sub\x1bx', 'sub\u202ex', 'sub\u200bx', 'sub\x7fx', 'sub\x85x', 'sub\u00a0x'])
def test_on_behalf_of_refuses_non_printable_characters(value):
    with pytest.raises(SendGridConfigError) as info:
        check_on_behalf_of(value, 'on_behalf_of')
    assert str(info.value).startswith('on_behalf_of contains U+%04X: ' % ord(value[3]))
    assert '\x1b' not in str(info.value) and '\u202e' not in str(info.value)


@pytest.mark.parametrize('value', ['sub0001', 'account-id 4242', 'name.with-dots_and+plus@example.com', 'ünïcode'])
def test_on_behalf_of_keeps_accepting_accounts(value):
    check_on_behalf_of(value, 'on_behalf_of')


def test_escape_text_and_markdown_cell():
    assert escape_text('a\x1b[2Jb\u202ec\u200bd\x7fe\x85f\ng\u2028h\ud800') == 'a\\x1b[2Jb\\u202ec\\u200bd\\x7fe\\x85f\\ng\\u2028h\\ud800'
    assert escape_text('plain ünïcode 名前') == 'plain ünïcode 名前'
    assert markdown_cell('a|b\n<img src=x onerror=alert(1)> & `c` [d](e) f\\') == (
        'a\\|b\\\\n&lt;img src=x onerror=alert(1)&gt; &amp; \\`c\\` \\[d\\](e) f\\\\')


# --- the inventory plugin ----------------------------------------------------------------------------------------------

def write_source(directory, url, name='subusers.sendgrid.yml', **options):
    directory.mkdir(parents=True, exist_ok=True)
    config = dict(plugin='mailsec.sendgrid.subusers', api_url=url, max_retries=0, timeout=5, **options)
    (directory / name).write_text(yaml.safe_dump(config))
    return directory / name


def inventory_env():
    return dict(SENDGRID_API_KEY=API_KEY)


def test_never_ending_pages_stop_at_the_page_cap(tmp_path):
    with RawServer(hostile.endless_pages, lifetime=120, max_connections=1000) as server:
        started = time.monotonic()
        proc = run_ansible_inventory(write_source(tmp_path / 'default', server.url), '--list', env=inventory_env())
        elapsed = time.monotonic() - started
        default_requests = len(server.requests)
        raised = run_ansible_inventory(write_source(tmp_path / 'raised', server.url, max_pages=230, page_size=10), '--list',
                                       env=inventory_env())
    assert elapsed < 60, elapsed
    assert proc.returncode != 0
    assert ('GET /v3/subusers: still full pages after 200 pages of 500 items (the page cap, max_pages=200); stopped. '
            'If the account really holds more, raise the max_pages option') in proc.stderr, proc.stderr
    assert default_requests == 200
    assert raised.returncode != 0 and 'still full pages after 230 pages of 10 items (the page cap, max_pages=230)' in raised.stderr
    assert len(server.requests) == 430


def test_max_pages_lets_a_larger_account_through(tmp_path):
    with RawServer(hostile.pages_of(2005), lifetime=120, max_connections=1000) as server:
        capped = run_ansible_inventory(write_source(tmp_path / 'capped', server.url, page_size=10), '--list', env=inventory_env())
        listing = inventory_listing(run_ansible_inventory(
            write_source(tmp_path / 'raised', server.url, page_size=10, max_pages=250), '--list', env=inventory_env()))
    assert capped.returncode != 0 and 'max_pages=200' in capped.stderr
    assert len(listing['sendgrid_subusers']['hosts']) == 2005


def test_a_repeated_page_stops_the_inventory(tmp_path):
    with RawServer(hostile.same_page, lifetime=60, max_connections=1000) as server:
        proc = run_ansible_inventory(write_source(tmp_path, server.url), '--list', env=inventory_env())
    assert proc.returncode != 0
    assert 'GET /v3/subusers answered the same page of 500 items at offset 500 as at offset 0' in proc.stderr, proc.stderr
    assert len(server.requests) == 2


def test_an_item_without_username_is_shown_masked_escaped_and_cut(tmp_path):
    with RawServer(hostile.echoing_items, lifetime=60) as server:
        proc = run_ansible_inventory(write_source(tmp_path, server.url), '--list', '-vvv', env=inventory_env())
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'GET /v3/subusers answered an item without a username: {' in output, output
    assert_no_key(output)
    assert_no_raw_controls(output)
    assert "'screen': '\\\\x1b[2J\\\\u202e'" in output or "\\x1b[2J" in output, output
    assert 'q' * 400 not in output


def crafted_names(sim):
    """Subusers with names that must not become hosts, and two that must."""
    names = {'account-id 4242': 'account-id 4242', 'dots': '../../x', 'space': 'a b', 'esc': 'esc\x1b[2Jx',
             'rtl': 'rtl\u202egnp.exe', 'backslash': 'back\\slash', 'accountid': 'account-id-4242', 'zwsp': 'zero\u200bwidth'}
    for index, name in enumerate(names.values()):
        placeholder = 'crafted%d' % index
        sim.add_subuser(placeholder)
        # Not tamper_subuser: its own first argument is called username.
        sim._subusers[placeholder]['username'] = name  # pylint: disable=protected-access
    sim.add_subuser('plain.user-1')
    sim.add_subuser("{{lookup('pipe','id')}}")
    return names


def test_crafted_subuser_names_are_left_out_with_an_escaped_warning(sim, tmp_path):
    names = crafted_names(sim)
    proc = run_ansible_inventory(write_source(tmp_path, sim.url), '--list', env=inventory_env())
    listing = inventory_listing(proc)
    hosts = set(listing['sendgrid_subusers']['hosts'])
    assert hosts == {'plain.user-1', "{{lookup('pipe','id')}}"}, hosts
    warnings = proc.stderr
    assert_no_raw_controls(warnings)
    for name in names.values():
        assert 'subuser "%s" left out: its name is ' % escape_text(name) in ' '.join(warnings.split()), (name, warnings)
    # A non-default api_url is handed to the hosts, for the role to use.
    assert listing['_meta']['hostvars']['plain.user-1']['sendgrid_api_url'] == sim.url


def test_a_host_of_another_source_is_never_taken_over(sim, tmp_path):
    """hosts.ini is parsed first (sources of a directory go alphabetically): its host keeps its variables and groups."""
    sim.add_subuser('db01.prod.example')
    sim.add_subuser('sub0001')
    inventory = tmp_path / 'inventory'
    inventory.mkdir()
    (inventory / 'hosts.ini').write_text('[dbservers]\ndb01.prod.example ansible_host=203.0.113.50\n')
    write_source(inventory, sim.url)
    proc = run_ansible_inventory(inventory, '--list', env=inventory_env())
    listing = inventory_listing(proc)
    hostvars = listing['_meta']['hostvars']
    assert hostvars['db01.prod.example'] == dict(ansible_host='203.0.113.50'), hostvars['db01.prod.example']
    assert listing['sendgrid_subusers']['hosts'] == ['sub0001']
    assert listing['dbservers']['hosts'] == ['db01.prod.example']
    assert hostvars['sub0001']['ansible_connection'] == 'local'
    assert ('subuser "db01.prod.example" left out: another inventory source already defines a host of that name'
            in ' '.join(proc.stderr.split())), proc.stderr


# --- the Markdown reports ---------------------------------------------------------------------------------------------

HOSTILE_HOST = 'evil|host\n| injected | row |\n<img src=x onerror=alert(1)>\x1b[2J\u202e'


def render(run_playbook, tmp_path, template, variables):
    dest = tmp_path / 'report.md'
    tasks = [{'name': 'Render', 'ansible.builtin.template': dict(src=str(ROOT / 'playbooks' / 'templates' / template), dest=str(dest)),
              'vars': variables}]
    run = run_playbook(tasks=tasks)
    assert run.rc == 0, run.output
    return dest.read_text()


def assert_safe_table(text, rows):
    assert '<img' not in text and '&lt;img src=x onerror=alert(1)&gt;' in text, text
    assert_no_raw_controls(text)
    assert '\\\\x1b\\[2J\\\\u202e' in text, text  # the escapes, their backslashes escaped for Markdown
    table = [line for line in text.splitlines() if line.startswith('|')]
    assert len(table) == 2 + rows, text  # header, separator, one line per row: no row injected


def test_audit_markdown_escapes_every_cell(run_playbook, tmp_path):
    rows = [dict(host=HOSTILE_HOST, compliant=False, before=dict(require_tls=False), desired=dict(require_tls=True),
                 differences={'require_tls': dict(current=False, desired=True)}),
            dict(host='sub|2', msg='HTTP 403 | forbidden\n<b>bold</b>\x1b[2J\u202e', desired=dict(require_tls=True))]
    text = render(run_playbook, tmp_path, 'enforced_tls_audit.md.j2', dict(
        enforced_tls_audit_rows=rows, enforced_tls_audit_totals=dict(subusers=2, compliant=0, drifted=1, failed=1)))
    assert_safe_table(text, 2)
    assert '| evil\\|host\\\\n\\| injected \\| row \\|\\\\n&lt;img' in text and '| sub\\|2 |' in text
    assert 'HTTP 403 \\| forbidden\\\\n&lt;b&gt;bold&lt;/b&gt;' in text


def test_impact_markdown_escapes_every_cell(run_playbook, tmp_path):
    mx = dict(host=HOSTILE_HOST, starttls_offered=True, tls_best='TLSv1.2',
              certificate=dict(trusted=True, name_matches=True, expired=False))
    impact = dict(policy=dict(require_tls=True, require_valid_cert=True, version='1.2'),
                  summary=dict(blocked=0, domains=1, delivered=1, unknown=0, undeliverable=0),
                  domains=[dict(domain='example.com|<i>x</i>', mx=[mx], verdict='delivered', blocked_by=[],
                                reason='ok | <script>alert(1)</script>\x1b[2J\u202e')])
    text = render(run_playbook, tmp_path, 'impact.md.j2', dict(impact=impact))
    assert_safe_table(text, 1)
    assert '| example.com\\|&lt;i&gt;x&lt;/i&gt; |' in text and 'ok \\| &lt;script&gt;' in text


def test_the_filters_are_documented():
    from tests.conftest import BIN, ansible_env
    import subprocess
    for name in ('markdown_cell', 'escape_text'):
        proc = subprocess.run([str(BIN / 'ansible-doc'), '-t', 'filter', '--json', 'mailsec.sendgrid.' + name], env=ansible_env(),
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)['mailsec.sendgrid.' + name]
        assert doc['doc']['short_description'] and doc['examples'] and doc['return']
