# -*- coding: utf-8 -*-
"""Property tests of the compare/merge logic in module_utils/_enforced_tls.py.

For any stored state (fields missing, null, numbers or strings, as an API might answer) and any requested
subset of settings, converge() must write only requested fields that differ, end in the requested state for
those and leave the others exactly as they were, report the state that is really stored, and write nothing
the second time. A fake in-memory SendGrid (validating PATCH bodies like the simulator) stands in for HTTP.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import SendGridError
from ansible_collections.mailsec.sendgrid.plugins.module_utils._enforced_tls import (
    DEFAULTS, FIELDS, PATH, VERSIONS, converge, desired_state, normalize_version, parse_settings, plan, read, run_batch, to_api)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MISSING = object()


class FakeSendGrid:
    """GET and PATCH /v3/user/settings/enforced_tls on one stored dict; PATCH validated like the simulator."""

    def __init__(self, stored):
        self.stored = dict(stored)
        self.calls = []

    def request(self, method, path, on_behalf_of=None, params=None, body=None):
        assert path == PATH and params is None
        self.calls.append((method, body))
        if method == 'GET':
            return dict(self.stored)
        assert method == 'PATCH' and isinstance(body, dict) and body, body
        for field, value in body.items():
            assert field in FIELDS, 'unknown field %r sent' % field
            if field == 'version':
                assert not isinstance(value, bool) and isinstance(value, float) and value in (1.1, 1.2, 1.3), value
            else:
                assert isinstance(value, bool), value
        self.stored.update(body)
        return dict(self.stored)

    def patches(self):
        return [body for method, body in self.calls if method == 'PATCH']


def stored_states():
    """What an account's stored settings may look like: each field absent, null, or a valid value in API form."""
    values = dict(
        require_tls=st.one_of(st.just(MISSING), st.none(), st.booleans()),
        require_valid_cert=st.one_of(st.just(MISSING), st.none(), st.booleans()),
        version=st.one_of(st.just(MISSING), st.none(), st.sampled_from([1.1, 1.2, 1.3, '1.1', '1.2', '1.3', 1.10, '1.3 '])),
    )
    return st.fixed_dictionaries(values).map(lambda state: {k: v for k, v in state.items() if v is not MISSING})


def requests_of_settings():
    """What a user may ask for: any subset (possibly empty), version as a string or a YAML float."""
    return st.fixed_dictionaries({}, optional=dict(
        require_tls=st.booleans(),
        require_valid_cert=st.booleans(),
        version=st.sampled_from(list(VERSIONS) + [1.1, 1.2, 1.3, ' 1.2']),
    ))


def meaning(stored, field):
    """The setting a stored value stands for: absent or null is the documented default."""
    value = stored.get(field)
    if value is None:
        return DEFAULTS[field]
    return normalize_version(float(value)) if field == 'version' else value


@PROPERTY_SETTINGS
@given(stored=stored_states(), options=requests_of_settings())
def test_plan_holds_exactly_the_requested_fields_that_differ(stored, options):
    desired = desired_state(options)
    current = read(FakeSendGrid(stored))
    changes = plan(current, desired)
    assert set(changes) <= set(desired)
    for field, value in desired.items():
        if current[field] == value:
            assert field not in changes
        else:
            assert changes[field] == value


@PROPERTY_SETTINGS
@given(stored=stored_states(), options=requests_of_settings())
def test_converge_writes_only_what_differs_and_lands_on_the_request(stored, options):
    desired = desired_state(options)
    api = FakeSendGrid(stored)
    result = converge(api, desired)
    differing = {field: value for field, value in desired.items() if meaning(stored, field) != value}
    # Exactly one GET, then one PATCH carrying exactly the differing requested fields (version as a JSON number).
    assert api.calls[0] == ('GET', None)
    assert api.patches() == ([to_api(differing)] if differing else [])
    assert result['changed'] is bool(differing) and result['changes'] == differing
    assert result['status'] == ('changed' if differing else 'compliant')
    # Requested fields now mean what was asked; every other field is byte-for-byte what it was (even if absent).
    for field in FIELDS:
        if field in desired:
            assert meaning(api.stored, field) == desired[field]
        else:
            assert api.stored.get(field, MISSING) == stored.get(field, MISSING)
    # What the module reports is what is stored, and the state before is what was stored before.
    assert result['enforced_tls'] == read(FakeSendGrid(api.stored))
    assert result['before'] == {field: meaning(stored, field) for field in FIELDS}


@PROPERTY_SETTINGS
@given(stored=stored_states(), options=requests_of_settings())
def test_converging_twice_writes_nothing_the_second_time(stored, options):
    desired = desired_state(options)
    api = FakeSendGrid(stored)
    first = converge(api, desired)
    api.calls.clear()
    second = converge(api, desired)
    assert api.calls == [('GET', None)]
    assert second['changed'] is False and second['status'] == 'compliant' and second['changes'] == {}
    assert second['enforced_tls'] == first['enforced_tls']


@PROPERTY_SETTINGS
@given(stored=stored_states(), options=requests_of_settings())
def test_check_mode_writes_nothing_and_predicts_the_real_outcome(stored, options):
    desired = desired_state(options)
    checked_api = FakeSendGrid(stored)
    predicted = converge(checked_api, desired, check_mode=True)
    assert checked_api.patches() == [] and checked_api.stored == stored
    real = converge(FakeSendGrid(stored), desired)
    assert predicted['enforced_tls'] == real['enforced_tls'] and predicted['changes'] == real['changes']
    assert predicted['status'] == ('would_change' if real['changed'] else 'compliant')


@PROPERTY_SETTINGS
@given(states=st.lists(st.tuples(stored_states(), st.booleans()), min_size=1, max_size=12),
       options=requests_of_settings().filter(bool), concurrency=st.integers(1, 8))
def test_batch_keeps_order_and_isolates_failures(states, options, concurrency):
    desired = desired_state(options)
    apis = {'sub%02d' % index: (FakeSendGrid(stored), broken) for index, (stored, broken) in enumerate(states)}

    def work(account):
        api, broken = apis[account['on_behalf_of']]
        if broken:
            raise SendGridError('HTTP 403 for %s' % account['on_behalf_of'])
        return converge(api, desired)

    results = run_batch(work, [dict(on_behalf_of=name) for name in apis], concurrency)
    assert [r['on_behalf_of'] for r in results] == list(apis)
    for result, (name, (api, broken)) in zip(results, apis.items()):
        assert result['failed'] is broken
        if broken:
            assert result['msg'] == 'HTTP 403 for %s' % name and result['status'] == 'failed' and api.calls == []
        else:
            assert all(meaning(api.stored, field) == value for field, value in desired.items())


# --- normalize_version and parse_settings -----------------------------------------------------------------------------

def test_normalize_version_round_trips():
    for version in VERSIONS:
        api_value = to_api(dict(version=version))['version']
        assert isinstance(api_value, float) and normalize_version(api_value) == version
        assert normalize_version(version) == version == normalize_version(' %s\n' % version)
        assert normalize_version(float(version)) == version
        # What the module reports goes back in unchanged (a registered result fed to the next task).
        assert normalize_version(normalize_version(version)) == version


ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                     st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@PROPERTY_SETTINGS
@given(value=ANYTHING)
def test_normalize_version_accepts_only_the_three_versions(value):
    try:
        result = normalize_version(value)
    except ValueError as exc:
        assert str(exc).startswith('version must be one of "1.1", "1.2", "1.3"')
        return
    assert result in VERSIONS
    # Only the string itself (maybe padded) or the float the YAML parser makes of it.
    assert (isinstance(value, str) and value.strip() == result) or (isinstance(value, float) and value == float(result))


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10 ** 308, max_value=10 ** 400),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
                         st.sampled_from(['1.2', '1.3', ' 1.1', '1.20', 'nan', 'inf', '1e400', '-0']))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
                           max_leaves=6)


@PROPERTY_SETTINGS
@given(answer=st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={field: JSON_VALUES for field in FIELDS})))
def test_parse_settings_either_understands_an_answer_or_says_why(answer):
    # Whatever SendGrid (or a proxy) answers, the user gets settings of the right types or one SendGridError, never a crash.
    try:
        state = parse_settings(answer, 'GET')
    except SendGridError as exc:
        assert str(exc).startswith('GET %s answered ' % PATH)
        return
    assert set(state) <= set(FIELDS)
    for field, value in state.items():
        if field == 'version':
            assert value in VERSIONS and not math.isnan(float(value))
        else:
            assert isinstance(value, bool)
