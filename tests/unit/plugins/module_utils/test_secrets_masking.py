# -*- coding: utf-8 -*-
"""The one masking point (_redact.redact) and the key rules (_api.normalize_api_key), form by form."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from ansible_collections.mailsec.sendgrid.plugins.module_utils._api import SendGridConfigError, normalize_api_key
from ansible_collections.mailsec.sendgrid.plugins.module_utils._redact import MASK, redact, redact_data

KEY = 'SG.LEAKCHECK-abcdef.tail4242-XYZ'


def b64(data):
    return base64.b64encode(data.encode()).decode()


FORMS = {
    'raw': KEY,
    'with its newline, repr-escaped': repr(KEY + '\n'),
    'JSON-escaped': json.dumps(KEY + '\r\n'),
    'URL-quoted': quote(KEY + '\n', safe=''),
    'Bearer header': 'Authorization: Bearer ' + KEY,
    'Basic, key as password (offset 0)': 'Basic ' + b64('ab:' + KEY),
    'Basic, key as password (offset 1)': 'Basic ' + b64('apikey:' + KEY),
    'Basic, key as password (offset 2)': 'Basic ' + b64('a:' + KEY),
    'base64 inside other text, no scheme': 'token=' + b64('xy' + KEY + '\n') + ';',
    'URL-safe base64': base64.urlsafe_b64encode(('q' + KEY).encode()).decode(),
}


@pytest.mark.parametrize('form', sorted(FORMS), ids=sorted(FORMS))
def test_every_form_of_the_key_is_masked(form):
    text = 'SendGrid said: <%s> (end)' % FORMS[form]
    masked = redact(text, [KEY + '\n'])
    assert MASK in masked and masked.startswith('SendGrid said: <') and masked.endswith('> (end)')
    for needle in (KEY, KEY[5:15], b64(KEY)[4:20], 'Bearer ', 'Basic '):
        assert needle not in masked, (form, masked)


def test_credentials_of_other_accounts_are_masked_too():
    text = 'echo: Authorization: Bearer abcdefgh12345678 other SG.aaaaaaaaaa.bbbbbbbbbbbb'
    assert redact(text) == 'echo: Authorization: %s other %s' % (MASK, MASK)


def test_ordinary_words_are_left_alone():
    text = 'basic plan; Bearer of bad news; HTTP 401 Unauthorized on GET /v3/user/settings/enforced_tls'
    assert redact(text, ['k']) == text  # a 1-character "key" is too short to mask safely


def test_results_are_masked_through_and_through():
    result = {'msg': 'x ' + KEY, 'results': [{'msg': repr(KEY)}, 42, None], KEY: True}
    masked = redact_data(result, {KEY, None})
    assert KEY not in json.dumps(masked) and masked['results'][1:] == [42, None]


@pytest.mark.parametrize('value', [KEY + '\n', KEY + '\r\n', '  ' + KEY + '\t ', '\n' + KEY])
def test_surrounding_whitespace_is_removed(value):
    assert normalize_api_key(value) == KEY


@pytest.mark.parametrize('value, codepoint', [
    ('SG.abc\u200bdef', 'U+200B'), ('SG.abc\x00def', 'U+0000'), ('SG.abc def', 'U+0020'), ('SG.abc\u00e9def', 'U+00E9'),
    ('SG.abc\ndef', 'U+000A'),
])
def test_other_characters_are_refused_without_echo(value, codepoint):
    with pytest.raises(SendGridConfigError) as info:
        normalize_api_key(value, 'enforced_tls_policy_api_key')
    message = str(info.value)
    assert message.startswith('enforced_tls_policy_api_key contains ') and codepoint in message
    assert 'abc' not in message and 'def' not in message


@pytest.mark.parametrize('value', [None, '', ' \n '])
def test_a_missing_key_names_the_option(value):
    with pytest.raises(SendGridConfigError, match='^api_key is required'):
        normalize_api_key(value)
