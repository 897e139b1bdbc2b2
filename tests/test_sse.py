"""The SSE and NDJSON decoders against the WHATWG rules, under every way of cutting the bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.errors import UpstreamProtocolError
from tidegate.sse import NDJSONDecoder, SSEDecoder, SSEEvent, encode_comment, encode_event


def decode_all(body: bytes, cuts: list[int] | None = None) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    points = sorted(set(cuts or []))
    start = 0
    for point in [*points, len(body)]:
        events += decoder.decode(body[start:point])
        start = point
    return events + decoder.flush()


def data_of(events: list[SSEEvent]) -> list[str]:
    return [e.data for e in events]


# Cases written from the WHATWG parsing rules (HTML §9.2.6), in the spirit of the
# web-platform-tests eventsource/format-* suite.
RULE_CASES = [
    (
        "one BOM is stripped, a second is part of a field name",
        "\ufeffdata:1\n\n\ufeffdata:2\n\ndata:3\n\n",
        ["1", "3"],
    ),
    ("two leading BOMs: the first event is lost", "\ufeff\ufeffdata:1\n\ndata:2\n\n", ["2"]),
    (
        "comments, even with NUL or a data look-alike, are ignored",
        "data:1\r:\0\n:\r\ndata:2\n:data:fail\r:" + "x" * 2000 + "\ndata:3\n\n",
        ["1\n2\n3"],
    ),
    ("an event without its blank line is discarded at EOF", "data:a\n\nid:x\ndata:b\n", ["a"]),
    (
        "data with no value, and bare data lines",
        "data:\n\ndata\ndata\n\ndata:test\n\n",
        ["", "\n", "test"],
    ),
    (
        "field names are case-sensitive; one leading space is stripped",
        "data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n"
        " data:32\ndata:4\n\n",
        ["\0\n 2\n1\n3\n\n4"],
    ),
    (
        "unknown fields and junk lines are ignored",
        "data:test\n data\ndata\nfoobar:xxx\njustsometext\n:comment\ndata:test\n\n",
        ["test\n\ntest"],
    ),
    (
        "only a space is stripped, not a tab",
        "data:\ttest\rdata: \ndata:test\n\n",
        ["\ttest\n\ntest"],
    ),
    ("CR, LF and CRLF mix", "data:test\r\ndata\ndata:test\r\n\r\n", ["test\n\ntest"]),
    ("NUL is allowed in data", "data:\0\n\n", ["\0"]),
    ("UTF-8 whatever the charset", "data:ok…\n\n", ["ok…"]),
]


@pytest.mark.parametrize(("name", "body", "expected"), RULE_CASES, ids=[c[0] for c in RULE_CASES])
def test_rules(name: str, body: str, expected: list[str]) -> None:
    assert data_of(decode_all(body.encode())) == expected


def test_event_type_and_reset() -> None:
    """A named event dispatches with its name, and the name does not leak into the next one."""
    events = decode_all(b"event:test\ndata:x\n\ndata:y\n\nevent: \ndata:z\n\n")
    assert [(e.event, e.data) for e in events] == [
        ("test", "x"),
        ("message", "y"),
        ("message", "z"),
    ]


def test_last_event_id_persists_and_resets() -> None:
    """The last event id carries over to id-less events; an empty id resets it; NUL is ignored."""
    events = decode_all(b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: x\0y\ndata: d\n\n")
    assert [e.id for e in events] == ["1", "1", "", ""]


def test_retry_takes_digits_only() -> None:
    events = decode_all(b"retry:03000\nretry:1000x\ndata:x\n\n")
    assert events[0].retry == 3000


def test_crlf_split_across_reads_is_one_line_end() -> None:
    """A CR at the end of one read and an LF at the start of the next must not make a blank line."""
    decoder = SSEDecoder()
    assert decoder.decode(b"data: a\r") == []
    assert decoder.decode(b"\ndata: b\r") == []
    assert data_of(decoder.decode(b"\n\r\n")) == ["a\nb"]


def test_multibyte_character_split_across_reads() -> None:
    body = "data: 你好🌊\n\n".encode()
    for cut in range(1, len(body)):
        assert data_of(decode_all(body, [cut])) == ["你好🌊"], cut


def test_bom_split_across_reads() -> None:
    body = b"\xef\xbb\xbfdata: x\n\n"
    assert data_of(decode_all(body, [1, 2])) == ["x"]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert data_of(decode_all(b"data: a\xffb\n\n")) == ["a\ufffdb"]


def test_line_separator_inside_json_is_not_a_line_end() -> None:
    """U+2028 is legal inside JSON strings; only CR and LF end lines."""
    assert data_of(decode_all('data: {"t":"a\u2028b"}\n\n'.encode())) == ['{"t":"a\u2028b"}']


def test_keep_stray_collects_non_field_lines() -> None:
    decoder = SSEDecoder(keep_stray=True)
    events = decoder.decode(b'data: {"a":1}\n\n{\n  "error": {\n    "code": 503\n  }\n}\n')
    assert data_of(events) == ['{"a":1}']
    assert decoder.stray_lines == [b"{", b'  "error": {', b'    "code": 503', b"  }", b"}"]


STREAM = (
    '\ufeff: hello\r\nevent: start\r\ndata: {"a": "é"}\r\n\r\n'
    "id: 7\ndata: 1\ndata: 2\n\n"
    "data: 你好\r\rretry: 10\ndata: 🌊 x\n\n"
).encode()


def test_every_two_way_split_gives_the_same_events() -> None:
    whole = decode_all(STREAM)
    assert len(whole) == 4
    for cut in range(len(STREAM) + 1):
        assert decode_all(STREAM, [cut]) == whole, cut


@settings(max_examples=400, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    assert decode_all(STREAM, cuts) == decode_all(STREAM)


text_values = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(text_values, st.sampled_from([None, "update", "done"])), min_size=1, max_size=6
    ),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.data(),
)
def test_encoder_and_decoder_round_trip(
    items: list[tuple[str, str | None]], newline: bytes, data: st.DataObject
) -> None:
    """Whatever the text and event names, encode → any line ending → any split → same events."""
    body = b"".join(
        encode_event(text.encode(), name.encode() if name else None, str(i).encode())
        for i, (text, name) in enumerate(items)
    ).replace(b"\n", newline)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=8))
    events = decode_all(body, cuts)
    assert [(e.data, e.event, e.id) for e in events] == [
        (text, name or "message", str(i)) for i, (text, name) in enumerate(items)
    ]


def test_encoder_splits_multiline_data() -> None:
    assert encode_event(b"a\nb") == b"data: a\ndata: b\n\n"
    assert data_of(decode_all(encode_event(b"a\r\nb\rc"))) == ["a\nb\nc"]
    assert encode_comment(b"ping") == b": ping\n\n"
    assert decode_all(encode_comment(b"ping")) == []


NDJSON = '{"a": "你好"}\r\n\n{"b": 2}\n{"c": 3}'.encode()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(NDJSON)), max_size=8))
def test_ndjson_any_split(cuts: list[int]) -> None:
    decoder = NDJSONDecoder()
    lines: list[bytes] = []
    start = 0
    for point in [*sorted(cuts), len(NDJSON)]:
        lines += decoder.decode(NDJSON[start:point])
        start = point
    lines += decoder.flush()
    assert lines == ['{"a": "你好"}'.encode(), b'{"b": 2}', b'{"c": 3}']


def test_a_line_that_never_ends_is_refused_in_linear_time() -> None:
    """A never-ending line is collected read by read (no quadratic copying), then refused."""
    decoder = SSEDecoder(max_event_bytes=1 << 20)
    decoder.decode(b'data: {"a": 1}\n\n')
    chunk = b"x" * 1000
    with pytest.raises(UpstreamProtocolError, match="longer than"):
        for _ in range(10_000):  # 10 MB, in reads of 1 KB
            decoder.decode(chunk)


def test_an_event_of_many_data_lines_is_bounded() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    with pytest.raises(UpstreamProtocolError, match="larger than"):
        decoder.decode(b"data: 0123456789\n" * 200)


def test_stray_lines_are_bounded() -> None:
    decoder = SSEDecoder(keep_stray=True, max_event_bytes=1000)
    with pytest.raises(UpstreamProtocolError, match="not SSE"):
        decoder.decode(b"junk line\n" * 200)


def test_ndjson_lines_are_bounded() -> None:
    decoder = NDJSONDecoder(max_line_bytes=1000)
    with pytest.raises(UpstreamProtocolError, match="longer than"):
        for _ in range(100):
            decoder.decode(b"y" * 100)
    decoder = NDJSONDecoder(max_line_bytes=1000)
    with pytest.raises(UpstreamProtocolError, match="longer than"):
        decoder.decode(b"z" * 2000 + b"\n")
    decoder = NDJSONDecoder(max_line_bytes=1000)
    assert decoder.decode(b'{"a"') == []
    assert decoder.decode(b": 1}\n{") == [b'{"a": 1}']
    assert decoder.flush() == [b"{"]
