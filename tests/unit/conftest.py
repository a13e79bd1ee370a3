# -*- coding: utf-8 -*-
"""Fixtures of the unit tests."""

from __future__ import annotations

import pytest
from requests.adapters import HTTPAdapter

from tests.unit.http_conversation import Conversation


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
