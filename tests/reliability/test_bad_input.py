# -*- coding: utf-8 -*-
"""Bad input matrix: every way in (module options, inventory options, role variables) refuses bad values
with a message naming the option and what is allowed, before a single request reaches SendGrid.

The full module matrix runs each module's main() in this process (milliseconds per case) against the
simulator's real socket, so "zero requests" is what the simulator logged, not what a mock saw. A
representative subset goes through one real ansible-playbook run; the inventory plugin through
ansible-inventory (one run per case, ~0.5 s); the role through the enforce playbook, where one run
checks many subusers at once, since the fleet action reports every bad host in one message.
"""

from __future__ import annotations

import pytest
import yaml

from ansible_collections.mailsec.sendgrid.plugins.modules import enforced_tls, enforced_tls_info
from tests.conftest import API_KEY
from tests.reliability.helpers import run_ansible_inventory, write_fleet_inventory, write_host_vars
from tests.unit.http_conversation import run_module

VERSIONS = 'must be one of "1.1", "1.2", "1.3"'
BOOLEANS = 'Valid booleans include:'
ON_BEHALF_OF = 'must be a subuser username or "account-id <id>"'
HTTPS_ONLY = 'api_url must be an https:// URL (http:// only for a loopback host such as 127.0.0.1)'
NOT_LOOPBACK = 'uses plain http:// to a host that is not loopback'
TIMEOUT = 'timeout must be a number of seconds greater than 0'
RETRIES = 'max_retries must be an integer from 0 to 100'
CONCURRENCY = 'concurrency must be an integer from 1 to 64'

# Options every module shares: (case id, options, message fragments). Each message names the option and what is allowed.
CONNECTION_CASES = [
    ('region us', dict(region='us'), ['value of region must be one of: global, eu, got: us']),
    ('region empty', dict(region=''), ['value of region must be one of: global, eu, got: ']),
    ('on_behalf_of empty', dict(on_behalf_of=''), ['on_behalf_of ' + ON_BEHALF_OF, 'leave it out to address the parent account']),
    ('on_behalf_of blank', dict(on_behalf_of='   '), ['on_behalf_of ' + ON_BEHALF_OF]),
    ('on_behalf_of padded', dict(on_behalf_of=' marketing'), ['on_behalf_of must not contain leading/trailing spaces or line breaks']),
    ('on_behalf_of newline', dict(on_behalf_of='a\r\nX-Injected: 1'), ['on_behalf_of must not contain leading/trailing spaces or line breaks']),
    ('timeout -1', dict(timeout=-1), [TIMEOUT, 'got -1.0']),
    ('timeout 0', dict(timeout=0), [TIMEOUT, 'got 0.0']),
    ('timeout inf', dict(timeout=float('inf')), [TIMEOUT, 'got inf']),
    ('timeout nan', dict(timeout=float('nan')), [TIMEOUT, 'got nan']),
    ('timeout text', dict(timeout='soon'), ["argument 'timeout' is of type str and we were unable to convert to float"]),
    ('max_retries -1', dict(max_retries=-1), [RETRIES, 'got -1']),
    ('max_retries 101', dict(max_retries=101), [RETRIES, 'got 101']),
    ('max_retries 1.5', dict(max_retries=1.5), ["argument 'max_retries' is of type float and we were unable to convert to int"]),
    ('api_url ftp', dict(api_url='ftp://x'), [HTTPS_ONLY, "got 'ftp://x'"]),
    ('api_url no host', dict(api_url='https://'), [HTTPS_ONLY]),
    ('api_url no scheme', dict(api_url='api.sendgrid.com'), [HTTPS_ONLY]),
    ('api_url http remote', dict(api_url='http://api.example.com'), ["api_url 'http://api.example.com' " + NOT_LOOPBACK]),
    ('api_url http look-alike', dict(api_url='http://127.0.0.1.nip.io:8080'), [NOT_LOOPBACK]),
    ('api_url http localhost look-alike', dict(api_url='http://localhost.example.com'), [NOT_LOOPBACK]),
    ('api_url http any-address', dict(api_url='http://0.0.0.0:8080'), [NOT_LOOPBACK]),
    ('api_url query', dict(api_url='https://api.sendgrid.com/?debug=1'), ['api_url must not carry a query string or fragment']),
    ('api_url credentials', dict(api_url='https://user:hunter2@api.sendgrid.com'), ['api_url must not carry a user name or password']),
    ('validate_certs maybe', dict(validate_certs='maybe'), ["argument 'validate_certs' is of type str", BOOLEANS]),
    ('api_key empty', dict(api_key=''), ['api_key is required: set it or the SENDGRID_API_KEY environment variable']),
    ('api_key missing', dict(api_key=None), ['api_key is required: set it or the SENDGRID_API_KEY environment variable']),
    ('concurrency 0', dict(concurrency=0), [CONCURRENCY, 'got 0']),
    ('concurrency 65', dict(concurrency=65), [CONCURRENCY, 'got 65']),
    ('concurrency text', dict(concurrency='many'), ["argument 'concurrency' is of type str and we were unable to convert to int"]),
]

ENFORCED_TLS_CASES = [
    ('version 1.4', dict(version=1.4), ['version ' + VERSIONS, 'got 1.4']),
    ('version "1.0"', dict(version='1.0'), ['version ' + VERSIONS, "got '1.0'"]),
    ('version "1.20"', dict(version='1.20'), ['version ' + VERSIONS]),
    ('version 1', dict(version=1), ['version ' + VERSIONS, 'got 1']),
    ('version true', dict(version=True), ['version ' + VERSIONS, 'got True']),
    ('version list', dict(version=['1.2']), ['version ' + VERSIONS]),
    ('version dict', dict(version={'min': '1.2'}), ['version ' + VERSIONS]),
    ('require_tls maybe', dict(require_tls='maybe'), ["argument 'require_tls' is of type str", BOOLEANS]),
    ('require_valid_cert maybe', dict(require_valid_cert='maybe'), ["argument 'require_valid_cert' is of type str", BOOLEANS]),
    ('no setting at all', dict(require_tls=None), ['at least one of require_tls, require_valid_cert, version is required']),
    ('unknown option', dict(verison='1.2'), ['Unsupported parameters for', 'verison', 'Supported parameters include:', 'version']),
    ('accounts and on_behalf_of', dict(accounts=[dict(on_behalf_of='a')], on_behalf_of='b'),
     ['parameters are mutually exclusive: accounts|on_behalf_of']),
    ('accounts item on_behalf_of empty', dict(accounts=[dict(on_behalf_of='')]), ['accounts[0].on_behalf_of ' + ON_BEHALF_OF]),
    ('accounts item version', dict(accounts=[dict(on_behalf_of='a'), dict(on_behalf_of='b', version='1.4')]),
     ['accounts[1].version ' + VERSIONS]),
    ('accounts item require_tls', dict(accounts=[dict(on_behalf_of='a', require_tls='maybe')]),
     ['accounts[0].require_tls must be a boolean (true or false)', "got 'maybe'"]),
    ('accounts item unknown option', dict(accounts=[dict(on_behalf_of='a', colour='blue')]),
     ['accounts[0] has unsupported key(s) colour; allowed: on_behalf_of, require_tls, require_valid_cert, version']),
    ('accounts item without policy', dict(require_tls=None, accounts=[dict(on_behalf_of='a')]),
     ['accounts[0] needs at least one of require_tls, require_valid_cert, version']),
]

INFO_CASES = [
    ('policy option on info', dict(require_tls=True), ['Unsupported parameters for', 'require_tls', 'Supported parameters include:']),
    ('accounts and on_behalf_of', dict(accounts=['a'], on_behalf_of='b'), ['parameters are mutually exclusive: accounts|on_behalf_of']),
    ('accounts item empty', dict(accounts=['a', '']), ['accounts[1] ' + ON_BEHALF_OF]),
    ('accounts item padded', dict(accounts=['a\n']), ['accounts[0] must not contain leading/trailing spaces or line breaks']),
]


def matrix():
    for case_id, options, fragments in CONNECTION_CASES:
        yield pytest.param(enforced_tls, dict(dict(require_tls=True), **options), fragments, id='enforced_tls: ' + case_id)
        yield pytest.param(enforced_tls_info, options, fragments, id='enforced_tls_info: ' + case_id)
    for case_id, options, fragments in ENFORCED_TLS_CASES:
        yield pytest.param(enforced_tls, dict(dict(require_tls=True), **options), fragments, id='enforced_tls: ' + case_id)
    for case_id, options, fragments in INFO_CASES:
        yield pytest.param(enforced_tls_info, options, fragments, id='enforced_tls_info: ' + case_id)


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    # In-process module runs read SENDGRID_* as fallbacks: only what a case sets may count.
    for name in ('SENDGRID_API_KEY', 'SENDGRID_REGION', 'SENDGRID_API_URL'):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize('module, options, fragments', list(matrix()))
def test_module_refuses_bad_option_before_any_request(sim, capsys, module, options, fragments):
    args = dict(api_key=API_KEY, api_url=sim.url)
    args.update(options)
    args = {name: value for name, value in args.items() if value is not None}
    result, failed = run_module(module, args, capsys)
    assert failed, result
    for fragment in fragments:
        assert fragment in result['msg'], (fragment, result['msg'])
    assert sim.count() == 0, sim.requests
    assert API_KEY not in result['msg']


# Both modules take usernames and dicts; anything else (a number, a list, a dict with an unknown key) is refused,
# never turned into an on-behalf-of header.
@pytest.mark.parametrize('item', [42, ['a'], dict(on_behalf_of='a', username='b')])
def test_info_refuses_odd_accounts_items_before_any_request(sim, capsys, item):
    result, failed = run_module(enforced_tls_info, dict(api_key=API_KEY, api_url=sim.url, max_retries=0,
                                                        accounts=['sub0001', item]), capsys)
    assert failed and result['msg'].startswith('accounts[1] ')
    assert sim.count() == 0, sim.requests


def test_bad_options_through_ansible_playbook(sim, run_playbook):
    """A representative subset through real ansible-playbook: Ansible's own type checks plus ours, one task each."""
    cases = {
        'version_float': ('enforced_tls', dict(version=1.4), ['version ' + VERSIONS, 'got 1.4']),
        'version_string': ('enforced_tls', dict(version='1.0'), ['version ' + VERSIONS, "got '1.0'"]),
        'require_tls_maybe': ('enforced_tls', dict(require_tls='maybe'), ["argument 'require_tls' is of type str", BOOLEANS]),
        'region_us': ('enforced_tls', dict(require_tls=True, region='us'), ['value of region must be one of: global, eu, got: us']),
        'on_behalf_of_empty': ('enforced_tls_info', dict(on_behalf_of=''), ['on_behalf_of ' + ON_BEHALF_OF]),
        'timeout_negative': ('enforced_tls_info', dict(timeout=-1), [TIMEOUT]),
        'max_retries_negative': ('enforced_tls', dict(require_tls=True, max_retries=-1), [RETRIES]),
        'api_url_ftp': ('enforced_tls_info', dict(api_url='ftp://x'), [HTTPS_ONLY]),
        'api_url_http_remote': ('enforced_tls', dict(require_tls=True, api_url='http://api.example.com'), [NOT_LOOPBACK]),
        'concurrency_zero': ('enforced_tls', dict(require_tls=True, concurrency=0, accounts=[dict(on_behalf_of='a')]), [CONCURRENCY]),
        'unknown_option': ('enforced_tls_info', dict(colour='blue'), ['Unsupported parameters for', 'colour']),
    }
    tasks = [{'name': name, 'mailsec.sendgrid.' + module: dict(dict(api_url=sim.url), **options), 'register': name, 'ignore_errors': True}
             for name, (module, options, _fragments) in cases.items()]
    run = run_playbook(tasks=tasks, save=list(cases), env=dict(SENDGRID_API_KEY=API_KEY))
    assert run.recap()['ignored'] == len(cases), run.output
    for name, (_module, _options, fragments) in cases.items():
        result = run.results[name]
        assert result['failed'] is True, (name, result)
        for fragment in fragments:
            assert fragment in result['msg'], (name, fragment, result['msg'])
    assert 'Traceback' not in run.output
    assert sim.count() == 0, sim.requests


# --- the inventory plugin -----------------------------------------------------------------------------------------

INVENTORY_CASES = [
    ('region us', dict(region='us'), ["Invalid value 'us' for config 'region'", 'Valid values are: global, eu']),
    ('timeout -1', dict(timeout=-1), ['mailsec.sendgrid.subusers: ' + TIMEOUT, 'got -1.0']),
    ('timeout text', dict(timeout='soon'), ["Config 'timeout'", "Invalid value provided for 'float': 'soon'"]),
    ('max_retries -1', dict(max_retries=-1), ['mailsec.sendgrid.subusers: ' + RETRIES]),
    ('api_url ftp', dict(api_url='ftp://x'), ['mailsec.sendgrid.subusers: ' + HTTPS_ONLY]),
    ('api_url http remote', dict(api_url='http://api.example.com'), ['mailsec.sendgrid.subusers: api_url', NOT_LOOPBACK]),
    ('page_size 0', dict(page_size=0), ['page_size must be an integer from 1 to 500, got 0']),
    ('page_size 501', dict(page_size=501), ['page_size must be an integer from 1 to 500, got 501']),
    ('api_key empty, none in the environment', dict(api_key=''), ['mailsec.sendgrid.subusers: api_key is required']),
    pytest.param('validate_certs maybe', dict(validate_certs='maybe'), ["'validate_certs'"]),
    pytest.param('include_disabled maybe', dict(include_disabled='maybe'), ["'include_disabled'"]),
    pytest.param('unknown option', dict(verison='1.2'), ['verison']),
    pytest.param('on_behalf_of empty', dict(on_behalf_of=''), ['on_behalf_of']),
]


def _with_ids(cases):
    # The case's first item is its test id; pytest.param cases (a NamedTuple too) keep their marks.
    for case in cases:
        if hasattr(case, 'marks'):
            yield pytest.param(*case.values, marks=case.marks, id=case.values[0])
        else:
            yield pytest.param(*case, id=case[0])


@pytest.mark.parametrize('case_id, options, fragments', list(_with_ids(INVENTORY_CASES)))
def test_inventory_plugin_refuses_bad_option_before_any_request(sim, tmp_path, case_id, options, fragments):
    config = dict(dict(plugin='mailsec.sendgrid.subusers', api_url=sim.url, max_retries=0), **options)
    source = tmp_path / 'bad.sendgrid.yml'
    source.write_text(yaml.safe_dump(config))
    # -vvv: Ansible prints a config error's allowed values ("Valid values are: ...") only from -vvv on.
    # An empty api_key falls back to SENDGRID_API_KEY (by design), so that case runs without it.
    proc = run_ansible_inventory(source, '--list', '-vvv', env={} if 'api_key' in options else dict(SENDGRID_API_KEY=API_KEY))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, (case_id, output)
    for fragment in fragments:
        assert fragment in output, (case_id, fragment, output)
    assert 'Traceback' not in output and API_KEY not in output
    assert sim.count() == 0, sim.requests


# --- the role's variables, through the enforce playbook -------------------------------------------------------------

# subuser: (its host_vars, what its error must say). Each host fails under its own name, in Ansible's argument_specs
# validation of the role (which names the variable) or in the fleet action; sub0001 and sub0013 stay valid.
ROLE_HOST_CASES = {
    'sub0002': (dict(enforced_tls_policy_version=1.4), 'enforced_tls_policy_version ' + VERSIONS + ' (a string, or a YAML float'),
    'sub0003': (dict(enforced_tls_policy_version='1.0'), "enforced_tls_policy_version " + VERSIONS),
    'sub0004': (dict(enforced_tls_policy_region='us'), "enforced_tls_policy_region must be one of global, eu, got 'us'"),
    'sub0005': (dict(enforced_tls_policy_on_behalf_of=' marketing'), 'enforced_tls_policy_on_behalf_of must not contain leading/trailing'),
    'sub0006': (dict(enforced_tls_policy_api_url='ftp://x'), 'enforced_tls_policy_' + HTTPS_ONLY),
    'sub0007': (dict(enforced_tls_policy_api_url='http://api.example.com'), "enforced_tls_policy_api_url 'http://api.example.com' "
                + NOT_LOOPBACK),
    'sub0008': (dict(enforced_tls_policy_require_tls='maybe'), "enforced_tls_policy_require_tls must be a boolean (true or false), got 'maybe'"),
    'sub0009': (dict(enforced_tls_policy_require_valid_cert=2), 'enforced_tls_policy_require_valid_cert must be a boolean (true or false), got 2'),
    'sub0010': (dict(enforced_tls_policy_version=True), 'enforced_tls_policy_version ' + VERSIONS),
    'sub0011': (dict(enforced_tls_policy_api_url='https://user:hunter2@api.sendgrid.com'),
                'enforced_tls_policy_api_url must not carry a user name or password'),
    'sub0012': (dict(enforced_tls_policy_require_tls='', enforced_tls_policy_require_valid_cert='', enforced_tls_policy_version=''),
                'no policy: set at least one of enforced_tls_policy_require_tls, enforced_tls_policy_require_valid_cert'),
}


def enforced_tls_requests(sim):
    return [entry for entry in sim.requests if entry['path'] != '/v3/subusers']


def test_role_variables_refused_per_subuser_before_any_request(sim, run_playbook, tmp_path):
    sim.populate_subusers(len(ROLE_HOST_CASES) + 1)
    inventory = write_fleet_inventory(tmp_path / 'inventory', sim.url)
    for host, (values, _fragment) in ROLE_HOST_CASES.items():
        write_host_vars(inventory, host, **values)
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=dict(SENDGRID_API_KEY=API_KEY))
    assert run.rc == 2, run.output
    lines = {line.split(']', 1)[0][len('fatal: ['):]: line for line in run.stdout.splitlines() if line.startswith('fatal: [')}
    for host, (_values, fragment) in ROLE_HOST_CASES.items():
        assert host in lines, (host, run.stdout)
        variable = fragment.split()[0]
        assert fragment in lines[host] or (variable in lines[host] and 'argument_errors' in lines[host]), (host, fragment, lines[host])
    assert 'sub0001' not in lines and 'sub0013' not in lines
    assert 'Traceback' not in run.output and 'hunter2' not in run.output
    assert not set(ROLE_HOST_CASES) & {r['on_behalf_of'] for r in sim.requests}, 'nothing may be sent for an invalid subuser'


def test_role_boolean_error_names_the_variable(sim, run_playbook, tmp_path):
    sim.populate_subusers(2)
    inventory = write_fleet_inventory(tmp_path / 'inventory', sim.url)
    write_host_vars(inventory, 'sub0002', enforced_tls_policy_require_tls='maybe')
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=dict(SENDGRID_API_KEY=API_KEY))
    assert run.rc == 2 and 'sub0002' not in {r['on_behalf_of'] for r in sim.requests}
    fatal = [line for line in run.stdout.splitlines() if line.startswith('fatal: [sub0002]')]
    assert fatal and 'enforced_tls_policy_require_tls' in fatal[0], run.stdout


@pytest.mark.parametrize('group_vars, fragments', [
    # Checked by Ansible's argument_specs validation (meta/argument_specs.yml), which names the variable.
    (dict(enforced_tls_policy_require_tls='maybe'), ['enforced_tls_policy_require_tls', BOOLEANS]),
    (dict(enforced_tls_policy_concurrency='many'), ['enforced_tls_policy_concurrency', 'unable to convert to int']),
    # Checked by the fleet action.
    (dict(enforced_tls_policy_concurrency=0), ['enforced_tls_policy_concurrency must be an integer from 1 to 64', 'got 0']),
    (dict(enforced_tls_policy_require_tls=None, enforced_tls_policy_require_valid_cert=None, enforced_tls_policy_version=None),
     ['no policy: set at least one of enforced_tls_policy_require_tls']),
], ids=['require_tls maybe', 'concurrency text', 'concurrency 0', 'no policy'])
def test_role_variables_refused_for_the_whole_play(sim, run_playbook, tmp_path, group_vars, fragments):
    sim.populate_subusers(2)
    inventory = write_fleet_inventory(tmp_path / 'inventory', sim.url, group_vars_extra=group_vars)
    run = run_playbook(playbook_name='mailsec.sendgrid.enforce', inventory=inventory, env=dict(SENDGRID_API_KEY=API_KEY))
    assert run.rc == 2, run.output
    for fragment in fragments:
        assert fragment in run.stdout, (fragment, run.stdout)
    assert 'Traceback' not in run.output
    assert enforced_tls_requests(sim) == []
