"""The simulator's answers and the requests in its log, checked against the published Enforced TLS OpenAPI spec."""

import json
import time
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_core import OpenAPI

from tests.contract.openapi_check import SPEC_PATH, spec_checker, validate_logged_requests
from tests.simulator.sendgrid_sim import ENFORCED_TLS_PATH, SUBUSERS_PATH, Simulator

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TIMEOUT = 10


def answer_errors(response):
    request = response.request
    path = urlsplit(request.url).path
    return spec_checker().response_errors(request.method, path, response.status_code, response.content, response.headers.get("Content-Type", ""))


@pytest.fixture
def sim():
    with Simulator(api_keys=(KEY,), subusers=["alice", "bob"]) as simulator:
        simulator.add_customer(42)
        yield simulator


@pytest.fixture
def checked():
    """A session that checks every answer it gets against the spec, failing the request that got a bad one."""
    seen = []

    def check(response, *args, **kwargs):
        errors = answer_errors(response)
        assert not errors, f"{response.request.method} {response.request.url} -> {response.status_code} {response.text}: {errors}"
        seen.append(response.status_code)

    with requests.Session() as session:
        session.hooks["response"].append(check)
        session.seen = seen
        yield session


def call(sim, session, method="GET", path=ENFORCED_TLS_PATH, *, obo=None, auth=True, **kwargs):
    headers = dict(AUTH) if auth else {}
    if obo is not None:
        headers["on-behalf-of"] = obo
    headers.update(kwargs.pop("headers", {}))
    return session.request(method, sim.url + path, headers=headers, timeout=TIMEOUT, **kwargs)


def test_spec_loads_and_describes_both_operations():
    openapi = OpenAPI.from_file_path(str(SPEC_PATH))
    openapi.check_spec()
    assert spec_checker().operations[ENFORCED_TLS_PATH] == {"GET": {"200", "401", "403", "404", "500"}, "PATCH": {"200", "401", "403", "404", "500"}}


def test_every_answer_matches_the_spec(sim, checked):
    sim.set_settings("bob", {"require_tls": True})  # an answer without version is still valid
    for obo in (None, "alice", "bob", "account-id 42"):
        assert call(sim, checked, obo=obo).status_code == 200
        assert call(sim, checked, "PATCH", obo=obo, json={"require_tls": True, "require_valid_cert": True, "version": 1.2}).status_code == 200
        assert call(sim, checked, "PATCH", obo=obo, json={"version": 1.3}).status_code == 200
    for method in ("GET", "PATCH"):
        assert call(sim, checked, method, auth=False).status_code == 401
        assert call(sim, checked, method, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert call(sim, checked, method, obo="nobody").status_code == 403
        assert call(sim, checked, method, obo="account-id 7").status_code == 403
        for status in (500, 502, 503):
            sim.inject(status)
            assert call(sim, checked, method, json={}).status_code == status
        sim.inject(429, retry_after=1, ratelimit_reset=int(time.time()) + 1)
        assert call(sim, checked, method, json={}).status_code == 429
    for body in ({"version": "1.2"}, {"version": 1.4}, {"require_tls": "yes"}, {"unknown": True}, [True]):
        assert call(sim, checked, "PATCH", json=body).status_code == 400
    assert call(sim, checked, "PATCH", data="{bad json", headers={"Content-Type": "application/json"}).status_code == 400
    sim.fail_account("alice", status=500)
    assert call(sim, checked, obo="alice").status_code == 500
    assert call(sim, checked, path="/v3/nothing").status_code == 404
    assert call(sim, checked, "PUT").status_code == 405
    assert set(checked.seen) == {200, 400, 401, 403, 404, 405, 429, 500, 502, 503}


def test_logged_client_like_requests_conform(sim, checked):
    call(sim, checked, path=SUBUSERS_PATH, params={"limit": 500, "offset": 0, "include_region": "true"})
    for obo in (None, "alice", "account-id 42"):
        call(sim, checked, obo=obo)
        call(sim, checked, "PATCH", obo=obo, json={"require_tls": True, "require_valid_cert": True, "version": 1.2})
        call(sim, checked, "PATCH", obo=obo, json={"version": 1.1})
    assert validate_logged_requests(sim.requests) == 10
    # Validation works on the log fetched over HTTP just the same, as a benchmark or demo would read it.
    assert validate_logged_requests(requests.get(sim.url + "/_sim/log", timeout=TIMEOUT).json()) == 10


@pytest.mark.parametrize(
    "method, obo, headers, kwargs, expected",
    [
        ("PATCH", None, AUTH, {"json": {"version": "1.2"}}, "is not of type 'number'"),
        ("PATCH", None, AUTH, {"json": {"version": 1.4}}, "is not one of"),
        ("PATCH", None, AUTH, {"json": {"require_tls": "true"}}, "is not of type 'boolean'"),
        ("PATCH", None, AUTH, {"json": {"require_tls": True, "tls": 1}}, "fields the spec does not define: ['tls']"),
        ("PATCH", None, AUTH, {"json": [1]}, "PATCH body is not a JSON object"),
        ("PATCH", None, AUTH, {"data": '{"require_tls": true}'}, "Valid mimetypes: ['application/json']"),  # no Content-Type
        ("PATCH", None, AUTH, {}, "PATCH body is not a JSON object"),
        ("GET", None, {}, {}, "Security not found"),
        ("GET", None, {"Authorization": "Token abc"}, {}, "Authorization header is not 'Bearer <api key>'"),
        ("GET", None, {"Authorization": "Bearer "}, {}, "Authorization header is not 'Bearer <api key>'"),
        ("GET", "", AUTH, {}, "on-behalf-of is present but empty"),
        ("GET", "account-id", AUTH, {}, "lacks the customer account id"),
        ("DELETE", None, AUTH, {}, "no such operation in the spec"),
        ("GET", None, AUTH, {"path": "/v3/user/settings/other"}, "no such operation in the spec"),
        ("POST", None, AUTH, {"path": SUBUSERS_PATH}, "only GET is used"),
        ("GET", None, {}, {"path": SUBUSERS_PATH}, "Authorization header is not 'Bearer <api key>'"),
    ],
)
def test_validate_logged_requests_flags_non_conforming_requests(sim, method, obo, headers, kwargs, expected):
    call(sim, requests, obo="alice")  # conforming, so not reported
    path = kwargs.pop("path", ENFORCED_TLS_PATH)
    call(sim, requests, method, path, obo=obo, auth=False, headers=headers, **kwargs)
    with pytest.raises(AssertionError) as failure:
        validate_logged_requests(sim.requests)
    message = str(failure.value)
    assert expected in message
    assert f"#1 {method} {path}" in message and "#0" not in message


@pytest.mark.parametrize(
    "status, body, expected",
    [
        (200, {"require_tls": "true"}, "is not of type 'boolean'"),
        (200, {"version": "1.2"}, "is not of type 'number'"),
        (400, {"errors": "bad"}, "is not of type 'array'"),
        (403, {"errors": [{"field": 3, "message": "x"}]}, "3 is not of type"),
        (500, {"errors": [{"message": 5}]}, "5 is not of type 'string'"),
        (503, "oops", "503 answer is not JSON"),
    ],
)
def test_answer_check_catches_bad_answers(sim, status, body, expected):
    sim.inject(status, body=body)
    errors = answer_errors(call(sim, requests))
    assert errors and expected in " ".join(errors)


# Any JSON document a client might PATCH: objects over the real fields plus a stray one, and non-objects.
_VALUES = st.one_of(st.booleans(), st.none(), st.integers(-2, 3), st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([1.1, 1.2, 1.3, "1.2", "true"]), st.text(max_size=3))
_BODIES = st.one_of(
    st.dictionaries(st.sampled_from(["require_tls", "require_valid_cert", "version", "tls_version"]), _VALUES, max_size=4),
    st.lists(_VALUES, max_size=2),
    _VALUES,
)


@pytest.fixture(scope="module")
def shared_sim():
    with Simulator(api_keys=(KEY,)) as simulator:
        yield simulator


@settings(max_examples=150, deadline=None)
@given(body=_BODIES)
def test_simulator_accepts_a_patch_exactly_when_the_spec_does(shared_sim, body):
    with requests.Session() as session:
        response = call(shared_sim, session, "PATCH", data=json.dumps(body), headers={"Content-Type": "application/json"})
    assert not answer_errors(response)
    entry = shared_sim.requests[-1]
    request_errors = spec_checker().request_errors(entry)
    assert (response.status_code == 200) == (not request_errors), (body, response.text, request_errors)
    if response.status_code == 200:
        assert {key: response.json()[key] for key in body} == body
