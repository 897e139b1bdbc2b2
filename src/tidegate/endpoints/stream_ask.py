"""`POST /stream-ask` and `POST /ask`: the simple protocol for front ends, streamed or whole,
and `DELETE /v1/sessions/{session_id}` (the format: formats/stream_ask.py; the protocol:
docs/protocol.md). A request comes as JSON, as a urlencoded form or as multipart form data,
read here with bounded parsers; its task becomes a conversation in prompts.py.

These are not `ChatEndpoint`s: reading a request may need the session store (a wait), so the
handlers are written out and hand their `ChatCall` to `serve_chat` themselves. With a
`session_id`, on a model whose upstreams keep no history of their own, the turns the gateway
kept (sessions.py) go before the new one, and the exchange is appended once its answer is
complete: just before the last bytes of the response are sent, so that a client that asks
again as soon as it has the answer finds it kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from tidegate.asgi import Request, Send, SendMessage
from tidegate.context import RequestContext
from tidegate.endpoints.base import ChatCall, Route
from tidegate.endpoints.chat import serve_chat
from tidegate.errors import InvalidRequest, NotFound
from tidegate.events import Completion, Event, TextDelta
from tidegate.formats import stream_ask
from tidegate.formats.base import StreamState
from tidegate.formats.stream_ask import StreamAskRequest
from tidegate.prompts import build_chat, prompt_for
from tidegate.providers.base import Provider
from tidegate.services import Services
from tidegate.sessions import Sessions

# A form carries a dozen fields; bounding their number bounds the CPU a hostile form can cost
# (parsing is synchronous, on the event loop).
MAX_FORM_FIELDS = 64


class AnswerRecorder(stream_ask.StreamAskEncoder):
    """The /stream-ask encoder, keeping the answer's text: `answer` is set once the stream
    ended without an error (None until then, and after a failure)."""

    __slots__ = ("_texts", "answer")

    def __init__(self) -> None:
        super().__init__()
        self._texts: list[str] = []
        self.answer: str | None = None

    def encode(self, events: list[Event]) -> bytes:
        self._texts += [e.text for e in events if isinstance(e, TextDelta)]
        return super().encode(events)

    def end(self, state: StreamState) -> bytes:
        if state.error is None:
            self.answer = "".join(self._texts)
        return super().end(state)


class KeptExchange:
    """One request of a session the gateway keeps: records its answer (streamed through
    `encoder`, or whole through `render`) and appends the exchange to the session just before
    the response's last bytes go out, if the answer was complete by then."""

    __slots__ = ("_pending", "_sessions", "_whole", "encoder", "identity", "session_id", "turn")

    def __init__(self, sessions: Sessions, identity: str | None, session_id: str, turn: str):
        self._sessions = sessions
        self.identity = identity
        self.session_id = session_id
        self.turn = turn
        self.encoder = AnswerRecorder()
        self._whole: str | None = None
        self._pending = True

    def render(self, completion: Completion) -> bytes:
        """The `/ask` body of a whole answer, remembered."""
        self._whole = completion.text
        return stream_ask.answer_body(completion, self.session_id)

    def wrap(self, send: Send) -> Send:
        """`send`, appending the exchange before the response's last message."""

        async def send_and_keep(message: SendMessage) -> None:
            last = message["type"] == "http.response.body" and not message.get("more_body")
            if self._pending and last:
                self._pending = False
                answer = self._whole if self._whole is not None else self.encoder.answer
                if answer is not None:
                    await self._sessions.remember(self.identity, self.session_id, self.turn, answer)
            await send(message)

        return send_and_keep


def sessions_of(services: Services) -> Sessions:
    """The session store, with the configured budget and time to live."""
    config = services.config.stream_ask
    return Sessions(
        services.state, budget_tokens=config.session_budget_tokens, ttl=config.session_ttl
    )


def read_request(request: Request) -> StreamAskRequest:
    """The validated request (400 naming the field)."""
    fields = read_fields(request)
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        fields = stream_ask.from_form(fields)
    return stream_ask.validate_request(fields)


async def serve_ask(
    services: Services, ctx: RequestContext, request: Request, send: Send, *, stream: bool
) -> None:
    """Answer one request: as the event stream (`stream`) or as one JSON object."""
    fields = read_request(request)
    model = fields.model or services.stream_ask_model
    plan = services.router.plan(model)  # an unknown model is a 404 before anything else
    tasks = services.config.stream_ask.tasks
    namer = dropped_namer(fields, bool(prompt_for(fields.task_name, tasks).system))
    session_id = fields.session_id or None
    ctx.resumable = bool(fields.resumable)
    if session_id is not None and not all(d.provider.keeps_history for d in plan):
        sessions = sessions_of(services)
        kept = await sessions.turns(ctx.owner, session_id)
        chat, turn = build_chat(fields, model, tasks, kept)
        chat.session_id = workspace_session(ctx, chat.session_id)
        exchange = KeptExchange(sessions, ctx.owner, session_id, turn)
        call = ChatCall(
            model, stream, lambda: chat, exchange.encoder, exchange.render, dropped_for=namer
        )
        ctx.send_wrapped()
        return await serve_chat(services, ctx, call, exchange.wrap(send))
    chat, _ = build_chat(fields, model, tasks, [])
    chat.session_id = workspace_session(ctx, chat.session_id)
    call = ChatCall(
        model,
        stream,
        lambda: chat,
        stream_ask.StreamAskEncoder(),
        lambda completion: stream_ask.answer_body(completion, session_id),
        dropped_for=namer,
    )
    return await serve_chat(services, ctx, call, send)


def workspace_session(ctx: RequestContext, session_id: str | None) -> str | None:
    """The `sessionId` an AnythingLLM workspace gets: scoped to the client key's subject, so
    that two clients choosing the same `session_id` never share a workspace thread (unscoped
    when the gateway has no client keys: there is only one client then)."""
    if session_id is None or ctx.identity is None:
        return session_id
    tag = hashlib.sha256(ctx.identity.subject.encode()).hexdigest()[:12]
    return f"tg-{tag}-{session_id}"


def dropped_namer(
    fields: StreamAskRequest, task_system: bool
) -> Callable[[Provider, list[str]], list[str]]:
    """Names what a deployment cannot carry in /stream-ask's words: `history` (not the
    canonical `messages`), `system` or the task's system prompt, and `mode` on any upstream
    that is not an AnythingLLM workspace."""

    def name(provider: Provider, dropped: list[str]) -> list[str]:
        out: list[str] = []
        for field in dropped:
            if field.startswith("messages"):
                if fields.history:
                    out.append("history")  # kept session turns are the workspace's business
            elif field == "system":
                if fields.system:
                    out.append("system")
                if task_system:
                    out.append(f"task (the system prompt of {fields.task_name})")
            else:
                out.append(field)
        if fields.mode and not provider.keeps_history:
            out.append("mode")
        return out

    return name


def stream_handler(
    services: Services, ctx: RequestContext, request: Request, send: Send
) -> Awaitable[None]:
    """`POST /stream-ask`: the answer as the event stream."""
    return serve_ask(services, ctx, request, send, stream=True)


def ask_handler(
    services: Services, ctx: RequestContext, request: Request, send: Send
) -> Awaitable[None]:
    """`POST /ask`: the answer as one JSON object."""
    return serve_ask(services, ctx, request, send, stream=False)


async def forget_session(
    services: Services, ctx: RequestContext, request: Request, send: Send
) -> None:
    """`DELETE /v1/sessions/{session_id}`: 204 once forgotten, 404 when the caller has no
    session of that id."""
    session_id = request.params["session_id"]
    if not await sessions_of(services).forget(ctx.owner, session_id):
        raise NotFound(f"no session {session_id!r}")
    ctx.status = 204
    await send({"type": "http.response.start", "status": 204, "headers": ctx.response_headers()})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def read_fields(request: Request) -> dict[str, Any]:
    """The request's fields from a JSON object, a urlencoded form or multipart form data."""
    kind = request.content_type
    if kind == "application/x-www-form-urlencoded":
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("form body is not valid UTF-8") from None
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except ValueError:
            raise InvalidRequest(f"form has more than {MAX_FORM_FIELDS} fields") from None
        return dict(pairs)
    if kind == "multipart/form-data":
        return multipart_fields(request.header(b"content-type"), request.body)
    if kind not in ("", "application/json", "text/plain") and not kind.endswith("+json"):
        raise InvalidRequest(f"unsupported content type {kind!r}; send application/json or a form")
    return request.json_object()


def multipart_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a multipart/form-data body (file parts are skipped; a repeated name
    keeps its last value). At most `MAX_FORM_FIELDS` parts; a part that is itself multipart
    is refused rather than parsed. A field is at most the body, which the gateway has already
    bounded by `limits.max_body_bytes`."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart body has no boundary in its Content-Type")
    form = _Form()
    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": form.part_begin,
                "on_header_field": form.header_field,
                "on_header_value": form.header_value,
                "on_header_end": form.header_end,
                "on_headers_finished": form.headers_finished,
                "on_part_data": form.part_data,
                "on_part_end": form.part_end,
                "on_end": form.end,
            },
        )
        parser.write(body)
    except FormParserError:
        raise InvalidRequest("multipart body could not be parsed (check the boundary)") from None
    if not form.complete:
        raise InvalidRequest("multipart body ended before its closing boundary")
    return form.fields


class _Form:
    """The callbacks of one multipart parse: collects text fields, refuses what is unbounded."""

    __slots__ = (
        "_charset",
        "_chunks",
        "_field",
        "_headers",
        "_name",
        "_parts",
        "_value",
        "complete",
        "fields",
    )

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.complete = False
        self._parts = 0
        self._headers: dict[bytes, bytes] = {}
        self._field = self._value = b""
        self._name: str | None = None
        self._charset = "utf-8"
        self._chunks: list[bytes] = []

    def part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_FORM_FIELDS:
            raise InvalidRequest(f"multipart body has more than {MAX_FORM_FIELDS} parts")
        self._headers = {}
        self._chunks = []

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def headers_finished(self) -> None:
        kind, options = parse_options_header(self._headers.get(b"content-type"))
        if kind.startswith(b"multipart/"):
            raise InvalidRequest("multipart body has a nested multipart part; send plain fields")
        _, disposition = parse_options_header(self._headers.get(b"content-disposition"))
        name = disposition.get(b"name")
        is_file = b"filename" in disposition
        self._name = None if name is None or is_file else name.decode("utf-8", "replace")
        self._charset = options.get(b"charset", b"utf-8").decode("latin-1")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name is not None:
            self._chunks.append(data[start:end])

    def part_end(self) -> None:
        if self._name is None:
            return
        try:
            self.fields[self._name] = b"".join(self._chunks).decode(self._charset, "replace")
        except (LookupError, ValueError):
            raise InvalidRequest(
                f"multipart field {self._name!r} has an unknown charset {self._charset!r}"
            ) from None

    def end(self) -> None:
        self.complete = True


ROUTES = [
    Route("POST", "/stream-ask", stream_handler, stream_ask.error_body),
    Route("POST", "/ask", ask_handler, stream_ask.error_body),
    Route("DELETE", "/v1/sessions/{session_id}", forget_session, stream_ask.error_body),
]
