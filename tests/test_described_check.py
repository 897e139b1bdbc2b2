"""`tidegate check` on descriptors: every kind of mistake is named by location, with the fix;
`tidegate try` shows each stage of one request."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.fake_described import MODEL_KEY, DescribedFake
from tests.fake_upstream import API_KEY, FakeUpstream
from tidegate.cli import main

SEED = orjson.loads((Path(__file__).parent / "fixtures" / "seed_001_descriptor.json").read_bytes())
AT = "providers[0] (openai_gpt4)"


def check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, Any]
) -> tuple[int, str, str]:
    path = tmp_path / "tidegate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    code = main(["check", "--config", str(path), "--env-file", str(tmp_path / "none.env")])
    out = capsys.readouterr()
    return code, out.out, out.err


def seed_config(change: Any = None, **model: Any) -> dict[str, Any]:
    descriptor = copy.deepcopy(SEED)
    if change is not None:
        change(descriptor)
    return {
        "providers": [descriptor],
        "models": [{"name": "gpt", "provider": "openai_gpt4", **model}],
    }


def test_check_describes_the_seed_descriptor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = check(tmp_path, capsys, seed_config(api_key="sk-0123456789abcdef"))
    assert code == 0, err
    assert (
        "provider openai_gpt4: sse, token from https://api.openai.com/v1/token; models: gpt" in out
    )
    assert "0123456789abcdef" not in out


def _set(path: str, value: Any) -> Any:
    def change(d: dict[str, Any]) -> None:
        *head, last = path.split(".")
        target: Any = d
        for step in head:
            target = target[int(step)] if step.isdigit() else target[step]
        if value is _DELETE:
            del target[last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return change


_DELETE = object()


@pytest.mark.parametrize(
    ("change", "location", "problem", "fix"),
    [
        (
            _set("chat.data.1.value", "${mesages}"),
            f"{AT}.chat.data[1].value",
            "unknown variable ${mesages} (for models[0], gpt)",
            "or define mesages under vars: of models[0]",
        ),
        (
            _set("chat.chunk_match", "data: (.*"),
            f"{AT}.chat.chunk_match",
            "is not a regular expression",
            "first group is the chunk's JSON",
        ),
        (
            _set("chat.chunk_match", "data: .*"),
            f"{AT}.chat.chunk_match",
            "has no group",
            "in parentheses",
        ),
        (
            _set("chat.resp.0.value", "choices[0].delta.content"),
            f"{AT}.chat.resp[0].value",
            "is not a dotted path",
            "such as choices.0.delta.content",
        ),
        (
            _set("auth.set_data.0.field", "token..value"),
            f"{AT}.auth.set_data[0].field",
            "is not a dotted path",
            "dotted path",
        ),
        (
            _set("chat.headers.0.convertor", "rot13"),
            f"{AT}.chat.headers[0].convertor",
            "unknown convertor 'rot13'",
            "declare it under convertors:",
        ),
        (
            _set("auth", _DELETE),
            f"{AT}.chat.need_auth",
            "is true, but the descriptor has no auth step",
            "set need_auth: false",
        ),
        (
            _set("chat.chunk_filter.field", "content"),
            f"{AT}.chat.chunk_filter.field",
            "'content' is not an output field of resp",
            "use one of: text, done",
        ),
        (
            _set("chat.resp.1.name", "finished"),
            f"{AT}.chat.resp[1].name",
            "'finished' is not a canonical field",
            "use text, reasoning, done, finish_reason, error",
        ),
        (
            _set("auth.headers.0.value", "Bearer ${env.SEED_KEY}"),
            f"{AT}.auth.headers[0].value",
            "environment variable SEED_KEY (${env.SEED_KEY}) is not set",
            "${env.SEED_KEY:-value}",
        ),
        (
            _set("auth.data", {"q": "${messages}"}),
            f"{AT}.auth.data",
            "the auth step cannot use ${messages}",
            "vars: or ${env.NAME}",
        ),
        (
            _set("chat.url", "/v1/chat/completions"),
            "models[0].base_url",
            "is required: provider 'openai_gpt4' has URLs relative to it",
            "set base_url to the API root",
        ),
        (
            _set("chat.data.0.value", "${model"),
            f"{AT}.chat.data[0].value",
            "without a closing '}'",
            "$${",
        ),
        (
            _set("chat.method", "GET"),
            f"{AT}.chat.data",
            "a GET request has no body",
            "move it to params:",
        ),
    ],
)
def test_check_names_each_mistake(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Any,
    location: str,
    problem: str,
    fix: str,
) -> None:
    code, out, err = check(tmp_path, capsys, seed_config(change))
    assert code == 2, out
    line = next((line for line in err.splitlines() if location + ":" in line), None)
    assert line is not None, err
    assert problem in line and fix in line, line


@pytest.mark.parametrize(
    ("config", "location", "problem"),
    [
        (
            {
                "providers": [{**SEED, "name": "openai"}],
                "models": [{"name": "m", "provider": "demo"}],
            },
            "providers[0].name",
            "'openai' is a built-in provider",
        ),
        (
            {"providers": [SEED, SEED], "models": [{"name": "m", "provider": "demo"}]},
            "providers[1].name",
            "is also providers[0]'s name",
        ),
        (
            {"providers": [{"file": "absent.json"}], "models": [{"name": "m", "provider": "demo"}]},
            "providers[0].file",
            "cannot read 'absent.json'",
        ),
        (
            {
                "providers": [SEED],
                "models": [{"name": "m", "provider": "openai_gpt4", "workspace": "x"}],
            },
            "models[0].workspace",
            "unknown setting for provider openai_gpt4",
        ),
        (
            {"providers": [SEED], "models": [{"name": "m", "provider": "openai_gtp4"}]},
            "models[0].provider",
            "unknown provider 'openai_gtp4'",
        ),
        (
            {
                "providers": [SEED],
                "models": [{"name": "m", "provider": "openai_gpt4", "vars": {"model": "x"}}],
            },
            "models[0].vars.model",
            "is a built-in variable",
        ),
        (
            {
                "providers": [{**SEED, "chat": {**SEED["chat"], "chunk_filter": {"op": "~="}}}],
                "models": [{"name": "m", "provider": "demo"}],
            },
            "providers[0].chat.chunk_filter",
            "",
        ),
    ],
)
def test_check_names_each_config_mistake(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    config: dict[str, Any],
    location: str,
    problem: str,
) -> None:
    code, _, err = check(tmp_path, capsys, config)
    assert code == 2
    assert location in err and problem in err, err


# -- tidegate try -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def described() -> Iterator[DescribedFake]:
    fake = DescribedFake().start()
    yield fake
    fake.stop()


def test_try_shows_every_stage_with_secrets_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], described: DescribedFake
) -> None:
    ns = "y" + uuid.uuid4().hex[:10]
    config = {
        "providers": [SEED],
        "models": [
            {
                "name": "gpt",
                "provider": "openai_gpt4",
                "base_url": described.base(ns),
                "api_key": MODEL_KEY,
            }
        ],
        "auth": {"api_keys": [{"key": "client-key-for-alice-01", "user": "alice"}]},
    }
    path = tmp_path / "tidegate.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["try", "gpt", "Say hello", "--user", "alice", "--config", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    token = described.ns(ns).chats[0]["headers"]["Authorization"].removeprefix("Bearer ")
    assert MODEL_KEY not in out and token not in out
    assert "user alice" in out
    assert "== 1. request" in out and f"POST {described.base(ns)}/v1/token" in out
    assert "Authorization: ****" in out
    assert "== 1. upstream answer: HTTP 200" in out
    assert f"POST {described.base(ns)}/v1/chat/completions" in out
    assert '"messages"' in out and '"stream": true' in out  # the rendered body
    assert "data: [DONE]" in out  # raw bytes as received
    assert "text 'Hello'" in out and "finish stop" in out  # canonical events
    assert "first event" in out and "total" in out  # timings


def test_try_reports_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], described: DescribedFake
) -> None:
    ns = "y" + uuid.uuid4().hex[:10]
    config = {
        "providers": [SEED],
        "models": [
            {
                "name": "gpt",
                "provider": "openai_gpt4",
                "base_url": described.base(ns),
                "api_key": "not-the-right-key-123",
            }
        ],
    }
    path = tmp_path / "tidegate.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["try", "gpt", "hi", "--config", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "HTTP 401" in out and "upstream_auth_failed" in out
    assert "not-the-right-key-123" not in out


def test_try_shows_the_body_sent_to_a_built_in_provider(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake: FakeUpstream
) -> None:
    """`tidegate try` on a built-in provider shows the request body as it was sent, though
    the stream lets go of it once it has opened."""
    config = {
        "models": [
            {
                "name": "plain",
                "provider": "openai",
                "base_url": fake.base("ok") + "/v1",
                "model": "fake-model",
                "api_key": API_KEY,
            }
        ]
    }
    path = tmp_path / "tidegate.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["try", "plain", "Say hello", "--config", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "/v1/chat/completions" in out
    assert '"messages"' in out and "Say hello" in out and '"stream": true' in out
    assert API_KEY not in out
