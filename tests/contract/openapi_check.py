"""Check traffic against SendGrid's OpenAPI documents beside this file: the Enforced TLS API (enforced_tls_openapi.yaml)
and the blocks list (suppression_blocks_openapi.yaml, for GET /v3/suppression/blocks).

Client tests prove that everything the collection sent conforms::

    from tests.contract.openapi_check import validate_logged_requests
    validate_logged_requests(sim.requests)

Requests are checked with openapi-core (operation, security scheme, on-behalf-of header, body schema) plus a few
rules the spec leaves open but SendGrid relies on: a non-empty bearer token, a well-formed on-behalf-of value and a
PATCH body that is a JSON object holding only the documented fields.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_schema_validator import OAS31Validator
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_PATH = Path(__file__).with_name("enforced_tls_openapi.yaml")
BLOCKS_SPEC_PATH = Path(__file__).with_name("suppression_blocks_openapi.yaml")
# Paths described by another document than the Enforced TLS one.
OTHER_SPECS = {"/v3/suppression/blocks": BLOCKS_SPEC_PATH}

# Endpoints the collection uses that this spec does not describe; their requests only get the auth checks.
EXTRA_GET_PATHS = ("/v3/subusers",)

_HTTP_METHODS = frozenset(("get", "put", "post", "delete", "options", "head", "patch", "trace"))


@dataclass(frozen=True)
class _Request:
    """openapi_core.protocols.Request built from a simulator log entry."""

    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters


@dataclass(frozen=True)
class _Response:
    """openapi_core.protocols.Response."""

    status_code: int
    data: bytes
    content_type: str
    headers: Headers


def _describe(exc):
    """openapi-core puts the useful part (which field, which rule) somewhere in the exception chain."""
    text = str(exc)
    cause = exc.__cause__
    while cause is not None:
        if str(cause) not in text:
            text += f": {cause}"
        cause = cause.__cause__
    return text


class SpecChecker:
    """The loaded spec plus validators for the answers it has no openapi-core route for."""

    def __init__(self, spec_path=SPEC_PATH):
        self.openapi = OpenAPI.from_file_path(str(spec_path))
        document = yaml.safe_load(Path(spec_path).read_text(encoding="utf-8"))
        # Requests go to the simulator, whose address is no server of the spec: validate as if sent to the first one.
        self.server_url = document["servers"][0]["url"]
        # {path: {METHOD: documented response statuses}}
        self.operations = {
            path: {method.upper(): set(operation["responses"]) for method, operation in item.items() if method in _HTTP_METHODS}
            for path, item in document["paths"].items()
        }
        schemas = document["components"]["schemas"]
        self.body_fields = frozenset(schemas.get("EnforcedTlsRequestResponse", {}).get("properties", ()))
        self.error_validator = OAS31Validator(schemas["ErrorResponse"])
        server_error = document["components"].get("responses", {}).get("EnforcedTls500")
        # A document without its own 500 schema (the blocks list) has SendGrid's ErrorResponse for every error.
        self.server_error_validator = (OAS31Validator(server_error["content"]["application/json"]["schema"]) if server_error
                                       else self.error_validator)
        # {path: {METHOD: names of the documented query parameters}}, to flag parameters the spec does not know.
        self.query_parameters = {
            path: {method.upper(): {p["name"] for p in self._parameters(document, operation) if p["in"] == "query"}
                   for method, operation in item.items() if method in _HTTP_METHODS}
            for path, item in document["paths"].items()
        }

    @staticmethod
    def _parameters(document, operation):
        for parameter in operation.get("parameters", ()):
            if "$ref" in parameter:
                parameter = document["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[-1]]
            yield parameter

    def _request(self, method, path, headers, query=None, body=None):
        header = Headers(list(headers.items()))
        parameters = RequestParameters(query=ImmutableMultiDict(query or {}), header=header)
        return _Request(self.server_url, path, method.lower(), body, header.get("Content-Type", ""), parameters)

    def request_errors(self, entry):
        """Problems of one logged request (a simulator log entry), as strings; empty when it conforms."""
        method, path, headers = entry["method"], entry["path"], entry["headers"]
        errors = _auth_errors(headers) + _on_behalf_of_errors(headers)
        if path in EXTRA_GET_PATHS:
            return errors + ([] if method == "GET" else [f"{method} {path}: only GET is used"])
        if method not in self.operations.get(path, ()):
            return errors + [f"{method} {path}: no such operation in the spec"]
        body = entry["body"]
        if body is not None:
            # The log holds parsed JSON, or the raw text when it did not parse; turn it back into bytes.
            body = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
        request = self._request(method, path, headers, entry["query"], body)
        errors += [_describe(exc) for exc in self.openapi.iter_request_errors(request)]
        unknown = sorted(set(entry["query"] or ()) - self.query_parameters[path][method])
        if unknown:
            errors.append(f"{method} {path}: query parameters the spec does not define: {unknown}")
        if method == "PATCH":
            errors += _patch_body_errors(entry["body"], self.body_fields)
        return errors

    def response_errors(self, method, path, status, data, content_type):
        """Problems of one answer, as strings.

        Statuses the spec documents for the operation go through openapi-core. The spec documents no 400 or 429 (nor
        anything for unknown paths), so other 4xx bodies must match its ErrorResponse schema and 5xx bodies its 500
        schema. 2xx answers of endpoints outside the spec are not checked.
        """
        if str(status) in self.operations.get(path, {}).get(method, ()):
            request = self._request(method, path, {})
            response = _Response(status, data, content_type, Headers({"Content-Type": content_type}))
            return [_describe(exc) for exc in self.openapi.iter_response_errors(request, response)]
        if status < 400:
            return []
        if content_type.split(";")[0].strip() != "application/json":
            return [f"{status} answer has Content-Type {content_type!r}, not application/json"]
        try:
            document = json.loads(data)
        except ValueError as exc:
            return [f"{status} answer is not JSON: {exc}"]
        validator = self.server_error_validator if status >= 500 else self.error_validator
        return [f"{status} answer: {error.message}" for error in validator.iter_errors(document)]


def _auth_errors(headers):
    scheme, _sep, token = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ["Authorization header is not 'Bearer <api key>'"]
    return []


def _patch_body_errors(body, fields):
    if not isinstance(body, dict):
        return ["PATCH body is not a JSON object"]
    unknown = sorted(set(body) - fields)
    return [f"PATCH body has fields the spec does not define: {unknown}"] if unknown else []


def _on_behalf_of_errors(headers):
    value = headers.get("on-behalf-of")
    if value is None:
        return []
    if not value.strip():
        return ["on-behalf-of is present but empty"]
    if value.startswith("account-id") and not value[len("account-id"):].strip():
        return [f"on-behalf-of {value!r} lacks the customer account id ('account-id <id>')"]
    return []


@functools.lru_cache(maxsize=None)
def spec_checker(spec_path=SPEC_PATH):
    """Shared SpecChecker per spec file (loading the spec takes a while)."""
    return SpecChecker(spec_path)


def validate_logged_requests(sim_requests, spec_path=SPEC_PATH):
    """Assert that every request in a simulator log conforms to the spec; return how many were checked.

    sim_requests: Simulator.requests (or GET /_sim/log). Raises AssertionError listing every offending request.
    """
    problems = []
    for number, entry in enumerate(sim_requests):
        checker = spec_checker(OTHER_SPECS.get(entry["path"], Path(spec_path)))
        where = f"#{number} {entry['method']} {entry['path']} (on-behalf-of {entry['on_behalf_of']!r})"
        problems += [f"{where}: {error}" for error in checker.request_errors(entry)]
    if problems:
        raise AssertionError("requests that do not conform to SendGrid's spec:\n" + "\n".join(problems))
    return len(sim_requests)
