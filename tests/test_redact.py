"""The redactor: no configured secret, nor the start of one at a cut, ever leaves the process."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.context import RequestContext
from tidegate.redact import PREFIX_MIN, REDACTED, Redactor, SecretBook

KEY = "sk-upstream-SECRET-123"
OTHER = "tg-client-key-0d6f2b9e"
EVENT = f'data: {{"error":{{"message":"key {KEY} rejected","type":"x"}}}}\n\n'.encode()


def windows(secret: str, size: int = PREFIX_MIN) -> list[bytes]:
    return [secret[i : i + size].encode() for i in range(len(secret) - size + 1)]


def assert_clean(data: bytes) -> None:
    for w in windows(KEY) + windows(OTHER):
        assert w not in data, (w, data)


def test_whole_texts() -> None:
    r = Redactor([KEY, OTHER, "abc"])  # too short to be treated as a secret
    assert r(f"a {KEY} b {OTHER} c abc") == f"a {REDACTED} b {REDACTED} c abc"
    assert r.bytes(f"x{KEY}x".encode()) == f"x{REDACTED}x".encode()


def test_a_text_cut_inside_a_key_loses_the_partial_key() -> None:
    """A message that was shortened (by the upstream or a read limit) may end in half a key."""
    r = Redactor([KEY])
    for cut in range(PREFIX_MIN, len(KEY)):
        text = "Bearer " + KEY[:cut]
        assert r(text) == "Bearer " + REDACTED
        assert r.bytes(text.encode()) == ("Bearer " + REDACTED).encode()
    assert r("ends in sk-") == "ends in sk-"  # too short to be told from ordinary text


def test_excerpt_redacts_before_it_cuts() -> None:
    r = Redactor([KEY])
    text = "x" * 290 + "Bearer " + KEY + " refused"
    for limit in range(280, 320):
        short = r.excerpt(text, limit)
        assert_clean(short.encode())
        assert len(short) <= limit + 1


def test_every_split_of_a_stream_is_redacted() -> None:
    """Invariant: however the stream is cut into two reads, the client never sees the key."""
    r = Redactor([KEY, OTHER])
    for cut in range(len(EVENT) + 1):
        s = r.stream()
        out = s.feed(EVENT[:cut]) + s.feed(EVENT[cut:]) + s.flush()
        assert out == EVENT.replace(KEY.encode(), REDACTED.encode()), cut


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(EVENT) * 3), max_size=10))
def test_any_splits_of_a_stream_are_redacted(cuts: list[int]) -> None:
    data = EVENT + b"data: plain\n\n" + EVENT
    r = Redactor([KEY, OTHER])
    s = r.stream()
    out = b""
    last = 0
    for cut in sorted({*cuts, len(data)}):
        out += s.feed(data[last:cut])
        last = cut
    out += s.flush()
    assert out == data.replace(KEY.encode(), REDACTED.encode())


def test_a_stream_that_ends_inside_a_key_does_not_leak_its_start() -> None:
    r = Redactor([KEY])
    s = r.stream()
    out = s.feed(b"data: the key is " + KEY[:12].encode()) + s.flush()
    assert out == b"data: the key is " + REDACTED.encode()


def test_reads_that_end_in_a_blank_line_are_never_held() -> None:
    """The common case costs no latency: an SSE read ends in a byte no key contains."""
    r = Redactor([KEY])
    s = r.stream()
    chunk = b'data: {"choices":[{"delta":{"content":"sk-"}}]}\n\n'
    assert s.feed(chunk) == chunk


def test_no_secrets_is_a_no_op() -> None:
    r = Redactor([])
    assert not r
    assert r.stream().feed(b"x") == b"x"
    assert r("x") == "x"


def test_a_request_redacts_what_the_book_learns_while_it_runs() -> None:
    """A request that began before any secret was known (no configured secret, nothing in
    the book yet: a falsy redactor) still redacts a token its upstream's auth step fetches
    while it runs — its context keeps the process's redactor, not an empty one."""
    book = SecretBook()
    redactor = Redactor((), book)
    assert not redactor
    ctx = RequestContext("req-1", "/v1/chat/completions", None, redactor)  # type: ignore[arg-type]
    book.add("fetched-token-0123456789")
    message = "upstream said: bad token fetched-token-0123456789"
    assert ctx.redact(message) == f"upstream said: bad token {REDACTED}"
    assert REDACTED.encode() in ctx.redact_bytes(message.encode())
