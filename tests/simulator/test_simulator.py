"""HTTP-level tests of the SendGrid simulator (real sockets, real requests)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.simulator.sendgrid_sim import COMPLIANT_SETTINGS, DEFAULT_SETTINGS, ENFORCED_TLS_PATH, PARENT, SUBUSERS_PATH, Simulator

SCRIPT = Path(__file__).with_name("sendgrid_sim.py")
KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TIMEOUT = 10


@pytest.fixture
def sim():
    with Simulator(api_keys=(KEY,)) as simulator:
        yield simulator


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def call(sim, method="GET", path=ENFORCED_TLS_PATH, *, obo=None, auth=True, session=requests, **kwargs):
    headers = dict(AUTH) if auth else {}
    if obo is not None:
        headers["on-behalf-of"] = obo
    headers.update(kwargs.pop("headers", {}))
    return session.request(method, sim.url + path, headers=headers, timeout=TIMEOUT, **kwargs)


def error_messages(response):
    return [error["message"] for error in response.json()["errors"]]


# --- auth and accounts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", f"Basic {KEY}", "Bearer", f"bearer{KEY}"])
def test_bad_or_missing_auth_is_401(sim, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = call(sim, auth=False, headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["errors"][0]["field"] is None and body["errors"][0]["message"]


def test_several_api_keys_and_case_insensitive_scheme():
    with Simulator(api_keys=("one", "two")) as simulator:
        for key in ("one", "two"):
            assert call(simulator, auth=False, headers={"Authorization": f"bearer {key}"}).status_code == 200


@pytest.mark.parametrize("obo", ["nobody", "account-id 999"])
def test_unknown_on_behalf_of_is_403(sim, obo):
    response = call(sim, obo=obo)
    assert response.status_code == 403
    assert response.json() == {"errors": [{"field": None, "message": "access forbidden"}]}


def test_get_defaults_for_parent_subuser_and_customer(sim):
    sim.add_subuser("alice")
    sim.add_customer(42)
    for obo in (None, "alice", "account-id 42"):
        response = call(sim, obo=obo)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.json() == DEFAULT_SETTINGS
        assert '"version":1.1' in response.text  # a JSON number, never "1.1"


def test_get_omits_fields_missing_from_stored_state(sim):
    sim.add_subuser("alice", settings={"require_tls": True})
    assert call(sim, obo="alice").json() == {"require_tls": True}
    sim.set_settings("alice", {})
    assert call(sim, obo="alice").json() == {}


# --- PATCH ---------------------------------------------------------------------------------------------------------


def test_patch_merges_given_fields_only(sim):
    sim.add_subuser("alice")
    sim.add_subuser("bob")
    response = call(sim, "PATCH", obo="alice", json={"require_tls": True})
    assert response.status_code == 200
    assert response.json() == {"require_tls": True, "require_valid_cert": False, "version": 1.1}
    response = call(sim, "PATCH", obo="alice", json={"require_valid_cert": True, "version": 1.2})
    assert response.json() == COMPLIANT_SETTINGS
    assert '"version":1.2' in response.text
    assert sim.settings("alice") == COMPLIANT_SETTINGS
    assert sim.settings("bob") == DEFAULT_SETTINGS
    assert sim.settings() == DEFAULT_SETTINGS


def test_patch_adds_a_field_missing_from_stored_state(sim):
    sim.set_settings(None, {"require_tls": False})
    assert call(sim, "PATCH", json={"version": 1.3}).json() == {"require_tls": False, "version": 1.3}
    assert call(sim, "PATCH", json={}).json() == {"require_tls": False, "version": 1.3}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"version": "1.2"}, "version"),
        ({"version": 1.4}, "version"),
        ({"version": 1}, "version"),
        ({"version": True}, "version"),
        ({"version": None}, "version"),
        ({"require_tls": "yes"}, "require_tls"),
        ({"require_valid_cert": 1}, "require_valid_cert"),
        ({"require_tls": True, "minimum_version": 1.2}, "minimum_version"),
    ],
)
def test_patch_rejects_invalid_fields(sim, body, field):
    response = call(sim, "PATCH", json=body)
    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == [field]
    assert sim.settings() == DEFAULT_SETTINGS  # nothing applied, not even the valid part


@pytest.mark.parametrize(
    "data, content_type, message",
    [
        ("[1, 2]", "application/json", "request body must be a JSON object"),
        ('"x"', "application/json", "request body must be a JSON object"),
        ("{not json", "application/json", "request body is not valid JSON"),
        (None, None, "request body must be a JSON object"),
        ('{"require_tls": true}', "text/plain", "Content-Type must be application/json"),
    ],
)
def test_patch_rejects_bad_bodies(sim, data, content_type, message):
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = call(sim, "PATCH", data=data, headers=headers)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"field": None, "message": message}]}


def test_patch_reports_every_bad_field(sim):
    response = call(sim, "PATCH", json={"require_tls": "yes", "version": "1.2", "require_valid_cert": True})
    assert response.status_code == 400
    assert sorted(error["field"] for error in response.json()["errors"]) == ["require_tls", "version"]


def test_patch_accepts_json_content_type_with_charset(sim):
    response = call(sim, "PATCH", data=b'{"version": 1.2}', headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200 and response.json()["version"] == 1.2


# --- subusers ------------------------------------------------------------------------------------------------------


def test_subusers_paging_filter_and_region(sim):
    names = sim.populate_subusers(12, eu_every=3, disabled_every=4)
    sim.add_subuser("zed", user_id=10, region="eu")  # a lower id sorts first
    pages, offset = [], 0
    while True:
        page = call(sim, path=SUBUSERS_PATH, params={"limit": 5, "offset": offset}).json()
        pages.append(page)
        if len(page) < 5:
            break
        offset += 5
    assert [len(page) for page in pages] == [5, 5, 3]
    items = [item for page in pages for item in page]
    assert [item["username"] for item in items] == ["zed"] + names
    assert [item["id"] for item in items] == sorted(item["id"] for item in items)
    assert set(items[1]) == {"disabled", "email", "id", "username"}
    assert [item["username"] for item in items if item["disabled"]] == ["sub0004", "sub0008", "sub0012"]

    with_region = call(sim, path=SUBUSERS_PATH, params={"include_region": "true"}).json()
    assert [item["username"] for item in with_region if item["region"] == "eu"] == ["zed", "sub0003", "sub0006", "sub0009", "sub0012"]
    assert {item["region"] for item in with_region} == {"global", "eu"}

    filtered = call(sim, path=SUBUSERS_PATH, params={"username": "sub001"}).json()
    assert [item["username"] for item in filtered] == ["sub0010", "sub0011", "sub0012"]
    assert call(sim, path=SUBUSERS_PATH, params={"username": "sub001", "offset": 3}).json() == []


def test_subusers_default_limit_is_500(sim):
    sim.populate_subusers(501)
    assert len(call(sim, path=SUBUSERS_PATH).json()) == 500
    assert [item["username"] for item in call(sim, path=SUBUSERS_PATH, params={"offset": 500}).json()] == ["sub0501"]


@pytest.mark.parametrize("params, field", [({"limit": 501}, "limit"), ({"limit": 0}, "limit"), ({"limit": "x"}, "limit"),
                                           ({"offset": -1}, "offset"), ({"include_region": "yes"}, "include_region")])
def test_subusers_bad_parameters_are_400(sim, params, field):
    response = call(sim, path=SUBUSERS_PATH, params=params)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field


def test_subusers_is_parent_only(sim):
    sim.add_subuser("alice")
    assert call(sim, path=SUBUSERS_PATH, obo="alice").status_code == 403


def test_add_subuser_rejects_duplicates_and_bad_values(sim):
    sim.add_subuser("alice")
    for kwargs in ({"username": "alice"}, {"username": "has space"}, {"username": "bob", "region": "us"}):
        with pytest.raises(ValueError):
            sim.add_subuser(**kwargs)


# --- routing -------------------------------------------------------------------------------------------------------


def test_unknown_path_is_404_and_other_methods_405(sim):
    response = call(sim, path="/v3/user/settings/other")
    assert response.status_code == 404
    assert response.json() == {"errors": [{"field": None, "message": "not found"}]}
    for method, path in (("PUT", ENFORCED_TLS_PATH), ("DELETE", ENFORCED_TLS_PATH), ("POST", SUBUSERS_PATH)):
        response = call(sim, method, path=path)
        assert response.status_code == 405
        assert response.json()["errors"][0]["message"] == "method not allowed"
    assert call(sim, "HEAD").status_code == 405
    assert call(sim, "OPTIONS").headers["Allow"] == "GET, PATCH"


def test_query_string_does_not_change_routing(sim):
    assert call(sim, path=ENFORCED_TLS_PATH + "?x=1").status_code == 200
    assert sim.requests[-1]["query"] == {"x": "1"}


# --- faults --------------------------------------------------------------------------------------------------------


def test_inject_429_with_retry_after_then_200(sim):
    reset = int(time.time()) + 30
    sim.inject(429, retry_after=2, ratelimit_reset=reset)
    response = call(sim)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.headers["X-RateLimit-Reset"] == str(reset)
    assert response.headers["X-RateLimit-Limit"] and response.headers["X-RateLimit-Remaining"] == "0"
    assert response.json() == {"errors": [{"field": None, "message": "too many requests"}]}
    assert call(sim).status_code == 200
    assert [entry["status"] for entry in sim.requests] == [429, 200]


def test_inject_5xx_uses_the_500_shape_and_count(sim):
    sim.inject(503, count=2)
    responses = [call(sim) for attempt in range(3)]
    assert [response.status_code for response in responses] == [503, 503, 200]
    assert responses[0].json() == {"errors": [{"message": "service unavailable"}]}
    assert "Retry-After" not in responses[0].headers


def test_inject_filters_by_method_path_and_account(sim):
    sim.add_subuser("alice")
    sim.add_subuser("bob")
    sim.inject(500, method="patch", account="bob")
    sim.inject(502, path=SUBUSERS_PATH)
    sim.inject(500, account=PARENT)
    assert call(sim, obo="bob").status_code == 200
    assert call(sim, "PATCH", obo="alice", json={}).status_code == 200
    assert call(sim, "PATCH", obo="bob", json={}).status_code == 500
    assert call(sim, obo="alice").status_code == 200
    assert call(sim, path=SUBUSERS_PATH).status_code == 502
    assert call(sim).status_code == 500
    assert call(sim).status_code == 200


def test_inject_custom_body_is_sent_verbatim(sim):
    sim.inject(200, body="not json at all")
    sim.inject(200, body={"require_tls": "true"})
    assert call(sim).text == "not json at all"
    assert call(sim).json() == {"require_tls": "true"}


def test_inject_rejects_bad_arguments(sim):
    with pytest.raises(ValueError):
        sim.inject(999)
    with pytest.raises(ValueError):
        sim.inject(500, count=0)


def test_faults_apply_after_auth(sim):
    sim.inject(500)
    assert call(sim, auth=False).status_code == 401
    assert call(sim).status_code == 500


def test_fail_account_is_persistent_until_cleared(sim):
    sim.add_subuser("alice")
    sim.add_subuser("bob")
    sim.fail_account("alice")
    sim.fail_account("bob", status=500, message="backend down")
    for attempt in range(3):
        response = call(sim, obo="alice")
        assert response.status_code == 403 and error_messages(response) == ["access forbidden"]
    assert call(sim, obo="bob").json() == {"errors": [{"message": "backend down"}]}
    assert call(sim).status_code == 200
    sim.clear_faults()
    assert call(sim, obo="alice").status_code == 200


def test_random_faults_are_seeded(sim, http):
    def statuses():
        sim.random_faults(rate_429=0.3, rate_5xx=0.2, seed=7, retry_after=3)
        return [call(sim, session=http).status_code for attempt in range(40)]

    first = statuses()
    assert first == statuses()
    assert {429, 500, 200} == set(first)
    sim.random_faults(rate_429=1.0)
    assert call(sim, session=http).headers["Retry-After"] == "1"
    sim.random_faults()
    assert {call(sim, session=http).status_code for attempt in range(20)} == {200}
    with pytest.raises(ValueError):
        sim.random_faults(rate_429=0.8, rate_5xx=0.3)


# --- request log ---------------------------------------------------------------------------------------------------


def test_request_log_contents_and_counts(sim):
    sim.add_subuser("alice")
    before = time.time()
    call(sim, obo="alice")
    call(sim, "PATCH", obo="alice", json={"require_tls": True})
    call(sim, "PATCH", json={"version": "1.2"})
    call(sim, "PATCH", data="{oops", headers={"Content-Type": "application/json"})
    call(sim, path=SUBUSERS_PATH, params={"limit": 10, "username": "al"})
    log = sim.requests
    assert [(entry["method"], entry["path"], entry["status"]) for entry in log] == [
        ("GET", ENFORCED_TLS_PATH, 200),
        ("PATCH", ENFORCED_TLS_PATH, 200),
        ("PATCH", ENFORCED_TLS_PATH, 400),
        ("PATCH", ENFORCED_TLS_PATH, 400),
        ("GET", SUBUSERS_PATH, 200),
    ]
    assert [entry["on_behalf_of"] for entry in log] == ["alice", "alice", None, None, None]
    assert [entry["body"] for entry in log] == [None, {"require_tls": True}, {"version": "1.2"}, "{oops", None]
    assert log[4]["query"] == {"limit": "10", "username": "al"}
    assert log[1]["headers"]["authorization"] == f"Bearer {KEY}"
    assert log[1]["headers"]["on-behalf-of"] == "alice"
    assert log[1]["headers"]["content-type"] == "application/json"
    assert all(before <= entry["time"] <= time.time() for entry in log)
    assert sim.count() == 5 and sim.count("PATCH") == 3 and sim.count("get", SUBUSERS_PATH) == 1 and sim.count(path=ENFORCED_TLS_PATH) == 4
    assert sim.clear_log() == 5
    assert sim.requests == [] and sim.count() == 0


def test_keep_alive_reuses_one_connection(sim, http):
    for attempt in range(3):
        response = call(sim, session=http)
        assert response.status_code == 200 and response.headers["Content-Length"] == str(len(response.content))
    call(sim, "PATCH", session=http, json={"version": "bad"})  # an error answer keeps the connection too
    call(sim, session=http)
    ports = {entry["client_port"] for entry in sim.requests}
    assert len(ports) == 1 and None not in ports


def test_stop_drops_idle_keep_alive_connections(http):
    simulator = Simulator(api_keys=(KEY,))
    simulator.start()
    assert call(simulator, session=http).status_code == 200
    url = simulator.url
    simulator.stop()
    with pytest.raises(requests.ConnectionError):
        http.get(url + ENFORCED_TLS_PATH, headers=AUTH, timeout=TIMEOUT)


def test_chunked_body_gets_411_and_connection_close(sim):
    host, port = sim.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as connection:
        connection.sendall(f"PATCH {ENFORCED_TLS_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 411 ") and b"Connection: close" in answer


def test_latency_applies_to_api_requests_only(sim, http):
    # A whole second: a control request answered at once stays well under it even on a busy machine.
    sim.latency = 1.0
    started = time.perf_counter()
    call(sim, session=http)
    assert time.perf_counter() - started >= 1.0
    started = time.perf_counter()
    http.get(sim.url + "/_sim/state", timeout=TIMEOUT)
    assert time.perf_counter() - started < 1.0


def test_concurrent_clients(sim):
    sim.populate_subusers(8)
    sim.latency = 0.005
    failures = []

    def client(name):
        with requests.Session() as session:
            for index in range(25):
                response = call(sim, "PATCH", obo=name, session=session, json={"require_tls": index % 2 == 0})
                if response.status_code != 200:
                    failures.append(response.status_code)

    threads = [threading.Thread(target=client, args=(f"sub{number:04d}",)) for number in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not failures
    assert sim.count("PATCH") == 200
    assert len({entry["client_port"] for entry in sim.requests}) == 8


# --- control endpoints ---------------------------------------------------------------------------------------------


def test_control_endpoints(sim, http):
    sim.add_subuser("alice")
    sim.add_customer("7", settings={"require_tls": True})
    control = sim.url + "/_sim/"
    call(sim, session=http)
    call(sim, "PATCH", obo="alice", session=http, json={"version": 1.2})

    log = http.get(control + "log", timeout=TIMEOUT).json()
    assert [(entry["method"], entry["status"]) for entry in log] == [("GET", 200), ("PATCH", 200)]
    assert http.get(control + "log?summary=1", timeout=TIMEOUT).json() == {"total": 2, "by_method": {"GET": 1, "PATCH": 1}, "by_status": {"200": 2}}
    assert http.get(control + "state", timeout=TIMEOUT).json() == {
        "parent": DEFAULT_SETTINGS,
        "subusers": {"alice": dict(DEFAULT_SETTINGS, version=1.2)},
        "customers": {"account-id 7": {"require_tls": True}},
    }

    assert http.post(control + "inject", json={"status": 429, "retry_after": 5, "method": "GET"}, timeout=TIMEOUT).json() == {"ok": True}
    response = call(sim, session=http)
    assert response.status_code == 429 and response.headers["Retry-After"] == "5"

    assert http.post(control + "fail-account", json={"account": "alice", "status": 500}, timeout=TIMEOUT).status_code == 200
    assert call(sim, obo="alice", session=http).status_code == 500
    assert http.post(control + "random-faults", json={"rate_429": 1.0, "retry_after": 9}, timeout=TIMEOUT).status_code == 200
    assert call(sim, session=http).headers["Retry-After"] == "9"
    assert http.post(control + "clear-faults", timeout=TIMEOUT).status_code == 200
    assert call(sim, obo="alice", session=http).status_code == 200

    assert http.post(control + "latency", json={"seconds": 0.05}, timeout=TIMEOUT).json() == {"seconds": 0.05}
    assert sim.latency == 0.05

    assert http.post(control + "reset-log", timeout=TIMEOUT).json() == {"cleared": 6}
    assert sim.requests == []  # control requests are never logged
    assert http.get(control + "log", timeout=TIMEOUT).json() == []


@pytest.mark.parametrize(
    "method, name, body, status",
    [
        ("POST", "inject", {"status": 1000}, 400),
        ("POST", "inject", {"bogus": 1}, 400),
        ("POST", "latency", {"seconds": -1}, 400),
        ("POST", "latency", ["not", "an", "object"], 400),
        ("GET", "inject", None, 404),
        ("GET", "nothing", None, 404),
    ],
)
def test_control_endpoint_errors(sim, method, name, body, status):
    response = requests.request(method, sim.url + "/_sim/" + name, json=body, timeout=TIMEOUT)
    assert response.status_code == status
    assert response.json()["errors"][0]["message"]


# --- populate and CLI ----------------------------------------------------------------------------------------------


def test_drift_mixed_is_deterministic_and_mixed():
    first, second, other = (Simulator(seed=seed) for seed in (3, 3, 4))
    for simulator in (first, second, other):
        simulator.populate_subusers(60, drift_mixed=True)
    assert first.state() == second.state()
    assert first.state() != other.state()
    states = list(first.state()["subusers"].values())
    assert DEFAULT_SETTINGS in states and COMPLIANT_SETTINGS in states
    assert any(state not in (DEFAULT_SETTINGS, COMPLIANT_SETTINGS) for state in states)
    assert any("version" not in state for state in states)
    assert all(state == DEFAULT_SETTINGS for state in Simulator(subusers=5).state()["subusers"].values())


def test_constructor_subusers_and_customers():
    simulator = Simulator(subusers=["alice", "bob"])
    assert list(simulator.state()["subusers"]) == ["alice", "bob"]
    assert simulator.add_customer(5) == "account-id 5"
    assert simulator.settings("account-id 5") == DEFAULT_SETTINGS
    with pytest.raises(KeyError):
        simulator.settings("nobody")
    with pytest.raises(KeyError):
        simulator.set_settings("nobody", {})


def start_cli(tmp_path, *args):
    url_file = tmp_path / "url"
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--url-file", str(url_file), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    while not url_file.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "simulator did not write its URL in time"
        time.sleep(0.02)
    return process, url_file.read_text(encoding="utf-8")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled(tmp_path, signum):
    process, url = start_cli(tmp_path, "--subusers", "12", "--eu-every", "5", "--disabled-every", "6", "--drift-mixed",
                             "--seed", "1", "--api-key", "k1", "k2", "--latency-ms", "1")
    try:
        assert url.startswith("http://127.0.0.1:")
        assert not list(tmp_path.glob("*.tmp"))
        headers = {"Authorization": "Bearer k2"}
        items = requests.get(url + SUBUSERS_PATH, params={"include_region": "true"}, headers=headers, timeout=TIMEOUT).json()
        assert [item["username"] for item in items] == [f"sub{number:04d}" for number in range(1, 13)]
        assert [item["username"] for item in items if item["region"] == "eu"] == ["sub0005", "sub0010"]
        assert [item["username"] for item in items if item["disabled"]] == ["sub0006", "sub0012"]
        assert requests.get(url + ENFORCED_TLS_PATH, headers={"Authorization": "Bearer k1", "on-behalf-of": "sub0003"}, timeout=TIMEOUT).status_code == 200
        assert requests.get(url + ENFORCED_TLS_PATH, headers={"Authorization": f"Bearer {KEY}"}, timeout=TIMEOUT).status_code == 401
        expected = Simulator(seed=1)
        expected.populate_subusers(12, drift_mixed=True)
        assert requests.get(url + "/_sim/state", timeout=TIMEOUT).json() == json.loads(json.dumps(expected.state()))
        assert requests.get(url + "/_sim/log?summary=1", timeout=TIMEOUT).json()["by_status"] == {"200": 2, "401": 1}
    finally:
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr
    assert stdout.strip() == url
    assert stderr == ""


def test_cli_defaults(tmp_path):
    process, url = start_cli(tmp_path)
    try:
        assert requests.get(url + SUBUSERS_PATH, headers=AUTH, timeout=TIMEOUT).json() == []
        assert requests.get(url + ENFORCED_TLS_PATH, headers=AUTH, timeout=TIMEOUT).json() == DEFAULT_SETTINGS
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0
