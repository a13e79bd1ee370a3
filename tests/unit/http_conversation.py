# -*- coding: utf-8 -*-
"""Canned HTTP answers and the record of the exact requests a module sends.

Patches requests' transport (HTTPAdapter.send), so everything above it — our
client, its headers, its retries — runs for real; only the network is replaced.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import requests
from requests.structures import CaseInsensitiveDict

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19 reads module arguments from basic._ANSIBLE_ARGS
    @contextlib.contextmanager
    def patch_module_args(args):
        from ansible.module_utils import basic
        saved = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = json.dumps({'ANSIBLE_MODULE_ARGS': args}).encode()
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = saved

# The headers our client decides; requests' own (Accept-Encoding, Connection, Content-Length) are not the contract.
CONTRACT_HEADERS = ('Authorization', 'on-behalf-of', 'Content-Type', 'Accept', 'User-Agent')


def answer(status=200, body=None, headers=None, text=None):
    return dict(status=status, body=body, headers=headers or {}, text=text)


class Conversation:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def send(self, adapter, request, **kwargs):
        headers = {name: request.headers[name] for name in CONTRACT_HEADERS if name in request.headers}
        body = json.loads(request.body) if request.body else None
        self.calls.append(dict(method=request.method, url=request.url, headers=headers, body=body))
        if not self.answers:
            raise AssertionError('unexpected request: %s %s' % (request.method, request.url))
        canned = self.answers.pop(0)
        if isinstance(canned, Exception):
            raise canned
        response = requests.Response()
        response.status_code = canned['status']
        response.reason = {200: 'OK', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests',
                           500: 'Internal Server Error', 503: 'Service Unavailable'}.get(canned['status'], '')
        response.headers = CaseInsensitiveDict(canned['headers'])
        if canned['text'] is not None:
            response._content = canned['text'].encode()
        elif canned['body'] is not None:
            response._content = json.dumps(canned['body']).encode()
            response.headers.setdefault('Content-Type', 'application/json')
        else:
            response._content = b''
        # The body is there already, as after a real read (the client streams answers, reading through iter_content).
        response._content_consumed = True
        response.url = request.url
        response.request = request
        return response


def run_module(module, args, capsys):
    """Run a module's main() with these arguments; return (result dict, failed)."""
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            module.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    return result, exc.value.code != 0
