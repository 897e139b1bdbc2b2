"""HTTP/1.1 conformance of the gateway's server side, byte for byte over raw sockets.

Each test sends exact bytes to a real `tidegate serve` (the session `gateway` fixture: a model
`openai-ok` proxied to the fake upstream, a client key, a 256 KiB body limit and the default
header limits) and checks what a client relies on:

- keep-alive: sequential proxied requests, non-streaming and streaming (chunked, ending with
  the zero-length chunk), on one connection;
- pipelining: several requests in one write answered completely and in order; a malformed
  request behind a valid one never has its 400 read as the valid one's answer;
- `Expect: 100-continue`: `100 Continue` before the body is sent, and a request refused
  before its body (401) answered without waiting for it;
- chunked request bodies, over several chunks and several writes, and malformed ones (400);
- request smuggling: `Content-Length` with `Transfer-Encoding`, two `Content-Length`s, and
  obfuscated or unsupported `Transfer-Encoding`s are refused, and a request hidden in a body
  is never answered as a request of its own;
- the header and body limits (431, 413), each closing its connection;
- malformed request lines, unknown methods, missing `Host`: 400 (HTTP/1.0 without `Host`,
  and an HTTP/0.9-style request line, are served and closed), never a hang;
- methods a proxy route does not accept: 405 with a JSON error (and no body for HEAD).

Every read has a deadline (socket timeouts of a few seconds); every test that makes the server
close a connection then checks that a new connection is still served.
"""

from __future__ import annotations

import contextlib
import socket
import time

import orjson
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess
from tests.fake_upstream import EXPECTED_TEXT
from tests.rawhttp import (
    HEALTHZ,
    Response,
    ResponseReader,
    connect,
    parse_responses,
    read_until_closed,
)

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]
#: A non-streaming and a streaming chat request body for the model proxied to the fake upstream.
PLAIN = orjson.dumps({"model": "openai-ok", "messages": MESSAGES})
STREAM = orjson.dumps({"model": "openai-ok", "stream": True, "messages": MESSAGES})
#: A whole request that a request-smuggling attack hides in a body: it must never be answered.
SMUGGLED = b"GET /admin/keys HTTP/1.1\r\nHost: x\r\n\r\n"
#: How long to wait for a closed connection's end, or for a response that must not come.
SETTLE = 3.0


def head(
    method: str = "POST",
    path: str = CHAT,
    *,
    key: str | None = CLIENT_KEY,
    length: int | None = None,
    extra: bytes = b"",
) -> bytes:
    """A request head: `Host`, the client key, `Content-Length: length` if given, `extra`
    header lines (each ending in CRLF), then the blank line."""
    lines = f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode()
    if key is not None:
        lines += f"Authorization: Bearer {key}\r\n".encode()
    if method == "POST":
        lines += b"Content-Type: application/json\r\n"
    if length is not None:
        lines += b"Content-Length: %d\r\n" % length
    return lines + extra + b"\r\n"


def post(body: bytes, *, request_id: str | None = None, extra: bytes = b"") -> bytes:
    """A whole chat request with a `Content-Length` body."""
    if request_id is not None:
        extra += f"X-Request-Id: {request_id}\r\n".encode()
    return head(length=len(body), extra=extra) + body


def chunked(body: bytes, size: int) -> list[bytes]:
    """`body` as chunks of `size` bytes (each framed), then the last chunk."""
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]


def chunked_head(extra: bytes = b"") -> bytes:
    return head(extra=b"Transfer-Encoding: chunked\r\n" + extra)


def read_all(sock: socket.socket, seconds: float = SETTLE) -> tuple[list[Response], bool]:
    """Every whole response the server sends until it closes the connection or `seconds`
    pass: (responses, closed by the server?)."""
    data, closed, _ = read_until_closed(sock, seconds)
    return parse_responses(data), closed


def assert_chat_answer(response: Response) -> None:
    """A whole non-streaming chat completion with the fake upstream's text."""
    assert response.status == 200, response.raw[:300]
    assert response.header("content-type") == "application/json"
    answer = orjson.loads(response.body)
    assert answer["choices"][0]["message"]["content"] == EXPECTED_TEXT


def assert_stream_answer(response: Response) -> None:
    """A whole streamed chat completion: chunked, every event there, ended by `[DONE]` and
    the zero-length chunk."""
    assert response.status == 200, response.raw[:300]
    assert response.header("content-type") == "text/event-stream; charset=utf-8"
    assert response.header("transfer-encoding") == "chunked"
    assert response.header("content-length") is None
    assert response.chunk_sizes is not None and response.chunk_sizes[-1] == 0
    assert response.raw.endswith(b"\r\n0\r\n\r\n")
    events = [
        line.removeprefix(b"data: ")
        for line in response.body.split(b"\n")
        if line.startswith(b"data: ")
    ]
    assert events[-1] == b"[DONE]"
    text = "".join(
        choice["delta"].get("content") or ""
        for event in events[:-1]
        for choice in orjson.loads(event)["choices"]
    )
    assert text == EXPECTED_TEXT


def assert_healthz(response: Response) -> None:
    assert response.status == 200, response.raw[:300]
    assert orjson.loads(response.body) == {"status": "ok"}


def assert_refused(response: Response, status: int) -> dict[str, str]:
    """A refusal: `status`, a JSON error with a message, and `connection: close`."""
    assert response.status == status, response.raw[:300]
    assert response.header("content-type") == "application/json"
    assert (response.header("connection") or "").lower() == "close"
    error: dict[str, str] = orjson.loads(response.body)["error"]
    assert error["message"]
    return error


def assert_still_serving(gateway: GatewayProcess) -> None:
    """A new connection is served: the server survived what the test sent."""
    with connect(gateway) as sock:
        sock.sendall(HEALTHZ)
        assert_healthz(ResponseReader(sock).next())


def assert_only_refusal(sock: socket.socket, status: int, gateway: GatewayProcess) -> None:
    """The server answers exactly one response, the refusal `status`, and closes the
    connection: nothing after it (a smuggled request) is ever answered."""
    responses, closed = read_all(sock)
    assert [r.status for r in responses] == [status], [r.raw[:200] for r in responses]
    assert_refused(responses[0], status)
    assert closed, "the connection stayed open after the refusal"
    assert_still_serving(gateway)


# -- keep-alive ----------------------------------------------------------------------------


def test_keep_alive_serves_sequential_proxied_requests(gateway: GatewayProcess) -> None:
    """One connection serves a non-streaming chat request (content-length), a streaming one
    (chunked, ending with the zero-length chunk), another non-streaming one and a health check,
    one after the other, each answered completely and the connection kept open."""
    with connect(gateway) as sock:
        reader = ResponseReader(sock)
        sock.sendall(post(PLAIN))
        first = reader.next()
        assert_chat_answer(first)
        assert first.header("content-length") == str(len(first.body))
        sock.sendall(post(STREAM))
        assert_stream_answer(reader.next())
        sock.sendall(post(PLAIN))
        assert_chat_answer(reader.next())
        sock.sendall(HEALTHZ)
        assert_healthz(reader.next())
        assert reader.buffer == b""  # nothing was sent beyond the four responses
        assert (first.header("connection") or "").lower() != "close"


# -- pipelining ----------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(gateway: GatewayProcess) -> None:
    """A streaming request, a non-streaming one and a health check sent in one write are
    answered completely and in the order sent (each response carries its request's id), and
    the connection serves a request after them."""
    ids = ["pipe-stream-1", "pipe-plain-2", "pipe-health-3"]
    with connect(gateway) as sock:
        sock.sendall(
            post(STREAM, request_id=ids[0])
            + post(PLAIN, request_id=ids[1])
            + b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-health-3\r\n\r\n"
        )
        reader = ResponseReader(sock)
        responses = [reader.next() for _ in ids]
        assert [r.header("x-request-id") for r in responses] == ids
        assert_stream_answer(responses[0])
        assert_chat_answer(responses[1])
        assert_healthz(responses[2])
        sock.sendall(post(PLAIN))
        assert_chat_answer(reader.next())


def test_a_malformed_request_behind_a_pipelined_one_is_not_read_as_its_answer(
    gateway: GatewayProcess,
) -> None:
    """A valid request pipelined with a malformed one: the first response on the wire, if
    any, is the valid request's own answer (never the malformed one's 400, which a client would
    take for the answer to its first request); then the connection closes."""
    with connect(gateway) as sock:
        sock.sendall(post(PLAIN, request_id="pipe-before-garbage") + b"HELLO\r\n\r\n")
        responses, closed = read_all(sock)
    assert closed
    if responses:
        assert responses[0].header("x-request-id") == "pipe-before-garbage"
        assert_chat_answer(responses[0])
        assert [r.status for r in responses[1:]] in ([], [400])
    assert_still_serving(gateway)


# -- Expect: 100-continue ------------------------------------------------------------------


def test_expect_100_continue_is_answered_before_the_body(gateway: GatewayProcess) -> None:
    """With `Expect: 100-continue` and the body held back, the server sends `100 Continue`;
    once the body is sent the request is answered 200, and the connection serves another."""
    with connect(gateway) as sock:
        sock.sendall(head(length=len(PLAIN), extra=b"Expect: 100-continue\r\n"))
        reader = ResponseReader(sock)
        interim = reader.next()
        assert interim.status == 100
        assert interim.raw == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert reader.buffer == b""
        sock.sendall(PLAIN)
        assert_chat_answer(reader.next())
        sock.sendall(HEALTHZ)
        assert_healthz(reader.next())


def test_expect_100_continue_with_a_chunked_body(gateway: GatewayProcess) -> None:
    """`Expect: 100-continue` with a chunked body: `100 Continue`, then the body in small
    chunks over several writes, then the answer."""
    with connect(gateway) as sock:
        sock.sendall(chunked_head(b"Expect: 100-continue\r\n"))
        reader = ResponseReader(sock)
        assert reader.next().status == 100
        for piece in chunked(PLAIN, 16):
            sock.sendall(piece)
            time.sleep(0.01)
        assert_chat_answer(reader.next())


def test_expect_100_continue_refused_before_the_body(gateway: GatewayProcess) -> None:
    """A request with `Expect: 100-continue` and a wrong key gets its 401 without sending
    the body and without a `100 Continue` first; the server then ends the connection (it will
    not read a body nobody needs), promptly, and a new connection is served."""
    with connect(gateway) as sock:
        sock.sendall(head(key="wrong-key", length=len(PLAIN), extra=b"Expect: 100-continue\r\n"))
        data, closed, elapsed = read_until_closed(sock, SETTLE)
    assert data.startswith(b"HTTP/1.1 401 "), data[:200]  # no `100 Continue` first
    responses = parse_responses(data)
    assert [r.status for r in responses] == [401]
    assert responses[0].header("connection") == "close"  # the client learns it from the head
    error = orjson.loads(responses[0].body)["error"]
    assert error["code"] == "unauthorized"
    assert closed
    assert elapsed < SETTLE
    assert_still_serving(gateway)


# -- chunked request bodies ----------------------------------------------------------------


def test_a_chunked_body_in_one_write(gateway: GatewayProcess) -> None:
    """A chat request whose body is sent `Transfer-Encoding: chunked` in 7-byte chunks (one
    with a chunk extension) is answered as if it had a content-length; the connection stays
    usable."""
    chunks = chunked(PLAIN, 7)
    chunks[0] = chunks[0].replace(b"\r\n", b";note=ignored\r\n", 1)
    with connect(gateway) as sock:
        sock.sendall(chunked_head() + b"".join(chunks))
        reader = ResponseReader(sock)
        assert_chat_answer(reader.next())
        sock.sendall(HEALTHZ)
        assert_healthz(reader.next())


def test_a_chunked_body_over_several_writes(gateway: GatewayProcess) -> None:
    """A streaming request whose chunked body arrives over several writes, with pauses, some
    writes splitting a chunk's size line or data: answered with the whole stream."""
    framed = b"".join(chunked(STREAM, 20))
    with connect(gateway) as sock:
        sock.sendall(chunked_head())
        for i in range(0, len(framed), 13):
            sock.sendall(framed[i : i + 13])
            time.sleep(0.01)
        assert_stream_answer(ResponseReader(sock).next())


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"zz\r\n" + PLAIN + b"\r\n0\r\n\r\n", id="size-not-hex"),
        pytest.param(b"5\r\n" + PLAIN + b"\r\n0\r\n\r\n", id="data-longer-than-size"),
        pytest.param(b"-5\r\n" + PLAIN + b"\r\n0\r\n\r\n", id="negative-size"),
        pytest.param(b"ffffffffffffffffff\r\n" + PLAIN, id="size-overflows"),
    ],
)
def test_a_malformed_chunked_body_is_a_400(gateway: GatewayProcess, body: bytes) -> None:
    """A chunked body with a bad chunk size or framing is answered 400 (JSON, `connection:
    close`), the connection closes, and nothing else is answered on it."""
    with connect(gateway) as sock:
        sock.sendall(chunked_head() + body)
        assert_only_refusal(sock, 400, gateway)


def test_a_malformed_chunk_after_the_app_began_reading_is_a_400(
    gateway: GatewayProcess,
) -> None:
    """A bad chunk that arrives after a good one, once the request is already being served
    (the app waiting for the rest of its body), is still answered 400, and only 400."""
    with connect(gateway) as sock:
        sock.sendall(chunked_head() + chunked(PLAIN, 10)[0])
        time.sleep(0.3)
        sock.sendall(b"nothex\r\n")
        assert_only_refusal(sock, 400, gateway)


# -- request smuggling ---------------------------------------------------------------------


def smuggling_body() -> bytes:
    """A chunked body that ends early, followed by a whole second request: a server that
    frames by chunks sees two requests, one that frames by `Content-Length` sees one."""
    return b"".join(chunked(PLAIN, 64)) + SMUGGLED


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n", id="CL-then-TE"),
        pytest.param(b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n", id="TE-then-CL"),
        pytest.param(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", id="TE-with-short-CL"),
    ],
)
def test_content_length_with_transfer_encoding_is_refused(
    gateway: GatewayProcess, framing: bytes
) -> None:
    """Invariant (request smuggling): a request with both `Content-Length` and
    `Transfer-Encoding: chunked` is refused with 400 and its connection closed, so the request
    hidden after the chunked body is never answered, whichever header a front proxy believed."""
    body = smuggling_body()
    if b"%d" in framing:
        framing = framing % len(body)
    with connect(gateway) as sock:
        sock.sendall(head(extra=framing) + body)
        assert_only_refusal(sock, 400, gateway)


@pytest.mark.parametrize(
    "lengths",
    [
        pytest.param((len(PLAIN), len(PLAIN) + len(SMUGGLED)), id="different"),
        pytest.param((len(PLAIN) + len(SMUGGLED), len(PLAIN)), id="different-reversed"),
        pytest.param((len(PLAIN), len(PLAIN)), id="equal"),
    ],
)
def test_two_content_lengths_are_refused(gateway: GatewayProcess, lengths: tuple[int, int]) -> None:
    """Two `Content-Length` header lines (even equal ones) are refused with 400: one reading
    would put a second request in the body, the other would not."""
    extra = b"".join(b"Content-Length: %d\r\n" % n for n in lengths)
    with connect(gateway) as sock:
        sock.sendall(head(extra=extra) + PLAIN + SMUGGLED)
        assert_only_refusal(sock, 400, gateway)


def test_a_content_length_list_is_refused(gateway: GatewayProcess) -> None:
    """`Content-Length: N, N` (a list in one header line) is refused with 400."""
    extra = b"Content-Length: %d, %d\r\n" % (len(PLAIN), len(PLAIN))
    with connect(gateway) as sock:
        sock.sendall(head(extra=extra) + PLAIN)
        assert_only_refusal(sock, 400, gateway)


@pytest.mark.parametrize(
    ("framing", "status"),
    [
        pytest.param(b"Transfer-Encoding: gzip, chunked\r\n", 501, id="gzip-chunked"),
        pytest.param(b"Transfer-Encoding: identity\r\n", 400, id="identity"),
        pytest.param(b"Transfer-Encoding : chunked\r\n", 400, id="space-before-colon"),
        pytest.param(b"Transfer-Encoding: xchunked\r\n", 400, id="xchunked"),
        pytest.param(b"Transfer-Encoding: chunked, identity\r\n", 400, id="chunked-not-last"),
        pytest.param(b"Transfer-Encoding:\r\n chunked\r\n", 400, id="folded"),
        pytest.param(
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", 400, id="second-header"
        ),
    ],
)
@pytest.mark.parametrize("hidden", ["after-chunked-body", "at-body-start"])
def test_obfuscated_transfer_encodings_are_refused(
    gateway: GatewayProcess, framing: bytes, status: int, hidden: str
) -> None:
    """Invariant (request smuggling): a `Transfer-Encoding` the server cannot honour exactly
    (an unsupported coding, an obfuscated header) is refused, 400 or 501, with the connection
    closed; the request hidden in the body, after a chunked body or right at its start (where
    a server ignoring the header would read it), is never answered."""
    body = smuggling_body() if hidden == "after-chunked-body" else SMUGGLED + PLAIN
    with connect(gateway) as sock:
        sock.sendall(head(extra=framing) + body)
        assert_only_refusal(sock, status, gateway)


def test_a_request_inside_a_content_length_body_is_never_answered(
    gateway: GatewayProcess,
) -> None:
    """A `Content-Length` that covers a JSON body plus a whole second request: the second
    request is body (the app answers 400 for the invalid JSON), never a request of its own,
    and the connection stays usable."""
    body = PLAIN + SMUGGLED
    with connect(gateway) as sock:
        sock.sendall(post(body))
        reader = ResponseReader(sock)
        response = reader.next()
        assert response.status == 400, response.raw[:300]
        assert orjson.loads(response.body)["error"]["code"] == "invalid_request"
        responses, closed = read_all(sock, 1.0)
        assert responses == [] and reader.buffer == b""
        assert not closed
        sock.sendall(HEALTHZ)
        assert_healthz(reader.next())


def test_transfer_coding_names_are_case_insensitive(gateway: GatewayProcess) -> None:
    """`Transfer-Encoding: CHUNKED` is chunked (coding names are case-insensitive): served."""
    with connect(gateway) as sock:
        sock.sendall(head(extra=b"Transfer-Encoding: CHUNKED\r\n") + b"".join(chunked(PLAIN, 9)))
        assert_chat_answer(ResponseReader(sock).next())


# -- header and body limits ----------------------------------------------------------------

MAX_HEADER_BYTES = 64 * 1024  # limits.max_header_bytes's default
MAX_HEADERS = 100  # limits.max_headers's default
MAX_BODY_BYTES = 256 * 1024  # the session gateway's limits.max_body_bytes


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        pytest.param(
            head(extra=b"X-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n", length=len(PLAIN)) + PLAIN,
            431,
            "request_header_fields_too_large",
            id="head-too-large",
        ),
        pytest.param(
            head(
                extra=b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 1)),
                length=len(PLAIN),
            )
            + PLAIN,
            431,
            "request_header_fields_too_large",
            id="too-many-headers",
        ),
        pytest.param(
            post(b'{"model":"openai-ok","pad":"' + b"p" * MAX_BODY_BYTES + b'"}'),
            413,
            "payload_too_large",
            id="body-too-large",
        ),
    ],
)
def test_limits_refuse_and_close_the_connection(
    gateway: GatewayProcess, request_bytes: bytes, status: int, code: str
) -> None:
    """A request head over `limits.max_header_bytes` or with more than `limits.max_headers`
    header lines is refused 431, a body whose content-length is over `limits.max_body_bytes`
    413, each with a JSON error and nothing else answered; the server closes the connection
    within a bounded time, and a new connection is served."""
    with connect(gateway) as sock:
        # The server may stop reading once it has refused the request.
        with contextlib.suppress(OSError):
            sock.sendall(request_bytes)
        responses, closed = read_all(sock)
    assert [r.status for r in responses] == [status], [r.raw[:200] for r in responses]
    assert orjson.loads(responses[0].body)["error"]["code"] == code
    assert closed, "the connection stayed open after the refusal"
    assert_still_serving(gateway)


def test_a_chunked_body_over_the_limit_gets_413(gateway: GatewayProcess) -> None:
    """A chunked body that grows past `limits.max_body_bytes` is refused 413 while it is
    read, with nothing else answered. If the rest of the body was still arriving the
    connection is closed; if it had all arrived, the connection may stay open, and then it
    serves the next request correctly (the rest of the body is not read as a request)."""
    body = b"".join(chunked(b"p" * (MAX_BODY_BYTES + 1), 32 * 1024))
    with connect(gateway) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(chunked_head() + body)
        data, closed, _ = read_until_closed(sock, 1.0)
        responses = parse_responses(data)
        assert [r.status for r in responses] == [413], data[:300]
        assert orjson.loads(responses[0].body)["error"]["code"] == "payload_too_large"
        if closed:
            assert responses[0].header("connection") == "close"
        if not closed:
            sock.sendall(HEALTHZ)
            assert_healthz(ResponseReader(sock).next())
    assert_still_serving(gateway)


# -- malformed requests --------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"HELLO\r\n\r\n", id="no-method-or-version"),
        pytest.param(b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", id="unknown-version"),
        pytest.param(b"G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", id="invalid-method"),
        pytest.param(b"BREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n", id="unknown-method"),
        pytest.param(b"GET /hea lthz HTTP/1.1\r\nHost: x\r\n\r\n", id="space-in-target"),
        pytest.param(b"GET /healthz HTTP/1.1\nHost: x\n\n", id="bare-lf"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX Y: z\r\n\r\n", id="space-in-name"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", id="nul-in-value"),
        pytest.param(b"GET /healthz HTTP/1.1\r\n\r\n", id="http11-without-host"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", id="two-hosts"),
        pytest.param(
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40, id="tls-hello"
        ),
    ],
)
def test_malformed_requests_get_400_and_the_server_keeps_serving(
    gateway: GatewayProcess, request_bytes: bytes
) -> None:
    """A malformed request line, an invalid or unknown method, a bad header line, an HTTP/1.1
    request without exactly one `Host`, or not HTTP at all: answered 400 with a JSON error
    and `connection: close`, the connection closed (never a hang), and the server keeps
    serving other connections."""
    with connect(gateway) as sock:
        sock.sendall(request_bytes)
        assert_only_refusal(sock, 400, gateway)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /healthz HTTP/1.0\r\n\r\n", id="http10-without-host"),
        pytest.param(b"GET /healthz\r\n\r\n", id="http09-request-line"),
    ],
)
def test_older_http_versions_are_served_and_closed(
    gateway: GatewayProcess, request_bytes: bytes
) -> None:
    """An HTTP/1.0 request needs no `Host`, and a request line without a version (HTTP/0.9
    style) is read as such: each is served, with `connection: close`, and the connection is
    closed after the response (no keep-alive unless asked for)."""
    with connect(gateway) as sock:
        sock.sendall(request_bytes)
        responses, closed = read_all(sock)
    assert len(responses) == 1
    assert_healthz(responses[0])
    assert (responses[0].header("connection") or "").lower() == "close"
    assert closed


# -- methods -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_on_a_proxy_route_get_405(gateway: GatewayProcess, method: str) -> None:
    """GET, PUT or DELETE on the chat route is 405 with a JSON error saying which method the
    route accepts, and the connection stays usable."""
    with connect(gateway) as sock:
        sock.sendall(head(method, length=0) if method != "GET" else head(method))
        reader = ResponseReader(sock)
        response = reader.next()
        assert response.status == 405, response.raw[:300]
        assert response.header("content-type") == "application/json"
        error = orjson.loads(response.body)["error"]
        assert error["code"] == "method_not_allowed"
        assert "POST" in error["message"]
        assert response.header("allow") == "POST"
        sock.sendall(HEALTHZ)
        assert_healthz(reader.next())


def test_head_on_a_proxy_route_gets_405_without_a_body(gateway: GatewayProcess) -> None:
    """HEAD on the chat route is 405; the response has the content-length a GET's error
    would have but no body bytes, as HEAD requires, so the next response on the connection
    parses from the right place."""
    with connect(gateway) as sock:
        sock.sendall(head("HEAD") + HEALTHZ)
        reader = ResponseReader(sock)
        response = reader.next(head_request=True)
        assert response.status == 405, response.raw[:300]
        assert response.header("content-type") == "application/json"
        assert int(response.header("content-length") or 0) > 0
        assert response.header("allow") == "POST"
        assert_healthz(reader.next())
