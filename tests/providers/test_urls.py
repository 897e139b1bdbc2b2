"""Base URLs: given with or without the start of the API path, they mean the same endpoint."""

from __future__ import annotations

import pytest

from tidegate.config import parse_config
from tidegate.providers import provider_class
from tidegate.providers.http import join_url


@pytest.mark.parametrize(
    ("base", "path", "url"),
    [
        ("https://h/v1", "/chat/completions", "https://h/v1/chat/completions"),
        ("https://h/v1/chat/completions", "/chat/completions", "https://h/v1/chat/completions"),
        ("https://h", "/v1/messages", "https://h/v1/messages"),
        ("https://h/v1", "/v1/messages", "https://h/v1/messages"),
        ("https://h/v1/", "/v1/messages", "https://h/v1/messages"),
        ("https://h/v1/messages", "/v1/messages", "https://h/v1/messages"),
        ("http://h:11434/api", "/api/chat", "http://h:11434/api/chat"),
        (
            "http://h:3001/api/v1",
            "/api/v1/workspace/w/chat",
            "http://h:3001/api/v1/workspace/w/chat",
        ),
        ("http://h:3001/api", "/api/v1/workspace/w/chat", "http://h:3001/api/v1/workspace/w/chat"),
        (
            "https://g/v1beta",
            "/v1beta/models/m:generateContent",
            "https://g/v1beta/models/m:generateContent",
        ),
    ],
)
def test_join_url(base: str, path: str, url: str) -> None:
    assert join_url(base, path) == url


def test_each_provider_builds_its_urls_and_key_header_from_its_declaration() -> None:
    config = parse_config(
        {
            "models": [
                {"name": "a", "provider": "anthropic", "api_key": "ka-1234", "model": "c"},
                {"name": "g", "provider": "gemini", "api_key": "kg-1234", "model": "gm"},
                {
                    "name": "k",
                    "provider": "anythingllm",
                    "base_url": "http://h:3001/api",
                    "api_key": "kk-1234",
                    "workspace": "docs",
                },
            ]
        }
    )
    a, g, k = (provider_class(m.provider)(m) for m in config.models)
    assert a.url_for(True) == "https://api.anthropic.com/v1/messages"
    assert a.headers_for(True)["x-api-key"] == "ka-1234"
    assert a.headers_for(False)["anthropic-version"]
    assert g.url_for(False).endswith("/v1beta/models/gm:generateContent")
    assert g.url_for(True).endswith("/v1beta/models/gm:streamGenerateContent?alt=sse")
    assert g.headers_for(True)["x-goog-api-key"] == "kg-1234"
    assert k.url_for(True) == "http://h:3001/api/v1/workspace/docs/stream-chat"
    assert k.url_for(False) == "http://h:3001/api/v1/workspace/docs/chat"
    assert k.headers_for(False)["Authorization"] == "Bearer kk-1234"
    assert k.headers_for(True)["Accept-Encoding"] == "identity"
