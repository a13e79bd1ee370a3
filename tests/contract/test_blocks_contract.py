"""GET /v3/suppression/blocks: the simulator's answers and tls_blocks_info's requests, checked against SendGrid's spec."""

import pytest
import requests

from tests.contract.openapi_check import BLOCKS_SPEC_PATH, spec_checker, validate_logged_requests
from tests.simulator.sendgrid_sim import BLOCKS_PATH, TLS_BLOCK_REASON, Simulator

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TIMEOUT = 10


@pytest.fixture
def sim():
    with Simulator(api_keys=(KEY,), subusers=["alice"]) as simulator:
        simulator.add_blocks("alice", [{"email": f"u{n}@legacy.example", "reason": TLS_BLOCK_REASON, "created": 1700000000 + n}
                                       for n in range(3)])
        yield simulator


def checker():
    return spec_checker(BLOCKS_SPEC_PATH)


def get(sim, params=None, obo="alice", headers=None):
    headers = dict(AUTH if headers is None else headers)
    if obo is not None:
        headers["on-behalf-of"] = obo
    return requests.get(sim.url + BLOCKS_PATH, params=params, headers=headers, timeout=TIMEOUT)


def answer_errors(response):
    return checker().response_errors("GET", BLOCKS_PATH, response.status_code, response.content, response.headers["Content-Type"])


def test_spec_describes_the_operation():
    assert checker().operations[BLOCKS_PATH] == {"GET": {"200"}}
    assert checker().query_parameters[BLOCKS_PATH]["GET"] == {"start_time", "end_time", "limit", "offset", "email"}


def test_simulator_answers_match_the_spec(sim):
    for params in (None, {"limit": 1, "offset": 2}, {"start_time": 1700000001, "end_time": 1700000001}, {"email": "u1"}):
        response = get(sim, params)
        assert response.status_code == 200 and not answer_errors(response), (params, response.text)
    assert [b["email"] for b in get(sim).json()] == ["u2@legacy.example", "u1@legacy.example", "u0@legacy.example"]
    assert [b["created"] for b in get(sim, {"start_time": 1700000001, "end_time": 1700000001}).json()] == [1700000001]
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"start_time": "yesterday"}):
        response = get(sim, params)
        assert response.status_code == 400 and not answer_errors(response), (params, response.text)
    for response in (get(sim, headers={}), get(sim, obo="nobody")):
        assert response.status_code in (401, 403) and not answer_errors(response)


def test_module_requests_conform(sim, run_playbook):
    sim.add_blocks("alice", [{"email": f"x{n}@ok.example", "reason": "no route to host", "created": 1700000500} for n in range(1200)])
    sim.clear_log()
    run = run_playbook(tasks=[dict(name="Read", register="read", **{"mailsec.sendgrid.tls_blocks_info": dict(
        api_key=KEY, api_url=sim.url, on_behalf_of="alice", start_time=1600000000, end_time=1800000000, email="u")})],
        save=["read"])
    assert run.rc == 0, run.output
    assert run.results["read"]["blocks_read"] == 3 and run.results["read"]["tls_blocks"] == 3
    run = run_playbook(tasks=[dict(name="Read", register="read", **{"mailsec.sendgrid.tls_blocks_info": dict(
        api_key=KEY, api_url=sim.url, on_behalf_of="alice", start_time=1600000000)})], save=["read"])
    assert run.rc == 0 and run.results["read"]["blocks_read"] == 1203
    assert validate_logged_requests(sim.requests) == 1 + 3


@pytest.mark.parametrize("params, expected", [
    ({"limit": 501, "offset": 0}, "limit"),
    ({"limit": 500, "offset": -5}, "offset"),
    ({"start_time": "soon"}, "start_time"),
    ({"page": 2}, "query parameters the spec does not define: ['page']"),
])
def test_non_conforming_requests_are_flagged(sim, params, expected):
    get(sim, params)
    with pytest.raises(AssertionError) as failure:
        validate_logged_requests(sim.requests)
    assert expected in str(failure.value) and f"#0 GET {BLOCKS_PATH}" in str(failure.value)
