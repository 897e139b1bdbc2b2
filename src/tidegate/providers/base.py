"""What every upstream adapter provides, and the HTTP plumbing they share.

A `Provider` is one configured deployment (a `models:` entry) of one wire format. It builds
the upstream call for a canonical request (or for a same-format pass-through body), opens it,
and hands back a `StreamParser` that turns the upstream's bytes into canonical events.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import replace
from typing import Any, ClassVar, cast

import orjson

from tidegate.errors import UpstreamError, UpstreamStatusError
from tidegate.events import ChatRequest, Completion
from tidegate.formats.base import (
    PassthroughCodec,
    StreamParser,
    UpstreamCodec,
    error_message_of,
)
from tidegate.providers.credentials import ProviderRuntime
from tidegate.providers.http import UpstreamCall, UpstreamClient, UpstreamResponse, join_url
from tidegate.settings import DeploymentSettings, HttpDeploymentSettings
from tidegate.sse import DEFAULT_MAX_EVENT_BYTES


class Provider(ABC):
    """One upstream deployment speaking one wire format."""

    #: The key used in `provider:`; also the registry name.
    name: ClassVar[str]
    #: The wire format it speaks; equal formats allow byte pass-through.
    wire_format: ClassVar[str]
    #: That format's codec module (formats/<wire>.py).
    codec: UpstreamCodec

    #: The largest event or line its stream parsers accept (`limits.max_event_bytes`).
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    #: The largest whole answer it reads, inflated (`limits.max_response_bytes`).
    max_response_bytes: int = 10 * 1024 * 1024

    #: The `models:` settings this provider declares (unknown or misplaced fields are refused).
    settings: ClassVar[type[DeploymentSettings]] = HttpDeploymentSettings
    #: Where a `base_url` is optional, the address used without one.
    default_base_url: ClassVar[str | None] = None
    #: The API path of a whole call and of a streamed one, joined to the base URL by
    #: `join_url`; `{model}` is the upstream model, `{settings}` the entry's settings.
    path: ClassVar[str] = ""
    stream_path: ClassVar[str | None] = None
    #: The header that carries the key, and its value with `{key}` in it (None: no key).
    key_header: ClassVar[tuple[str, str] | None] = ("Authorization", "Bearer {key}")
    #: Headers every call carries (an API version, say).
    static_headers: ClassVar[dict[str, str]] = {}
    #: The upstream keeps each conversation itself, per `session_id` (and takes a `mode`).
    keeps_history: ClassVar[bool] = False
    #: What the process lends its providers (shared state, per-user upstream keys, tokens);
    #: bound by `Services`. None: no per-user keys (a described provider then uses a
    #: process-local runtime).
    runtime: ProviderRuntime | None = None

    def __init__(self, config: DeploymentSettings):
        self.config = config
        self.timeouts = config.timeouts
        base = getattr(config, "base_url", None) or self.default_base_url or ""
        fields = {"model": config.upstream_model, "settings": config}
        self.url = join_url(base, self.path.format(**fields))
        self.stream_url = join_url(base, (self.stream_path or self.path).format(**fields))
        headers = {"Content-Type": "application/json", **self.static_headers}
        if isinstance(config, HttpDeploymentSettings):
            if config.api_key is not None and self.key_header is not None:
                name, template = self.key_header
                headers[name] = template.format(key=config.api_key.get_secret_value())
            headers.update({k: v.get_secret_value() for k, v in config.headers.items()})
        headers.setdefault("Accept-Encoding", "gzip, deflate")
        self._headers = headers
        # Streams: SSE accepted, and no compression that would buffer them.
        self._stream_headers = {
            **headers,
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
        }

    def headers_for(self, stream: bool) -> dict[str, str]:
        """The headers of a streaming or a whole call."""
        return self._stream_headers if stream else self._headers

    def url_for(self, stream: bool) -> str:
        """The URL of a streaming or a whole call."""
        return self.stream_url if stream else self.url

    @property
    def label(self) -> str:
        """How logs and headers name this deployment: the model name and upstream host."""
        return f"{self.config.name}@{self.name}"

    def wire_request(self, request: ChatRequest) -> tuple[dict[str, Any], list[str]]:
        """The upstream body for a canonical request, and the fields it cannot carry."""
        return self.codec.request_to_wire(request, self.config.upstream_model)

    def build_call(self, request: ChatRequest) -> UpstreamCall:
        """The upstream request for a canonical request, in the provider's wire format; a
        request without `max_tokens` gets the entry's `max_tokens`, when it has one."""
        if request.max_tokens is None and self.config.max_tokens is not None:
            request = replace(request, max_tokens=self.config.max_tokens)
        body, dropped = self.wire_request(request)
        stream = request.stream
        return UpstreamCall(
            self.url_for(stream),
            orjson.dumps(body),
            self.headers_for(stream),
            stream=stream,
            dropped=dropped,
        )

    def build_passthrough(self, body: dict[str, Any], stream: bool) -> UpstreamCall:
        """The upstream request for a body already in this provider's own format."""
        # Not `isinstance(codec, PassthroughCodec)`: a runtime Protocol check walks the
        # protocol's members every time, about 0.1 ms per request (cProfile, issue 15).
        if not hasattr(self.codec, "passthrough_to_wire"):
            raise NotImplementedError(f"{self.name} has no pass-through")
        codec = cast(PassthroughCodec, self.codec)
        body, filt = codec.passthrough_to_wire(body, self.config.upstream_model, stream)
        call = UpstreamCall(
            self.url_for(stream), orjson.dumps(body), self.headers_for(stream), stream=stream
        )
        call.filter = filt
        return call

    def stream_parser(self, *, side: bool = False) -> StreamParser:
        """A parser for one streamed response. `side=True`: only usage, finish and errors matter."""
        return self.codec.stream_parser(side=side, max_event_bytes=self.max_event_bytes)

    def parse_completion(self, body: bytes) -> Completion:
        """A non-streaming response body as a canonical completion."""
        return self.codec.completion_from_wire(body)

    def usage_of_body(self, body: bytes) -> Completion:
        """Usage and finish of a pass-through non-streaming body (defaults to a full parse)."""
        return self.parse_completion(body)

    def error_from_status(
        self, status: int, body: bytes, retry_after: float | None
    ) -> UpstreamError:
        """The error an upstream HTTP error response stands for."""
        message = error_message_of(body) or f"HTTP {status}"
        err = UpstreamStatusError(
            f"upstream returned HTTP {status}: {message}",
            upstream_status=status,
            retry_after=retry_after,
        )
        err.upstream_body = body
        err.upstream_format = self.wire_format
        return err

    async def open(self, client: UpstreamClient, call: UpstreamCall) -> UpstreamResponse:
        """Send the call and return once the upstream's status and headers have arrived. A
        request whose identity's user has an upstream key of their own for this model (or
        provider) carries that key instead of the model's."""
        runtime = self.runtime
        if (
            call.user is not None
            and runtime is not None
            and runtime.keys is not None
            and self.key_header is not None
        ):
            own = await runtime.keys.find(call.user, self.config.name, self.name)
            if own is not None:
                header, template = self.key_header
                call.headers = {**call.headers, header: template.format(key=own)}
        timeout = self.timeouts.connect
        return await client.send(call, connect_timeout=timeout, model=self.config.name)
