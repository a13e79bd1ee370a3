# -*- coding: utf-8 -*-
"""Hostile endpoints for RawServer: answers without end, dripped, huge, never-ending pages, echoes of the key.

Each is bounded on the server side too (bytes sent, time, requests answered), so that a client without the bounds
under test fails its test instead of taking the machine down: the point of these servers is what the client does.
Shared by test_trust_boundaries.py and the measuring script trust_boundaries_bench.py.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

from tests.conftest import API_KEY
from tests.reliability.raw_server import http_response

CHUNK = 64 * 1024
# What a server sends at most: far past the client's cap (4 MiB), far below what would hurt the test machine.
ENDLESS_LIMIT = 200 * 1024 * 1024
HUGE_SIZE = 50 * 1024 * 1024


def endless_chunked(server, conn, request):
    """A 200 answer in chunked encoding whose JSON list never ends (until ENDLESS_LIMIT or the client hangs up)."""
    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n')
    data = b'[' + b'1,' * (CHUNK // 2)
    sent = 0
    while sent < ENDLESS_LIMIT and not server.stopping.is_set():
        conn.sendall(b'%x\r\n%s\r\n' % (len(data), data))
        sent += len(data)
        data = b'1,' * (CHUNK // 2)


def drip(head, body, interval=1.0, give_up=75):
    """Send ``head`` at once, then ``body`` a byte every ``interval`` seconds: until the server stops, or for
    ``give_up`` bytes (a client without an overall deadline then fails on the cut answer, not after 1,000 s)."""
    def behaviour(server, conn, request):
        conn.sendall(head)
        for index in range(min(len(body), give_up)):
            if server.stopping.wait(interval):
                return
            conn.sendall(body[index:index + 1])
    return behaviour


DRIP_BODY = drip(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n',
                 b'{"require_tls": true, "padding": "' + b'x' * 1000)
# The same in the headers: a read timeout per socket read never ends either.
DRIP_HEAD = drip(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: ', b'y' * 1000)


def huge_body(announced=True):
    """A well-formed 50 MB JSON answer, with its Content-Length or (announced=False) ending at the connection's close."""
    body = b'{"require_tls": true, "padding": "' + b'x' * (HUGE_SIZE - 40) + b'"}'

    def behaviour(server, conn, request):
        if announced:
            conn.sendall(http_response(200, body))
        else:
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n')
            conn.sendall(body)
    return behaviour


def key_base64():
    return base64.b64encode(API_KEY.encode()).decode()


def echo_body():
    """A non-JSON error page of a proxy that echoes what it got: the key starts at character 190 of the page
    (after whitespace is folded), so a cut at 200 characters before masking would show its first 10 characters."""
    prefix = 'Bad request from proxy ' + 'p' * 160 + ' seen: '
    assert len(prefix) == 190
    return ('%s%s and Authorization: Bearer %s as Basic %s and the rest of a long page %s'
            % (prefix, API_KEY, API_KEY, key_base64(), 'z' * 300))


def echo(server, conn, request):
    server_seen = request.headers.get('authorization', '') if request else ''
    body = echo_body() + ' header: ' + server_seen
    conn.sendall(http_response(400, body, content_type='text/plain', reason='Bad Request'))


TERMINAL_ATTACK = '\x1b[2J\x1b[H ok: [sub0001] => fine \u202etxt.exe'


def escaping_errors(server, conn, request):
    """A 400 whose messages hold terminal sequences and a bidi override, one message of 5,000 characters and
    1,000 messages in all."""
    errors = [dict(message=TERMINAL_ATTACK, field='require_tls'), dict(message='m' * 5000)]
    errors += [dict(message='error %d' % number) for number in range(1000)]
    conn.sendall(http_response(400, dict(errors=errors), reason='Bad Request'))


def _offset(request):
    query = parse_qs(urlsplit(request.path).query)
    return int(query.get('offset', ['0'])[0]), int(query.get('limit', ['500'])[0])


def subuser_item(number):
    return dict(id=number, username='user%06d' % number, email='user%06d@example.com' % number, disabled=False, region='global')


def endless_pages(server, conn, request):
    """GET /v3/subusers that always answers a full page of new subusers, whatever the offset."""
    offset, limit = _offset(request)
    conn.sendall(http_response(200, [subuser_item(offset + index) for index in range(limit)]))


def pages_of(total):
    """GET /v3/subusers over ``total`` subusers, honouring limit and offset."""
    def behaviour(server, conn, request):
        offset, limit = _offset(request)
        conn.sendall(http_response(200, [subuser_item(number) for number in range(offset, min(offset + limit, total))]))
    return behaviour


def same_page(server, conn, request):
    """GET /v3/subusers that ignores the offset: the same full page for ever."""
    _offset_, limit = _offset(request)
    conn.sendall(http_response(200, [subuser_item(index) for index in range(limit)]))


def echoing_items(server, conn, request):
    """A page whose item has no username but echoes the key, its base64, a terminal sequence, and is long."""
    item = dict(note='Bearer %s' % API_KEY, seen=API_KEY, b64=key_base64(), screen='\x1b[2J\u202e', pad='q' * 5000)
    conn.sendall(http_response(200, json.dumps([item])))


def fat_pages(padding):
    """GET /v3/subusers: full pages of new subusers, each item carrying ``padding`` bytes (pages close to the size cap)."""
    def behaviour(server, conn, request):
        offset, limit = _offset(request)
        conn.sendall(http_response(200, [dict(subuser_item(offset + index), pad='p' * padding) for index in range(limit)]))
    return behaviour
