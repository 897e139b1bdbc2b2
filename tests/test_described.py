"""Providers described in config, end to end: real gateway processes, official SDKs, a fake
upstream that speaks APIs no built-in provider does (tests/fake_described.py).

Seed 001's example descriptor is used as the seed gives it (tests/fixtures), byte for byte;
its models point its requests at the fake with `base_url`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import orjson
import pytest
import yaml
from cryptography.fernet import Fernet

from tests.conftest import GatewayProcess, closed_after_test, parse_sse
from tests.fake_described import ALICE_KEY, MODEL_KEY, SIGNING_KEY, DescribedFake
from tests.fake_upstream import API_KEY, FakeUpstream

SEED = Path(__file__).parent / "fixtures" / "seed_001_descriptor.json"
SEED_TEXT = "Hello from the seed"
REDIS_URL = os.environ.get("TIDEGATE_TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(
    not REDIS_URL, reason="TIDEGATE_TEST_REDIS_URL is not set (no Redis here)"
)
ALICE = "tg-client-alice-5f0c2d71"
BOB = "tg-client-bob-93ae6c18"
ANON = "tg-client-anon-0b7d44e2"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]

NDJSON_API: dict[str, Any] = {
    "name": "ndjson-api",
    "chat": {
        "url": "/ndjson/generate",
        "headers": {"X-Api-Key": "${api_key}"},
        "data": {
            "model": "${model}",
            "prompt": "${prompt}",
            "stream": "${stream}",
            "options": {"temperature": "${temperature}", "num_predict": "${max_tokens}"},
        },
        "framing": "ndjson",
        "resp": {"text": "response", "done": "done_reason"},
        "usage": {"input_tokens": "prompt_eval_count", "output_tokens": "eval_count"},
    },
}
LINES_API: dict[str, Any] = {
    "name": "lines-api",
    "chat": {
        "url": "/lines/chat",
        "data": [
            {"name": "question", "value": "${query}"},
            {"name": "history", "value": "${messages}"},
            {"name": "tenant", "value": "${tenant}"},
        ],
        "framing": "lines",
        "chunk_match": "^(?:DATA|STATUS) (.*)$",
        "end": "[END]",
        "resp": [
            {"name": "text", "value": "t"},
            {"name": "finish_reason", "value": "finished"},
        ],
        "usage": {"input_tokens": "used.in", "output_tokens": "used.out"},
    },
}
JSON_API: dict[str, Any] = {
    "name": "json-api",
    "chat": {
        "url": "/json/complete",
        "headers": [
            {"name": "X-Timestamp", "value": "", "convertor": "timestamp"},
            {"name": "X-Signature", "value": "${prompt}", "convertor": "hmac_sha256:SIGNING_KEY"},
        ],
        "data": [
            {"name": "prompt", "value": "${prompt}"},
            {"name": "max_tokens", "value": "${max_tokens}"},
        ],
        "framing": "json",
        "resp": {"text": "result.answer"},
        "usage": {"input_tokens": "usage.in", "output_tokens": "usage.out"},
        "errors": [
            {
                "name": "status",
                "op": "!=",
                "value": 0,
                "message": "msg",
                "as_status": 429,
                "retryable": False,
            }
        ],
    },
}


@pytest.fixture(scope="session")
def described() -> Iterator[DescribedFake]:
    fake = DescribedFake().start()
    yield fake
    fake.stop()


def config_for(fake: DescribedFake, ns: str, **extra: Any) -> dict[str, Any]:
    """A gateway config with the seed's descriptor and the three APIs, talking to `ns`."""
    base = fake.base(ns)
    config: dict[str, Any] = {
        "providers": [{"file": str(SEED)}, NDJSON_API, LINES_API, JSON_API],
        "models": [
            {
                "name": "seed-chat",
                "provider": "openai_gpt4",
                "base_url": base,
                "api_key": "${MODEL_KEY}",
                "model": "seed-upstream-model",
            },
            {"name": "ndjson", "provider": "ndjson-api", "base_url": base, "api_key": MODEL_KEY},
            {
                "name": "lines",
                "provider": "lines-api",
                "base_url": base,
                "vars": {"tenant": "acme"},
            },
            {"name": "whole", "provider": "json-api", "base_url": base, "retries": 2},
        ],
        "auth": {
            "api_keys": [
                {"key": ALICE, "user": f"alice-{ns}", "name": "alice's laptop"},
                {"key": BOB, "user": f"bob-{ns}"},
                ANON,
            ]
        },
        "stream_ask": {"model": "seed-chat"},
        "routing": {"cooldown": {"enabled": False}},
    }
    config.update(extra)
    return config


ENV = {"MODEL_KEY": MODEL_KEY, "SIGNING_KEY": SIGNING_KEY}


@pytest.fixture(scope="module")
def ns() -> str:
    return "m" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def gw(
    described: DescribedFake, ns: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        config_for(described, ns), tmp_path_factory.mktemp("described"), env=ENV
    )
    yield process
    process.stop()


def oai(gw: GatewayProcess, key: str = ANON) -> openai.OpenAI:
    return closed_after_test(
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0, timeout=20)
    )


def stream_text(client: openai.OpenAI, model: str, **kwargs: Any) -> tuple[str, list[Any]]:
    chunks = list(
        client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **kwargs)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


# -- seed 001's descriptor, unchanged ---------------------------------------------------------


def test_seed_descriptor_streams_through_the_openai_sdk(
    gw: GatewayProcess, described: DescribedFake, ns: str
) -> None:
    """The token is fetched with the model's key, the chat carries it, the answer maps."""
    text, chunks = stream_text(oai(gw), "seed-chat")
    assert text == SEED_TEXT + " (key: model)"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finishes == ["stop"]
    space = described.ns(ns)
    assert space.fetches == ["model"]  # one token, fetched with the model's key
    sent = space.chats[-1]
    assert sent["headers"]["Authorization"].startswith("Bearer tok-model-")
    assert sent["body"] == {
        "model": "seed-upstream-model",
        "messages": MESSAGES,
        "stream": True,
    }


def test_seed_descriptor_answers_whole_through_the_openai_sdk(gw: GatewayProcess) -> None:
    completion = oai(gw).chat.completions.create(model="seed-chat", messages=MESSAGES)
    assert completion.choices[0].message.content == SEED_TEXT + " (key: model)"
    assert completion.choices[0].finish_reason == "stop"


def test_seed_descriptor_through_the_anthropic_sdk(gw: GatewayProcess) -> None:
    client = closed_after_test(
        anthropic.Anthropic(base_url=gw.url, api_key=ANON, max_retries=0, timeout=20)
    )
    with client.messages.stream(model="seed-chat", max_tokens=100, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == SEED_TEXT + " (key: model)"
    assert final.stop_reason == "end_turn"


def test_seed_descriptor_through_stream_ask(
    gw: GatewayProcess, described: DescribedFake, ns: str
) -> None:
    response = httpx.post(
        f"{gw.url}/stream-ask",
        headers={"Authorization": f"Bearer {ALICE}"},
        json={"question": "What is tidegate?"},
        timeout=20,
    )
    assert response.status_code == 200
    events = [orjson.loads(e["data"]) for e in parse_sse(response.text) if "data" in e]
    text = "".join(e["content"] for e in events if e.get("type") == "chunk")
    assert text == SEED_TEXT + " (key: model)"
    # The question reached the upstream in the seed's ${messages}.
    messages = described.ns(ns).chats[-1]["body"]["messages"]
    assert "What is tidegate?" in orjson.dumps(messages).decode()


def test_models_list_names_the_descriptor(gw: GatewayProcess) -> None:
    models = {m.id: m.owned_by for m in oai(gw).models.list()}
    assert models["seed-chat"] == "openai_gpt4"


# -- other framings -----------------------------------------------------------------------------


def test_ndjson_api(gw: GatewayProcess, described: DescribedFake, ns: str) -> None:
    text, chunks = stream_text(
        oai(gw),
        "ndjson",
        temperature=0.25,
        stream_options={"include_usage": True},
    )
    assert text == "Lines of JSON"
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (7, 3)
    body = described.ns(ns).chats[-1]["body"]
    # Typed substitution: a number stays a number, a boolean a boolean; unset is left out.
    assert body == {
        "model": "ndjson",
        "prompt": "Say hello",
        "stream": True,
        "options": {"temperature": 0.25},
    }


def test_lines_api(gw: GatewayProcess, described: DescribedFake, ns: str) -> None:
    text, chunks = stream_text(oai(gw), "lines", stream_options={"include_usage": True})
    assert text == "Plain old lines"
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (4, 3)
    body = described.ns(ns).chats[-1]["body"]
    assert body == {"question": "Say hello", "history": MESSAGES, "tenant": "acme"}


def test_whole_json_api_served_to_a_streaming_client(
    gw: GatewayProcess, described: DescribedFake, ns: str
) -> None:
    """Signed with the timestamp and hmac_sha256 convertors; one answer, streamed."""
    text, chunks = stream_text(oai(gw), "whole", max_tokens=64)
    assert text == "Whole answer to: Say hello"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 1
    sent = described.ns(ns).chats[-1]
    assert sent["body"] == {"prompt": "Say hello", "max_tokens": 64}
    assert sent["headers"]["X-Timestamp"].isdigit()


def test_an_error_rule_maps_status_and_stops_retries(
    gw: GatewayProcess, described: DescribedFake, ns: str
) -> None:
    space = described.ns(ns)
    before = len(space.chats)
    with pytest.raises(openai.RateLimitError) as caught:
        oai(gw).chat.completions.create(
            model="whole", messages=[{"role": "user", "content": "error please"}]
        )
    assert "quota exhausted" in str(caught.value)
    assert len(space.chats) == before + 1  # retryable: false, though the model has retries: 2


# -- auth failures and secrets -------------------------------------------------------------------


def test_auth_failure_is_a_clean_502(
    described: DescribedFake, start_gateway: Callable[..., GatewayProcess]
) -> None:
    ns = "a" + uuid.uuid4().hex[:10]
    config = config_for(described, ns)
    wrong = "wrong-upstream-key-61d0e2bb"
    config["models"][0]["api_key"] = wrong
    gw = start_gateway(config, env=ENV)
    response = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {ANON}"},
        json={"model": "seed-chat", "messages": MESSAGES, "stream": True},
        timeout=20,
    )
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_auth_failed"
    assert "'openai_gpt4'" in error["message"] and "auth step" in error["message"]
    assert "HTTP 401" in error["message"]
    assert wrong not in response.text and wrong not in gw.output()
    assert described.ns(ns).chats == []  # no chat was sent without a token


def test_a_token_quoted_by_the_upstream_is_redacted(
    described: DescribedFake, start_gateway: Callable[..., GatewayProcess]
) -> None:
    """A token fetched at run time is a secret: when the upstream quotes it back in an error,
    neither the client nor the log sees it."""
    ns = "r" + uuid.uuid4().hex[:10]
    gw = start_gateway(config_for(described, ns), env=ENV)
    assert stream_text(oai(gw), "seed-chat")[0].startswith(SEED_TEXT)
    space = described.ns(ns)
    space.echo_token = True
    space.auth_status = 503  # the refresh after the 401 fails too: the 401's message is shown
    space.revoke()
    response = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {ANON}"},
        json={"model": "seed-chat", "messages": MESSAGES},
        timeout=20,
    )
    assert response.status_code == 502
    token = described.ns(ns).chats[0]["headers"]["Authorization"].removeprefix("Bearer ")
    assert token not in response.text
    assert token not in gw.output()


# -- token refresh -------------------------------------------------------------------------------


async def _concurrent(url: str, model: str, count: int) -> list[str]:
    async with httpx.AsyncClient(timeout=30) as client:

        async def one() -> str:
            response = await client.post(
                f"{url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {ANON}"},
                json={"model": model, "messages": MESSAGES, "stream": True},
            )
            assert response.status_code == 200, response.text
            return "".join(
                (orjson.loads(e["data"])["choices"] or [{}])[0].get("delta", {}).get("content")
                or ""
                for e in parse_sse(response.text)
                if e.get("data", "[DONE]") != "[DONE]"
            )

        return await asyncio.gather(*(one() for _ in range(count)))


def test_a_401_refreshes_the_token_once_for_50_concurrent_requests(
    described: DescribedFake, start_gateway: Callable[..., GatewayProcess]
) -> None:
    ns = "t" + uuid.uuid4().hex[:10]
    gw = start_gateway(config_for(described, ns), env=ENV)
    space = described.ns(ns)
    assert stream_text(oai(gw), "seed-chat")[0].startswith(SEED_TEXT)
    assert space.fetches == ["model"]
    space.revoke()  # the upstream rotates its tokens: the cached one now gets a 401
    space.token_delay = 0.3  # a slow token service: the 401s of all 50 pile up behind one fetch
    texts = asyncio.run(_concurrent(gw.url, "seed-chat", 50))
    assert texts == [SEED_TEXT + " (key: model)"] * 50
    assert space.fetches == ["model", "model"]  # exactly one refresh
    assert 1 <= space.refused <= 50


@needs_redis
@pytest.mark.redis
def test_two_gateways_share_one_token_through_redis(
    described: DescribedFake, start_gateway: Callable[..., GatewayProcess]
) -> None:
    ns = "s" + uuid.uuid4().hex[:10]
    config = config_for(described, ns, state=REDIS_URL)
    first = start_gateway(config, env=ENV)
    second = start_gateway(config, env=ENV)
    space = described.ns(ns)
    assert stream_text(oai(first), "seed-chat")[0].startswith(SEED_TEXT)
    assert stream_text(oai(second), "seed-chat")[0].startswith(SEED_TEXT)
    assert space.fetches == ["model"]  # the second instance used the first one's token
    space.revoke()
    assert stream_text(oai(second), "seed-chat")[0].startswith(SEED_TEXT)
    assert stream_text(oai(first), "seed-chat")[0].startswith(SEED_TEXT)
    assert space.fetches == ["model", "model"]  # one refresh, shared again


# -- per-user upstream keys ----------------------------------------------------------------------


def _keys(
    config_path: Path, env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "tidegate", "keys", *args, "--config", str(config_path)],
        input=stdin,
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
    )


@needs_redis
@pytest.mark.redis
def test_per_user_upstream_keys(
    described: DescribedFake,
    fake: FakeUpstream,
    start_gateway: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    """alice's own key reaches the upstream for alice, the model's key for everyone else, on a
    described provider and on a built-in one; managed with `tidegate keys`."""
    ns = "k" + uuid.uuid4().hex[:10]
    secret = subprocess.run(
        [sys.executable, "-m", "tidegate", "keys", "new-secret"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {**ENV, "TIDEGATE_SECRET_KEY": secret, "FAKE_KEY": API_KEY}
    config = config_for(described, ns, state=REDIS_URL)
    builtin_path = f"ok/peruser-{ns}"
    config["models"].append(
        {
            "name": "builtin",
            "provider": "openai",
            "base_url": fake.base("ok", f"peruser-{ns}") + "/v1",
            "api_key": "${FAKE_KEY}",
        }
    )
    gw = start_gateway(config, env=env)
    path = gw.workdir / "tidegate.yaml"
    alice = f"alice-{ns}"

    stored = _keys(
        path, env, "set-upstream", "--user", alice, "--model", "seed-chat", stdin=ALICE_KEY + "\n"
    )
    assert stored.returncode == 0, stored.stderr
    assert ALICE_KEY not in stored.stdout
    alice_builtin = "sk-alice-own-openai-key-9931"
    stored = _keys(
        path, env, "set-upstream", "--user", alice, "--model", "builtin", stdin=alice_builtin
    )
    assert stored.returncode == 0, stored.stderr

    listed = _keys(path, env, "list-upstream")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines() if line.startswith(alice)]
    assert [r[1] for r in rows] == ["model:builtin", "model:seed-chat"]
    assert ALICE_KEY not in listed.stdout and alice_builtin not in listed.stdout
    assert all(r[2].startswith("****") for r in rows)

    assert stream_text(oai(gw, ALICE), "seed-chat")[0] == SEED_TEXT + " (key: alice)"
    assert stream_text(oai(gw, BOB), "seed-chat")[0] == SEED_TEXT + " (key: model)"
    assert stream_text(oai(gw, ANON), "seed-chat")[0] == SEED_TEXT + " (key: model)"
    assert stream_text(oai(gw, ALICE), "seed-chat")[0] == SEED_TEXT + " (key: alice)"
    # One token per (descriptor, user): alice's with her key, bob's and anonymous' with the
    # model's; alice's second request reused hers.
    assert sorted(described.ns(ns).fetches) == ["alice", "model", "model"]

    # A built-in provider: alice's key goes upstream for alice (the fake refuses it), the
    # model's for bob.
    with pytest.raises(openai.APIStatusError):
        oai(gw, ALICE).chat.completions.create(model="builtin", messages=MESSAGES)
    assert fake.last(builtin_path).headers["Authorization"] == f"Bearer {alice_builtin}"
    oai(gw, BOB).chat.completions.create(model="builtin", messages=MESSAGES)
    assert fake.last(builtin_path).headers["Authorization"] == f"Bearer {API_KEY}"
    assert alice_builtin not in gw.output() and ALICE_KEY not in gw.output()

    removed = _keys(path, env, "remove-upstream", "--user", alice, "--model", "seed-chat")
    assert removed.returncode == 0, removed.stderr
    assert stream_text(oai(gw, ALICE), "seed-chat")[0] == SEED_TEXT + " (key: model)"
    removed = _keys(path, env, "remove-upstream", "--user", alice, "--model", "builtin")
    assert removed.returncode == 0, removed.stderr
    assert alice not in _keys(path, env, "list-upstream").stdout  # the user is gone too


def test_keys_commands_refuse_without_a_shared_state(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "demo", "provider": "demo"}]}))
    secret = Fernet.generate_key().decode()
    done = _keys(path, {"TIDEGATE_SECRET_KEY": secret}, "list-upstream")
    assert done.returncode == 2
    done = _keys(path, {}, "set-upstream", "--user", "a", "--model", "demo", stdin="k")
    assert done.returncode == 2
    assert "TIDEGATE_SECRET_KEY" in done.stderr
