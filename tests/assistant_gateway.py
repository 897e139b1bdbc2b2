"""A gateway for the coding-assistant tests: two client keys, configured task prompts, and
models on the fake upstream labelled `assist`, so that `fake.last("ok/assist")` is theirs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import TEST_TIMEOUTS, GatewayProcess
from tests.fake_upstream import API_KEY, FakeUpstream

KEY_A = "tg-assist-key-a-5f1c0e"
KEY_B = "tg-assist-key-b-92d7aa"
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
AUTH_B = {"Authorization": f"Bearer {KEY_B}"}
#: The configured review prompts (fix and explain keep the built-in ones).
REVIEW_SYSTEM = "Review like a strict senior engineer."
REVIEW_TEMPLATE = "REVIEW {file} ({language}):\n```{language}\n{code}\n```\n\n{question}"


def _openai(name: str, base: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "openai",
        "base_url": base + "/v1",
        "api_key": "${FAKE_UPSTREAM_KEY}",
        "model": "fake-model",
        "timeouts": TEST_TIMEOUTS,
        **extra,
    }


def assistant_config(fake: FakeUpstream) -> dict[str, Any]:
    """Models: openai-ok, openai-fix, openai-capped (max_tokens 77), openai-slow,
    openai-error_mid, kb (AnythingLLM), anthropic (max_tokens 99), demo."""
    return {
        "models": [
            _openai("openai-ok", fake.base("ok", "assist")),
            _openai("openai-fix", fake.base("fix", "assist")),
            _openai("openai-capped", fake.base("ok", "capped"), max_tokens=77),
            _openai("openai-slow", fake.base("slow_stream", "assist")),
            _openai("openai-error_mid", fake.base("error_mid", "assist")),
            {
                "name": "kb",
                "provider": "anythingllm",
                "base_url": fake.base("ok", "assistkb"),
                "api_key": "${FAKE_UPSTREAM_KEY}",
                "workspace": "docs",
                "timeouts": TEST_TIMEOUTS,
            },
            {
                "name": "anthropic",
                "provider": "anthropic",
                "base_url": fake.base("ok", "assistant-anthropic"),
                "api_key": "${FAKE_UPSTREAM_KEY}",
                "model": "claude-fake",
                "max_tokens": 99,
                "timeouts": TEST_TIMEOUTS,
            },
            {"name": "demo", "provider": "demo", "pace": 0.001},
        ],
        "stream_ask": {
            "model": "openai-ok",
            "tasks": {"review": {"system": REVIEW_SYSTEM, "template": REVIEW_TEMPLATE}},
        },
        "auth": {"api_keys": [KEY_A, KEY_B]},
        "routing": {"cooldown": {"enabled": False}},
    }


def start(fake: FakeUpstream, workdir: Path) -> GatewayProcess:
    """The gateway process, started."""
    return GatewayProcess(assistant_config(fake), workdir, env={"FAKE_UPSTREAM_KEY": API_KEY})
