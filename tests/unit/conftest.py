# -*- coding: utf-8 -*-
"""Fixtures of the unit tests."""

from __future__ import annotations

import pytest
from requests.adapters import HTTPAdapter

from ansible_collections.mailsec.sendgrid.tests.unit.http_conversation import Conversation


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    """Plugins read SENDGRID_* as fallbacks: only what a test sets may count."""
    for name in ('SENDGRID_API_KEY', 'SENDGRID_REGION', 'SENDGRID_API_URL'):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def conversation(monkeypatch):
    """conversation(answers) -> Conversation; every HTTP request gets the next canned answer."""
    sleeps = []
    monkeypatch.setattr('time.sleep', sleeps.append)

    def start(answers):
        conv = Conversation(answers)
        conv.sleeps = sleeps

        def send(adapter, request, **kwargs):
            return conv.send(adapter, request, **kwargs)
        monkeypatch.setattr(HTTPAdapter, 'send', send)
        return conv
    return start
