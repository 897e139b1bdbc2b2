"""A hostile client against the real gateway process: no body it can send costs a 5xx.

Bodies are drawn from each inbound format's own JSON schema (so most are valid and get served)
and then type-confused: a sub-value replaced by a JSON value of another kind, a field deleted,
a key with control characters added or renamed. Whatever arrives, the invariants hold:

- never a 5xx, and nothing but 200 or 400;
- a 400 names the field (its message starts with a field of the format's request);
- a 200 is well-formed: a stream ends with its format's end, and no stream carries an
  internal error;
- every response header is printable ASCII, and none sets a cookie.

Examples are derandomized, so CI sees the same bodies on every run; explicit examples pin
bodies that once cost a 500.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import _from_schema, from_schema
from pydantic import AliasChoices, BaseModel

from tests.conftest import CLIENT_KEY, GatewayProcess, parse_sse
from tidegate.formats.anthropic import MessagesRequest
from tidegate.formats.gemini import GenerateContentRequest
from tidegate.formats.openai_chat import ChatCompletionRequest
from tidegate.formats.openai_responses import ResponsesRequest
from tidegate.formats.stream_ask import StreamAskRequest

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
MODELS = [
    "openai-ok",
    "anthropic-ok",
    "gemini-ok",
    "ollama-ok",
    "kb-ok",
    "demo",
    "openai-responses-ok",
]
HOSTILE = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CONTROL = ["\r\n", "\n", "\r", "\x00", "\x1b", "\x7f", "\u2028", "\r\nSet-Cookie: pwn=1"]
INJECTED = "a\r\nSet-Cookie: pwn=1"
HI = [{"role": "user", "content": "hi"}]


# -- bodies --------------------------------------------------------------------------------------


def _for_drawing(schema: Any) -> Any:
    """The schema as hypothesis-jsonschema should draw from it: `oneOf` read as `anyOf` (the
    gateway picks a union member by kind or by `type`, so members may overlap: an unknown block
    type is any object with a `type`), arrays of at most three items, and no members beyond the
    declared ones (the hostile edits below add those, far faster than the schema would)."""
    if isinstance(schema, list):
        return [_for_drawing(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {("anyOf" if k == "oneOf" else k): _for_drawing(v) for k, v in schema.items()}
    if out.get("type") == "array":
        out.setdefault("maxItems", 3)
    if out.get("additionalProperties") is True:
        out["additionalProperties"] = False
    return out


def _other_kind(kind: str) -> Callable[[Any], bool]:
    """A filter keeping JSON values of any kind but `kind`."""
    return lambda value: _kind(value) != kind


def bodies(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Valid bodies of a request model, drawn from its JSON schema."""
    strategy: st.SearchStrategy[Any] = from_schema(_for_drawing(model.model_json_schema()))
    return strategy


@pytest.fixture(scope="module", autouse=True)
def _subschema_strategies_built_once() -> Iterator[None]:
    """hypothesis-jsonschema builds the strategy of an object member's subschema anew at every
    draw (canonicalising the whole subtree each time), which made these tests take minutes.
    The same subschemas always give the same strategy (the alphabet and formats are the
    defaults in every call here), so build each one once."""
    original = _from_schema.merged_as_strategies
    built: dict[str, Any] = {}

    def merged_as_strategies(schemas: list[Any], **kwargs: Any) -> Any:
        key = json.dumps(schemas, sort_keys=True)
        if key not in built:
            built[key] = original(schemas, **kwargs)
        return built[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_from_schema, "merged_as_strategies", merged_as_strategies)
        yield


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, sub in items:
        yield (*prefix, key)
        if isinstance(sub, dict | list) and sub:
            yield from _paths(sub, (*prefix, key))


def _at(body: dict[str, Any], path: tuple[Any, ...]) -> Any:
    node: Any = body
    for key in path:
        node = node[key]
    return node


@st.composite
def confused(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid body, then up to three hostile edits of it: an unknown member added (its name
    perhaps with control characters), a member renamed with control characters, a value
    replaced by one of another JSON kind, a member or item deleted."""
    body = copy.deepcopy(draw(valid))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["retype", "delete", "extra", "control_key"]))
        paths = list(_paths(body))
        if action in ("extra", "control_key") or not paths:
            containers = [body] + [v for p in paths if isinstance(v := _at(body, p), dict)]
            target = draw(st.sampled_from(containers))
            key = draw(st.text(max_size=6))
            if action == "control_key":
                key += draw(st.sampled_from(CONTROL))
            if action == "control_key" and target and draw(st.booleans()):
                old = draw(st.sampled_from(sorted(target)))
                target[old + key] = target.pop(old)
            else:
                target[key] = draw(json_values)
            continue
        path = draw(st.sampled_from(paths))
        parent = _at(body, path[:-1])
        if action == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values.filter(_other_kind(_kind(parent[path[-1]]))))
    return body


# -- what every response must be -----------------------------------------------------------------


def _names(model: type[BaseModel]) -> set[str]:
    """The top-level field names a client may use for `model` (both spellings for Gemini)."""
    names = set()
    for name, info in model.model_fields.items():
        names.add(info.alias or name)
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
    return names


_FIELD = re.compile(r"'?([A-Za-z_][A-Za-z0-9_]*)(?:\[\d+\]|\.[A-Za-z_][A-Za-z0-9_]*)*'?[ :]")


def check_headers(response: httpx.Response) -> None:
    """Every header is printable ASCII; no header sets a cookie; dropped fields are bounded."""
    for name, value in response.headers.raw:
        assert all(0x20 <= b <= 0x7E for b in name + value), (name, value)
    assert "set-cookie" not in response.headers
    assert len(response.headers.get("x-tidegate-dropped-fields", "")) <= 1024


def check_error(response: httpx.Response, message: str, model: type[BaseModel]) -> None:
    """A 400 whose message starts with a field path of the format's request."""
    assert response.status_code == 400, response.text
    match = _FIELD.match(message)
    assert match is not None and match.group(1) in _names(model), message


def check(response: httpx.Response) -> None:
    """Nothing but 200 or 400 (with its body readable), headers valid."""
    assert response.status_code in (200, 400), (response.status_code, response.text)
    check_headers(response)
    assert "internal_error" not in response.text, response.text


def post_json(url: str, body: dict[str, Any]) -> httpx.Response:
    """POST `body` (control characters and big integers included) as JSON."""
    content = json.dumps(body).encode()
    headers = {**AUTH, "Content-Type": "application/json"}
    return httpx.post(url, content=content, headers=headers, timeout=30)


def data_events(text: str, sep: str = "\n\n") -> list[Any]:
    """The JSON of every `data:` event of an SSE text (`[DONE]` kept as a string)."""
    out: list[Any] = []
    for block in text.split(sep):
        for line in block.splitlines():
            if line.startswith("data: "):
                payload = line[6:]
                out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


# -- one test per endpoint -----------------------------------------------------------------------


@HOSTILE
@given(body=confused(bodies(ChatCompletionRequest)), model=st.sampled_from(MODELS))
@example(  # once a 500: a tool call whose function is a string, translated
    body={"model": "", "messages": [{"role": "assistant", "tool_calls": [{"function": "f"}]}]},
    model="anthropic-ok",
)
@example(body={"model": "", "messages": HI, INJECTED: 1}, model="gemini-ok")
def test_openai_chat(gateway: GatewayProcess, body: dict[str, Any], model: str) -> None:
    if isinstance(body.get("model"), str):
        body = {**body, "model": model}
    response = post_json(f"{gateway.url}/v1/chat/completions", body)
    check(response)
    if response.status_code == 400:
        check_error(response, response.json()["error"]["message"], ChatCompletionRequest)
    elif body.get("stream") is True:
        events = data_events(response.text)
        assert events[-1] == "[DONE]", response.text
        assert all(isinstance(e, dict) and "error" not in e for e in events[:-1]), response.text
    else:
        assert response.json()["object"] == "chat.completion"


@HOSTILE
@given(body=confused(bodies(MessagesRequest)), model=st.sampled_from(MODELS))
@example(  # once a 500: `thinking` not an object, translated
    body={"model": "", "max_tokens": 9, "messages": HI, "thinking": "on"}, model="openai-ok"
)
def test_anthropic_messages(gateway: GatewayProcess, body: dict[str, Any], model: str) -> None:
    if isinstance(body.get("model"), str):
        body = {**body, "model": model}
    response = post_json(f"{gateway.url}/v1/messages", body)
    check(response)
    if response.status_code == 400:
        check_error(response, response.json()["error"]["message"], MessagesRequest)
    elif body.get("stream") is True:
        events = parse_sse(response.text)
        assert [e["event"] for e in events][-1] == "message_stop", response.text
        assert all(e["event"] != "error" for e in events), response.text
    else:
        assert response.json()["type"] == "message"


@HOSTILE
@given(
    body=confused(bodies(GenerateContentRequest)),
    model=st.sampled_from(MODELS),
    method=st.sampled_from(["generateContent", "streamGenerateContent?alt=sse"]),
)
@example(body={"contents": ["hi"]}, model="openai-ok", method="generateContent")  # once a 500
def test_gemini(gateway: GatewayProcess, body: dict[str, Any], model: str, method: str) -> None:
    response = post_json(f"{gateway.url}/v1beta/models/{model}:{method}", body)
    check(response)
    if response.status_code == 400:
        check_error(response, response.json()["error"]["message"], GenerateContentRequest)
    elif method.startswith("stream"):
        assert response.text.endswith("\r\n\r\n"), response.text
        events = data_events(response.text, "\r\n\r\n")
        assert events and all("candidates" in e for e in events), response.text
        assert events[-1]["candidates"][0]["finishReason"], response.text
    else:
        assert response.json()["candidates"][0]["finishReason"]


@HOSTILE
@given(body=confused(bodies(ResponsesRequest)), model=st.sampled_from(MODELS))
def test_openai_responses(gateway: GatewayProcess, body: dict[str, Any], model: str) -> None:
    if isinstance(body.get("model"), str):
        body = {**body, "model": model}
    response = post_json(f"{gateway.url}/v1/responses", body)
    check(response)
    if response.status_code == 400:
        check_error(response, response.json()["error"]["message"], ResponsesRequest)
    elif body.get("stream") is True:
        names = [e["event"] for e in parse_sse(response.text)]
        assert names[-1] in ("response.completed", "response.incomplete"), response.text
        assert "error" not in names and "response.failed" not in names, response.text
    else:
        assert response.json()["status"] in ("completed", "incomplete"), response.text


def _check_stream_ask(response: httpx.Response) -> None:
    check(response)
    if response.status_code == 400:
        check_error(response, response.json()["error"], StreamAskRequest)
        return
    names = [e.get("event", "message") for e in parse_sse(response.text)]
    assert names.count("final_end") == 1 and names[-1] == "final_end", response.text
    assert "error" not in names, response.text


@HOSTILE
@given(body=confused(bodies(StreamAskRequest)), model=st.sampled_from(MODELS))
def test_stream_ask_json(gateway: GatewayProcess, body: dict[str, Any], model: str) -> None:
    if isinstance(body.get("model"), str):
        body = {**body, "model": model}
    _check_stream_ask(post_json(f"{gateway.url}/stream-ask", body))


@HOSTILE
@given(
    fields=bodies(StreamAskRequest),
    extra=st.dictionaries(
        st.text(max_size=6).map(lambda k: k + "\r\n"), st.text(max_size=8), max_size=3
    ),
    model=st.sampled_from(MODELS),
    multipart=st.booleans(),
    drop_question=st.booleans(),
)
def test_stream_ask_form(
    gateway: GatewayProcess,
    fields: dict[str, Any],
    extra: dict[str, str],
    model: str,
    multipart: bool,
    drop_question: bool,
) -> None:
    form = {k: str(v) for k, v in {**fields, **extra}.items() if v is not None}
    form["model"] = model
    if drop_question:
        form.pop("question", None)
    url = f"{gateway.url}/stream-ask"
    if multipart:
        files = {k: (None, v) for k, v in form.items()}
        response = httpx.post(url, files=files, headers=AUTH, timeout=30)
    else:
        response = httpx.post(url, data=form, headers=AUTH, timeout=30)
    _check_stream_ask(response)


# -- a field name made to split a header ---------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "anthropic-ok", "messages": HI}),
        ("/v1/messages", {"model": "openai-ok", "max_tokens": 16, "messages": HI}),
    ],
)
def test_field_name_with_crlf_cannot_split_a_header(
    gateway: GatewayProcess, path: str, body: dict[str, Any], stream: bool
) -> None:
    """An unknown field named `a\\r\\nSet-Cookie: pwn=1`, translated for an upstream of another
    format, is named as dropped in a header that stays one line, and the answer arrives."""
    response = post_json(f"{gateway.url}{path}", {**body, INJECTED: 1, "stream": stream})
    assert response.status_code == 200, response.text
    check_headers(response)
    assert response.headers["x-tidegate-dropped-fields"] == r"a\x0d\x0aSet-Cookie: pwn=1"
    record = gateway.record_for(response.headers["x-request-id"])
    assert INJECTED in record["dropped"]  # the log line keeps the name as it was


def test_many_dropped_fields_are_cut_to_one_kib(gateway: GatewayProcess) -> None:
    body = {"model": "anthropic-ok", "messages": HI, **{f"field_{i:04}": 1 for i in range(400)}}
    response = post_json(f"{gateway.url}/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    dropped = response.headers["x-tidegate-dropped-fields"]
    assert len(dropped) <= 1024 and dropped.endswith("...")
    assert dropped.startswith("field_0000, field_0001, ")


# -- multipart bodies that used to stall or crash the gateway ------------------------------------


@pytest.fixture(scope="module")
def big_body_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with the demo model only, no client keys and the default 10 MiB body limit."""
    config = {"models": [{"name": "demo", "provider": "demo", "pace": 0.001}]}
    process = GatewayProcess(config, Path(tmp_path_factory.mktemp("big-body")))
    yield process
    process.stop()


def _form_post(gw: GatewayProcess, boundary: str, body: bytes) -> tuple[httpx.Response, float]:
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    start = time.perf_counter()
    response = httpx.post(f"{gw.url}/stream-ask", content=body, headers=headers, timeout=60)
    return response, time.perf_counter() - start


def test_five_megabytes_of_tiny_parts_are_refused_at_once(
    big_body_gateway: GatewayProcess,
) -> None:
    """The part limit stops the parse long before the end of the body."""
    part = b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\ny\r\n'
    body = part * (5_000_000 // len(part)) + b"--b--\r\n"
    response, elapsed = _form_post(big_body_gateway, "b", body)
    assert response.status_code == 400, response.text
    assert "64 parts" in response.json()["error"]
    assert elapsed < 1.0


def test_five_megabytes_of_tiny_form_fields_are_refused_at_once(
    big_body_gateway: GatewayProcess,
) -> None:
    body = b"question=q" + b"&x=" * 1_700_000
    start = time.perf_counter()
    response = httpx.post(
        f"{big_body_gateway.url}/stream-ask",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert "64 fields" in response.json()["error"]
    assert time.perf_counter() - start < 1.0


def test_deeply_nested_multipart_is_a_400(big_body_gateway: GatewayProcess) -> None:
    """2,000 multipart parts each nested in the one before are refused, not recursed into."""
    inner = b'--b2000\r\nContent-Disposition: form-data; name="question"\r\n\r\nhi\r\n--b2000--'
    for depth in range(1999, -1, -1):
        inner = (
            f'--b{depth}\r\nContent-Disposition: form-data; name="question"\r\n'
            f"Content-Type: multipart/mixed; boundary=b{depth + 1}\r\n\r\n".encode()
            + inner
            + f"\r\n--b{depth}--".encode()
        )
    response, _ = _form_post(big_body_gateway, "b0", inner + b"\r\n")
    assert response.status_code == 400, response.text
    assert "nested multipart" in response.json()["error"]


def test_multipart_question_with_file_and_charset_still_works(
    big_body_gateway: GatewayProcess,
) -> None:
    """Text fields are read in their charset, the last of a repeated name wins, files are
    skipped."""
    body = (
        b"--xyz\r\n"
        b'Content-Disposition: form-data; name="question"\r\n\r\nfirst\r\n'
        b"--xyz\r\n"
        b'Content-Disposition: form-data; name="upload"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nfile body\r\n"
        b"--xyz\r\n"
        b'Content-Disposition: form-data; name="question"\r\n'
        b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\ncaf\xe9?\r\n"
        b"--xyz--\r\n"
    )
    response, _ = _form_post(big_body_gateway, "xyz", body)
    assert response.status_code == 200, response.text
    names = [e.get("event", "message") for e in parse_sse(response.text)]
    assert names[-1] == "final_end"
    record = big_body_gateway.record_for(response.headers["x-request-id"])
    assert record["status"] == 200 and record["model"] == "demo"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"--b\r\nContent-Disposition: form-data; name=question\r\n\r\nhi\r\n", "closing boundary"),
        (b"garbage", "could not be parsed"),
        (
            b'--b\r\nContent-Disposition: form-data; name="question"\r\n'
            b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nhi\r\n--b--\r\n",
            "charset",
        ),
    ],
)
def test_broken_multipart_is_a_400(
    big_body_gateway: GatewayProcess, body: bytes, needle: str
) -> None:
    response, _ = _form_post(big_body_gateway, "b", body)
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]
