"""`/stream-ask` and `/ask` for coding assistants, end to end: a real gateway process, the fake
upstream recording what it received.

Invariants: every new field reaches an upstream that can carry it, and one that cannot names it
in `X-Tidegate-Dropped-Fields` and the log; a session carries its earlier turns to the next
request of the same client key only, and keeps an exchange only once its answer is complete.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from tests.assistant_gateway import AUTH_A, AUTH_B, REVIEW_SYSTEM, start
from tests.conftest import CLIENT_KEY, GatewayProcess, parse_sse
from tests.fake_upstream import EXPECTED_TEXT, FIX_TEXT, SOURCES, FakeUpstream
from tests.test_disconnect import wait_closed
from tidegate.config import parse_config
from tidegate.errors import ConfigError
from tidegate.prompts import DEFAULTS
from tidegate.providers.demo import DEMO_ANSWER

IMAGE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="
CODE = "def add(x):\n    return x + y\n"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "calc.py", line 2, in add\n'
    "NameError: name 'y' is not defined"
)


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = start(fake, tmp_path_factory.mktemp("assistant"))
    yield process
    process.stop()


def post(
    gw: GatewayProcess, path: str = "/stream-ask", auth: dict[str, str] = AUTH_A, **kwargs: Any
) -> httpx.Response:
    return httpx.post(gw.url + path, headers=auth, timeout=20, **kwargs)


def text_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    events = parse_sse(response.text)
    assert events[-1].get("event") == "final_end"
    return "".join(
        orjson.loads(e["data"])["content"]
        for e in events
        if "event" not in e and orjson.loads(e["data"]).get("type") == "chunk"
    )


def dropped(response: httpx.Response) -> list[str]:
    header = response.headers.get("x-tidegate-dropped-fields", "")
    return header.split(", ") if header else []


def session() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


# -- fields --------------------------------------------------------------------------------------

EVERY_FIELD: dict[str, Any] = {
    "question": "What does this do?",
    "system": "Answer in one paragraph.",
    "history": [
        {"role": "user", "content": "Earlier question"},
        {"role": "assistant", "content": "Earlier answer"},
    ],
    "context": {"file": "calc.py", "language": "python", "selection": "return x + y"},
    "images": [IMAGE],
    "max_tokens": 321,
    "temperature": 0.3,
    "top_p": 0.8,
}


def test_every_field_reaches_an_openai_compatible_upstream(
    gw: GatewayProcess, fake: FakeUpstream
) -> None:
    response = post(gw, json={**EVERY_FIELD, "model": "openai-ok"})
    assert text_of(response) == EXPECTED_TEXT
    body = fake.last("ok/assist").body
    assert body["max_tokens"] == 321
    assert (body["temperature"], body["top_p"]) == (0.3, 0.8)
    messages = body["messages"]
    assert messages[0] == {"role": "system", "content": "Answer in one paragraph."}
    assert messages[1:3] == EVERY_FIELD["history"]
    user = messages[3]
    assert user["role"] == "user" and len(messages) == 4
    text, image = user["content"]
    assert text["text"].startswith("What does this do?\n\nSelected in `calc.py`:\n```python\n")
    assert "return x + y" in text["text"]
    assert image == {"type": "image_url", "image_url": {"url": IMAGE}}
    assert dropped(response) == []


def test_an_anythingllm_upstream_names_what_it_cannot_carry(
    gw: GatewayProcess, fake: FakeUpstream
) -> None:
    sid = session()
    response = post(gw, json={**EVERY_FIELD, "model": "kb", "session_id": sid, "mode": "query"})
    assert text_of(response) == EXPECTED_TEXT
    body = fake.last("ok/assistkb").body
    # The workspace keeps the thread, under an id scoped to the client key.
    assert body["sessionId"].startswith("tg-") and body["sessionId"].endswith("-" + sid)
    assert body["mode"] == "query"
    assert body["message"].startswith("What does this do?\n\nSelected in `calc.py`")
    assert body["attachments"][0]["mime"] == "image/png"
    names = dropped(response)
    assert sorted(names) == ["history", "max_tokens", "system", "temperature", "top_p"]
    assert gw.record_for(response.headers["x-request-id"])["dropped"] == names


def test_anythingllm_names_a_task_system_prompt_it_cannot_carry(gw: GatewayProcess) -> None:
    response = post(gw, json={"model": "kb", "task": "fix", "code": CODE, "error": TRACEBACK})
    assert text_of(response) == EXPECTED_TEXT
    assert dropped(response) == ["task (the system prompt of fix)"]


@pytest.mark.parametrize("model", ["openai-ok", "anthropic"])
def test_mode_is_named_as_dropped_on_upstreams_other_than_anythingllm(
    gw: GatewayProcess, model: str
) -> None:
    response = post(gw, json={"question": "q", "model": model, "mode": "query"})
    assert text_of(response) == EXPECTED_TEXT
    assert dropped(response) == ["mode"]
    assert gw.record_for(response.headers["x-request-id"])["dropped"] == ["mode"]


def test_form_bodies_carry_the_new_fields(gw: GatewayProcess, fake: FakeUpstream) -> None:
    fields = {
        "question": "q",
        "model": "openai-ok",
        "max_tokens": "12",
        "temperature": "0.5",
        "task": "explain",
        "code": "x = 1",
        "context": '{"file": "a.rb"}',
    }
    assert text_of(post(gw, data=fields)) == EXPECTED_TEXT
    body = fake.last("ok/assist").body
    assert (body["max_tokens"], body["temperature"]) == (12, 0.5)
    assert "```ruby\nx = 1\n```" in body["messages"][-1]["content"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"task": "fix"}, "'question' is required: a non-empty string (or 'code' for task fix)"),
        ({"task": "generate", "code": "x"}, "'question' is required"),
        ({"question": "q", "task": "refactor"}, "'task' must be one of ask, generate, fix"),
        ({"question": "q", "images": ["http://x/a.png"]}, "images[0] must be a data URL"),
        ({"question": "q", "images": [IMAGE] * 9}, "'images' must have at most 8 items"),
        ({"question": "q", "history": [{"role": "system", "content": "x"}]}, "history[0].role"),
        ({"question": "q", "history": [{"role": "user"}]}, "history[0].content is required"),
        ({"question": "q", "context": "calc.py"}, "'context' must be an object"),
        ({"question": "q", "context": {"code": 1}}, "context.code must be a string"),
        ({"question": "q", "max_tokens": 0}, "'max_tokens' must be a positive integer"),
        ({"question": "q", "temperature": 3}, "'temperature' must be a number from 0 to 2"),
        ({"question": "q", "top_p": "1"}, "'top_p' must be a number from 0 to 1"),
        ({"question": "q", "code": "x" * 200_001}, "'code' is longer than 200000 characters"),
    ],
)
@pytest.mark.parametrize("path", ["/stream-ask", "/ask"])
def test_bad_fields_get_a_400_naming_the_field(
    gw: GatewayProcess, path: str, body: dict[str, Any], needle: str
) -> None:
    response = post(gw, path, json=body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert needle in response.json()["error"]


# -- tasks ---------------------------------------------------------------------------------------


def test_fix_renders_the_built_in_template(gw: GatewayProcess, fake: FakeUpstream) -> None:
    response = post(
        gw, json={"task": "fix", "code": CODE, "error": TRACEBACK, "model": "openai-fix"}
    )
    assert text_of(response) == FIX_TEXT
    system, user = fake.last("fix/assist").body["messages"]
    assert system == {"role": "system", "content": DEFAULTS["fix"].system}
    assert user["content"] == (
        "Fix this code.\n\n```\ndef add(x):\n    return x + y\n```\n\n"
        f"It fails with this error:\n```text\n{TRACEBACK}\n```"
    )


@pytest.mark.parametrize("task", ["explain", "generate"])
def test_other_tasks_render_their_templates(
    gw: GatewayProcess, fake: FakeUpstream, task: str
) -> None:
    body = {"task": task, "question": "Keep it short.", "code": CODE, "model": "openai-ok"}
    assert text_of(post(gw, json=body)) == EXPECTED_TEXT
    system, user = fake.last("ok/assist").body["messages"]
    assert system["content"] == DEFAULTS[task].system
    if task == "explain":
        assert (
            user["content"] == f"Explain this code.\n\n```\n{CODE.strip()}\n```\n\nKeep it short."
        )
    else:
        assert user["content"] == "Keep it short."  # generate's template has no {code}


def test_a_configured_task_template_is_used(gw: GatewayProcess, fake: FakeUpstream) -> None:
    body = {"task": "review", "code": "x=1", "context": {"file": "m.go"}, "model": "openai-ok"}
    assert text_of(post(gw, json=body)) == EXPECTED_TEXT
    system, user = fake.last("ok/assist").body["messages"]
    assert system["content"] == REVIEW_SYSTEM
    assert user["content"].startswith("REVIEW m.go (go):\n```go\nx=1\n```")


def test_the_demo_answers_a_fix_with_a_diagnosis_and_the_code(gw: GatewayProcess) -> None:
    answer = text_of(
        post(gw, json={"task": "fix", "code": CODE, "error": TRACEBACK, "model": "demo"})
    )
    assert answer.startswith("[tidegate demo: fix]")
    assert "NameError: name 'y' is not defined" in answer
    assert "```\n# FIX (tidegate demo)" in answer
    assert "def add(x):\n    return x + y\n```" in answer


@pytest.mark.parametrize("task", ["generate", "explain", "review"])
def test_the_demo_labels_its_canned_answer_by_task(gw: GatewayProcess, task: str) -> None:
    answer = text_of(post(gw, json={"task": task, "question": "q", "code": "x", "model": "demo"}))
    assert answer.startswith(f"[tidegate demo: {task}]")


@pytest.mark.parametrize("body", [{"question": "hi"}, {"question": "hi", "task": "ask"}])
def test_the_demo_keeps_its_sample_answer_for_questions(
    gw: GatewayProcess, body: dict[str, Any]
) -> None:
    assert text_of(post(gw, json={**body, "model": "demo"})) == DEMO_ANSWER


# -- sessions ------------------------------------------------------------------------------------


def test_a_session_carries_the_first_turn_into_the_second(
    gw: GatewayProcess, fake: FakeUpstream
) -> None:
    sid = session()
    first = {"question": "My name is Ada.", "session_id": sid, "model": "openai-ok"}
    assert text_of(post(gw, json=first)) == EXPECTED_TEXT
    assert fake.last("ok/assist").body["messages"] == [
        {"role": "user", "content": "My name is Ada."}
    ]
    second = {"question": "What is my name?", "session_id": sid, "model": "openai-ok"}
    response = post(gw, json=second)
    assert text_of(response) == EXPECTED_TEXT
    assert fake.last("ok/assist").body["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": EXPECTED_TEXT},
        {"role": "user", "content": "What is my name?"},
    ]
    assert "session_id" not in dropped(response)
    # Another client key sending the same session id starts from nothing.
    assert text_of(post(gw, auth=AUTH_B, json=second)) == EXPECTED_TEXT
    assert fake.last("ok/assist").body["messages"] == [
        {"role": "user", "content": "What is my name?"}
    ]


def test_a_session_keeps_the_rendered_task_turn(gw: GatewayProcess, fake: FakeUpstream) -> None:
    sid = session()
    fix = {
        "task": "fix",
        "code": CODE,
        "error": TRACEBACK,
        "session_id": sid,
        "model": "openai-fix",
    }
    assert text_of(post(gw, json=fix)) == FIX_TEXT
    follow = {"question": "Why?", "session_id": sid, "model": "openai-ok"}
    assert text_of(post(gw, json=follow)) == EXPECTED_TEXT
    messages = fake.last("ok/assist").body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]  # no task system
    assert TRACEBACK in messages[0]["content"]
    assert messages[1]["content"] == FIX_TEXT


def test_ask_json_uses_and_extends_the_session(gw: GatewayProcess, fake: FakeUpstream) -> None:
    sid = session()
    response = post(gw, "/ask", json={"question": "one", "session_id": sid, "model": "openai-ok"})
    assert response.status_code == 200
    assert response.json()["session_id"] == sid
    assert text_of(post(gw, json={"question": "two", "session_id": sid})) == EXPECTED_TEXT
    contents = [m["content"] for m in fake.last("ok/assist").body["messages"]]
    assert contents == ["one", EXPECTED_TEXT, "two"]


def test_a_failed_answer_is_not_kept(gw: GatewayProcess, fake: FakeUpstream) -> None:
    sid = session()
    failed = post(gw, json={"question": "one", "session_id": sid, "model": "openai-error_mid"})
    assert failed.status_code == 200 and "event: error" in failed.text
    assert text_of(post(gw, json={"question": "two", "session_id": sid})) == EXPECTED_TEXT
    assert [m["content"] for m in fake.last("ok/assist").body["messages"]] == ["two"]


def test_an_answer_cut_by_a_disconnect_is_not_kept(gw: GatewayProcess, fake: FakeUpstream) -> None:
    sid = session()
    before = fake.count("slow_stream/assist")
    body = {"question": "one", "session_id": sid, "model": "openai-slow"}
    with httpx.stream("POST", gw.url + "/stream-ask", json=body, headers=AUTH_A) as response:
        for chunk in response.iter_bytes():
            if b"tick" in chunk:
                break
    wait_closed(fake, "slow_stream/assist", before)
    assert text_of(post(gw, json={"question": "two", "session_id": sid})) == EXPECTED_TEXT
    assert [m["content"] for m in fake.last("ok/assist").body["messages"]] == ["two"]


def test_anythingllm_sessions_stay_with_the_workspace(
    gw: GatewayProcess, fake: FakeUpstream
) -> None:
    sid = session()
    for question in ("one", "two"):
        assert text_of(post(gw, json={"question": question, "session_id": sid, "model": "kb"}))
    body = fake.last("ok/assistkb").body
    assert body == {"message": "two", "mode": "chat", "sessionId": body["sessionId"]}
    # Nothing was kept by the gateway for it.
    assert httpx.delete(f"{gw.url}/v1/sessions/{sid}", headers=AUTH_A).status_code == 404
    # The same session_id from another key is another workspace thread: one client never
    # continues (or reads back) another's conversation.
    assert text_of(
        post(gw, auth=AUTH_B, json={"question": "three", "session_id": sid, "model": "kb"})
    )
    other = fake.last("ok/assistkb").body["sessionId"]
    assert other != body["sessionId"] and other.endswith("-" + sid)


def test_delete_forgets_a_session(gw: GatewayProcess, fake: FakeUpstream) -> None:
    sid = session()
    assert text_of(post(gw, json={"question": "one", "session_id": sid})) == EXPECTED_TEXT
    url = f"{gw.url}/v1/sessions/{sid}"
    assert httpx.delete(url, headers=AUTH_B).status_code == 404  # not B's to forget
    gone = httpx.delete(url, headers=AUTH_A)
    assert gone.status_code == 204 and gone.content == b""
    assert text_of(post(gw, json={"question": "two", "session_id": sid})) == EXPECTED_TEXT
    assert [m["content"] for m in fake.last("ok/assist").body["messages"]] == ["two"]
    assert httpx.delete(url, headers=AUTH_A).status_code == 204  # "two" was kept
    missing = httpx.delete(url, headers=AUTH_A)
    assert missing.status_code == 404
    assert missing.json() == {"error": f"no session '{sid}'", "code": "not_found"}
    assert httpx.delete(url).status_code == 401


# -- /ask ----------------------------------------------------------------------------------------


def test_ask_answers_as_one_json_object(gw: GatewayProcess, fake: FakeUpstream) -> None:
    response = post(gw, "/ask", json={"question": "q", "model": "kb"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"answer", "sources", "usage", "session_id", "finish_reason"}
    assert body["answer"] == EXPECTED_TEXT
    assert body["sources"] == SOURCES
    assert body["usage"]["total_tokens"] > 0
    assert body["session_id"] is None
    assert body["finish_reason"] == "stop"
    assert fake.last("ok/assistkb").path.endswith("/chat")  # not stream-chat


def test_ask_with_a_fix_task_on_the_demo(gw: GatewayProcess) -> None:
    body = {"task": "fix", "code": CODE, "error": TRACEBACK, "model": "demo", "max_tokens": 5}
    response = post(gw, "/ask", json=body)
    assert response.json()["answer"] == "[tidegate demo: fix] A canned "
    assert response.json()["finish_reason"] == "length"


def test_ask_errors_have_the_stream_ask_shape(gw: GatewayProcess) -> None:
    response = post(gw, "/ask", json={"question": "q", "model": "nope"})
    assert response.status_code == 404
    assert response.json()["code"] == "model_not_found"
    assert "unknown model 'nope'" in response.json()["error"]


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [("openai-status_500", 502, "upstream_error"), ("kb-status_429", 429, "upstream_rate_limited")],
)
def test_ask_upstream_failure_is_an_http_error(
    gateway: GatewayProcess, model: str, status: int, code: str
) -> None:
    response = httpx.post(
        gateway.url + "/ask",
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        json={"question": "q", "model": model},
        timeout=20,
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == code
    assert isinstance(response.json()["error"], str)


# -- per-model max_tokens -------------------------------------------------------------------------


def test_a_models_max_tokens_applies_when_a_request_gives_none(
    gw: GatewayProcess, fake: FakeUpstream
) -> None:
    assert text_of(post(gw, json={"question": "q", "model": "openai-capped"})) == EXPECTED_TEXT
    assert fake.last("ok/capped").body["max_tokens"] == 77
    assert text_of(post(gw, json={"question": "q", "model": "openai-capped", "max_tokens": 5}))
    assert fake.last("ok/capped").body["max_tokens"] == 5
    assert text_of(post(gw, json={"question": "q", "model": "anthropic"})) == EXPECTED_TEXT
    assert fake.last("ok/assistant-anthropic").body["max_tokens"] == 99
    assert text_of(post(gw, json={"question": "q", "model": "openai-ok"})) == EXPECTED_TEXT
    assert "max_tokens" not in fake.last("ok/assist").body


@pytest.mark.parametrize(
    ("extra", "sent"), [({}, 77), ({"max_tokens": 9}, 9), ({"max_completion_tokens": 8}, None)]
)
def test_a_models_max_tokens_applies_to_passed_through_bodies(
    gw: GatewayProcess, fake: FakeUpstream, extra: dict[str, Any], sent: int | None
) -> None:
    body = {"model": "openai-capped", "messages": [{"role": "user", "content": "q"}], **extra}
    response = httpx.post(gw.url + "/v1/chat/completions", headers=AUTH_A, json=body)
    assert response.status_code == 200
    assert fake.last("ok/capped").body.get("max_tokens") == sent


def test_max_tokens_is_refused_on_an_anythingllm_model() -> None:
    entry = {
        "name": "kb",
        "provider": "anythingllm",
        "base_url": "http://127.0.0.1:3001",
        "api_key": "k",
        "workspace": "w",
        "max_tokens": 100,
    }
    with pytest.raises(ConfigError, match=r"models\[0\]\.max_tokens"):
        parse_config({"models": [entry]})
