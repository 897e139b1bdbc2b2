"""The pieces of described providers as pure functions: templates, paths and conditions, the
answer parser in each framing, convertors, `image_file`'s containment, runtime secrets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from tidegate.config import ConfigProblems, parse_config
from tidegate.descriptors import ChatStep
from tidegate.errors import UpstreamStatusError
from tidegate.events import Event, Finish, StreamError, TextDelta, UsageUpdate
from tidegate.formats.described import AnswerSpec, Condition, DescribedStreamParser
from tidegate.formats.described import Path as DPath
from tidegate.providers.convertors import (
    ConvertError,
    SpecError,
    allowed_roots,
    apply,
    flatten,
    read_allowed_file,
    resolve,
)
from tidegate.providers.templates import Scope, TemplateError, compile_template
from tidegate.redact import Redactor, SecretBook
from tidegate.settings import FilesConfig

SEED_FILE = Path(__file__).parent / "fixtures" / "seed_001_descriptor.json"
SEED = orjson.loads(SEED_FILE.read_bytes())
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


# -- templates ---------------------------------------------------------------------------------


def scope(**values: Any) -> Scope:
    return Scope(values, {"HOME_URL": "http://h"}, {"tenant": "t1"}, {"seed": 7, "a": {"b": [1]}})


MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${messages}", MESSAGES),  # exactly one reference: the value as it is
        ("${stream}", True),
        ("${max_tokens}", 64),
        ("${temperature}", 0.5),
        ("${missing_is_none}", None),
        ("n=${max_tokens} s=${stream} t=${nothing}", "n=64 s=true t="),  # inside: text
        ("m=${messages}", 'm=[{"role":"user","content":"hi"}]'),
        ("$${model} costs $5", "${model} costs $5"),  # $${ is a literal ${
        ("${env.HOME_URL}/x", "http://h/x"),
        ("${env.UNSET:-fallback}", "fallback"),
        ("${request.seed}", 7),
        ("${request.a.b.0}", 1),
        ("${request.absent}", None),
        ("${vars.tenant}", "t1"),
        (["${stream}", {"k": "${max_tokens}", "gone": "${nothing}"}], [True, {"k": 64}]),
        (12, 12),
    ],
)
def test_typed_substitution(template: Any, expected: Any) -> None:
    values = {
        "messages": MESSAGES,
        "stream": True,
        "max_tokens": 64,
        "temperature": 0.5,
        "nothing": None,
        "missing_is_none": None,
    }
    assert compile_template(template).render(scope(**values)) == expected


@pytest.mark.parametrize(
    "template", ["${model", "a ${b", "${1abc}", "${env.X.Y}", "${model:-d}", "${a b}"]
)
def test_malformed_templates_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(template)


# -- paths and conditions ------------------------------------------------------------------------


CHUNK = {"choices": [{"delta": {"role": "assistant", "content": "x"}}], "n": None}


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("choices.0.delta.content", "x"),
        ("choices.-1.delta.role", "assistant"),
        ("choices.1.delta", None),
        ("choices.delta", None),
        ("n", None),
        ("nope.deeper", None),
    ],
)
def test_paths(path: str, found: Any) -> None:
    assert DPath(path).get(CHUNK) == found


@pytest.mark.parametrize(
    ("path", "op", "value", "holds"),
    [
        ("choices.0.delta.role", "==", "assistant", True),
        ("choices.0.delta.role", "!=", "system", True),
        ("choices.0.delta.role", "in", ["user", "assistant"], True),
        ("choices.0.delta.role", "not_in", ["user", "assistant"], False),
        ("choices.0.delta.role", "exists", None, True),
        ("n", "exists", True, True),  # present, though null
        ("absent", "!=", "system", False),  # a missing path makes no condition hold ...
        ("absent", "not_in", ["a"], False),
        ("absent", "exists", False, True),  # ... but `exists: false`
    ],
)
def test_conditions(path: str, op: str, value: Any, holds: bool) -> None:
    assert Condition(DPath(path), op, value).holds(CHUNK) is holds


# -- the answer parser ---------------------------------------------------------------------------


def parser(chat: dict[str, Any]) -> DescribedStreamParser:
    step = ChatStep.model_validate({"url": "http://x", **chat})
    match = __import__("re").compile(step.chunk_match) if step.chunk_match else None
    return DescribedStreamParser(AnswerSpec(step, "test", match), max_event_bytes=4096)


def run(p: DescribedStreamParser, *reads: bytes) -> list[Event]:
    events: list[Event] = []
    for chunk in reads:
        events += p.feed(chunk)
    return events + p.finish()


def text(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def sse_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def test_the_seed_mapping_and_its_chunk_filter() -> None:
    """The seed's filter (role != system clears text) clears a chunk that declares another
    role; chunks without a role keep their text."""
    p = parser(SEED["chat"])
    stream = (
        sse_chunk({"role": "assistant", "content": "PREAMBLE"})
        + sse_chunk({"content": "Hel"})
        + sse_chunk({"role": "system", "content": "lo"})
        + sse_chunk({}, "stop")
        + b"data: [DONE]\n\n"
    )
    half = len(stream) // 2
    events = run(p, stream[:half], stream[half:])  # a read boundary inside an event
    assert text(events) == "Hello"
    assert [e.reason for e in events if isinstance(e, Finish)] == ["stop"]
    assert p.done and p.complete and p.started


def test_a_stream_without_its_end_is_incomplete() -> None:
    p = parser(SEED["chat"])
    run(p, sse_chunk({"content": "Hel"}))
    assert not p.complete  # no finish, no [DONE]: truncated


def test_unreadable_chunks_are_skipped_and_counted() -> None:
    p = parser(SEED["chat"])
    events = run(p, b"data: {not json\n\n" + sse_chunk({"content": "ok"}) + b"data: [DONE]\n\n")
    assert text(events) == "ok" and p.skipped == 1


def test_an_error_chunk_is_a_stream_error() -> None:
    p = parser(SEED["chat"])
    events = run(p, b'data: {"error": {"message": "overloaded", "type": "overloaded_error"}}\n\n')
    errors = [e for e in events if isinstance(e, StreamError)]
    assert len(errors) == 1 and "overloaded" in str(errors[0].error)
    assert isinstance(errors[0].error, UpstreamStatusError)
    assert errors[0].error.upstream_status == 529


def test_ndjson_framing_with_usage() -> None:
    p = parser(
        {
            "framing": "ndjson",
            "resp": {"text": "response", "done": "done"},
            "usage": {"input_tokens": "in", "output_tokens": "out"},
        }
    )
    events = run(p, b'{"response": "a"}\n{"respo', b'nse": "b"}\n{"done": true, "in": 3, "out": 2}')
    assert text(events) == "ab"
    assert [e.reason for e in events if isinstance(e, Finish)] == ["stop"]
    usage = [e.usage for e in events if isinstance(e, UsageUpdate)][-1]
    assert (usage.input_tokens, usage.output_tokens) == (3, 2)


def test_lines_framing_ignores_lines_its_regex_does_not_match() -> None:
    p = parser(
        {
            "framing": "lines",
            "chunk_match": "^>> (.*)$",
            "end": "STOP",
            "resp": {"text": "t"},
        }
    )
    events = run(p, b'# comment\r\n>> {"t": "a"}\r\nnoise\n>> {"t": "b"}\n>> STOP\n>> {"t": "c"}\n')
    assert text(events) == "ab" and p.done and p.skipped == 0


def test_json_framing_reads_the_body_whole() -> None:
    p = parser({"framing": "json", "resp": {"text": "out.text", "finish_reason": "why"}})
    assert p.feed(b'{"out": {"te') == []
    events = p.feed(b'xt": "whole"}, "why": "length"}') + p.finish()
    assert text(events) == "whole"
    assert [e.reason for e in events if isinstance(e, Finish)] == ["length"]


def test_error_rules_on_a_field() -> None:
    p = parser(
        {
            "framing": "json",
            "resp": {"text": "data"},
            "errors": [
                {"name": "code", "op": "!=", "value": 0, "message": "msg", "as_status": 400}
            ],
        }
    )
    events = run(p, b'{"code": 7, "msg": "bad prompt"}')
    error = next(e.error for e in events if isinstance(e, StreamError))
    assert isinstance(error, UpstreamStatusError)
    assert error.upstream_status == 400 and "bad prompt" in error.message


# -- convertors ----------------------------------------------------------------------------------


def convert(spec: str, value: Any, **kwargs: Any) -> Any:
    convertor = resolve(
        spec,
        kwargs.get("plugins", {}),
        kwargs.get("files", FilesConfig()),
        kwargs.get("env", {}),
    )
    return asyncio.run(apply(convertor, value, kwargs.get("variables", {"model": "m1"})))


def test_builtin_convertors() -> None:
    assert convert("json", {"a": [1, True]}) == '{"a":[1,true]}'
    assert convert("prompt", [{"role": "user", "content": "only"}]) == "only"
    assert (
        convert("prompt", [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
        == "system: s\n\nuser: u"
    )
    assert convert("base64", "héllo") == base64.b64encode("héllo".encode()).decode()
    assert convert("timestamp", "2024-01-02T03:04:05Z") == 1704164645
    assert convert("timestamp:ms", "2024-01-02T03:04:05+00:00") == 1704164645000
    assert convert("timestamp:iso", 0) == "1970-01-01T00:00:00Z"
    assert abs(convert("timestamp", "") - __import__("time").time()) < 5
    key = "k3y-from-env"
    expected = hmac.new(key.encode(), b"body", hashlib.sha256).hexdigest()
    assert convert("hmac_sha256:SIGN", "body", env={"SIGN": key}) == expected


def test_user_convertors() -> None:
    plugins = {"shout": "tests.convertor_plugin:shout", "sign": "tests.convertor_plugin:sign"}
    assert convert("shout", "hi", plugins=plugins) == "HI"
    assert convert("sign", "v", plugins=plugins) == "v|signed-for-m1"


@pytest.mark.parametrize(
    ("spec", "plugins", "env", "problem"),
    [
        ("nope", {}, {}, "unknown convertor 'nope'"),
        ("json:x", {}, {}, "takes no argument"),
        ("timestamp:days", {}, {}, "not a unit"),
        ("hmac_sha256", {}, {}, "needs the environment variable"),
        ("hmac_sha256:GONE", {}, {}, "GONE"),
        ("image_file", {}, {}, "files.allowed_dirs"),
        ("p", {"p": "tests.convertor_plugin:missing"}, {}, "cannot load"),
        ("p", {"p": "no_such_module_here:f"}, {}, "cannot load"),
        ("p", {"p": "tests.convertor_plugin:NOT_CALLABLE"}, {}, "not callable"),
        ("p", {"p": "tests.convertor_plugin:three"}, {}, "takes 3 arguments"),
    ],
)
def test_unusable_convertors_are_refused(
    spec: str, plugins: dict[str, str], env: dict[str, str], problem: str
) -> None:
    with pytest.raises(SpecError) as caught:
        resolve(spec, plugins, FilesConfig(), env)
    assert problem in caught.value.problem


def test_flatten_keeps_strings() -> None:
    assert flatten("already text") == "already text"


# -- image_file containment ----------------------------------------------------------------------


@pytest.fixture
def images(tmp_path: Path) -> Path:
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "a.png").write_bytes(PNG)
    (allowed / "sub" / "b.png").write_bytes(PNG)
    (allowed / "notes.txt").write_bytes(b"not an image")
    (allowed / "big.png").write_bytes(PNG + b"\x00" * 200)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(PNG)
    (allowed / "link.png").symlink_to(outside / "secret.png")
    (allowed / "inner-link.png").symlink_to(allowed / "a.png")  # inside, still a symlink
    (allowed / "linkdir").symlink_to(outside)
    return allowed


def test_image_file_reads_allowed_files(images: Path) -> None:
    roots = allowed_roots([str(images)])
    assert read_allowed_file("a.png", roots, 100) == (PNG, "image/png")
    assert read_allowed_file("sub/b.png", roots, 100)[0] == PNG
    assert read_allowed_file(str(images / "sub" / "b.png"), roots, 100)[0] == PNG


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("../outside/secret.png", "'..' is not allowed"),
        ("sub/../../outside/secret.png", "'..' is not allowed"),
        ("link.png", "symlink"),
        ("inner-link.png", "symlink"),
        ("linkdir/secret.png", "symlink"),
        ("/etc/passwd", "outside files.allowed_dirs"),
        ("missing.png", "does not exist"),
        ("notes.txt", "not a PNG"),
        ("big.png", "larger than"),
        ("sub", "not a regular file"),
        ("a.png\0x", "NUL"),
    ],
)
def test_image_file_refuses(images: Path, path: str, problem: str) -> None:
    roots = allowed_roots([str(images)])
    with pytest.raises(ConvertError) as caught:
        read_allowed_file(path, roots, 100)
    assert problem in str(caught.value)
    assert str(images.parent / "outside") not in str(caught.value)


def test_image_file_absolute_path_through_a_symlinked_root(tmp_path: Path, images: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(images)
    roots = allowed_roots([str(alias)])  # the directory as configured is itself a symlink
    assert read_allowed_file(str(alias / "a.png"), roots, 100)[0] == PNG
    assert read_allowed_file(str(images / "a.png"), roots, 100)[0] == PNG
    assert os.path.islink(alias)


# -- secrets learned at run time -----------------------------------------------------------------


def test_redactors_learn_runtime_secrets() -> None:
    book = SecretBook(limit=2)
    redact = Redactor(["configured-key-1"], book)
    assert redact("token tok-abcdef123") == "token tok-abcdef123"
    book.add("tok-abcdef123", "short")  # too short to be kept
    assert redact("token tok-abcdef123 short") == "token [REDACTED] short"
    assert redact.bytes(b"x tok-abcdef123") == b"x [REDACTED]"
    assert redact.excerpt("tok-abcdef123 and more", 12) == "[REDACTED] a…"
    book.add("second-secret-9", "third-secret-99")  # bounded: the oldest is forgotten
    assert redact("tok-abcdef123 second-secret-9") == "tok-abcdef123 [REDACTED]"
    assert redact("configured-key-1") == "[REDACTED]"


def test_streams_are_checked_for_configured_secrets() -> None:
    """Per chunk, only the configured secrets (their cost does not grow with users); runtime
    ones are applied to errors, whole answers and logs."""
    book = SecretBook()
    book.add("tok-runtime-123456")
    stream = Redactor(["configured-key-1"], book).stream()
    assert stream.feed(b"a configured-") == b"a "  # the possible start of a secret waits
    assert stream.feed(b"key-1 b") == b"[REDACTED] b"
    assert stream.feed(b"tok-runtime-123456\n") == b"tok-runtime-123456\n"


# -- loading -------------------------------------------------------------------------------------


def test_the_seed_descriptor_loads_unchanged_inline_and_from_a_file(tmp_path: Path) -> None:
    """`${api_key}` and `${access_token}` stay templates: the loader does not read them from
    the environment (where they are not set)."""
    inline = parse_config(
        {"providers": [SEED], "models": [{"name": "m", "provider": "openai_gpt4"}]}
    )
    (tmp_path / "seed.json").write_bytes(SEED_FILE.read_bytes())
    filed = parse_config(
        {
            "providers": [{"file": "seed.json"}],
            "models": [{"name": "m", "provider": "openai_gpt4"}],
        },
        base_dir=tmp_path,
    )
    assert inline.providers == filed.providers
    auth = inline.providers[0].auth
    assert auth is not None and isinstance(auth.headers, tuple)
    assert auth.headers[0].value == "Bearer ${api_key}"


def test_every_problem_is_reported_at_once() -> None:
    broken = {
        **SEED,
        "chat": {
            **SEED["chat"],
            "chunk_match": "data: ((",
            "resp": [{"name": "txt", "value": "a..b"}],
        },
    }
    with pytest.raises(ConfigProblems) as caught:
        parse_config({"providers": [broken], "models": [{"name": "m", "provider": "openai_gpt4"}]})
    fields = [p[0] for p in caught.value.problems]
    assert "providers[0] (openai_gpt4).chat.chunk_match" in fields
    assert "providers[0] (openai_gpt4).chat.resp[0].name" in fields
    assert "providers[0] (openai_gpt4).chat.resp[0].value" in fields
    assert str(caught.value).startswith(f"{len(fields)} problems:")
