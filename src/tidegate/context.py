"""Per-request state: what the request was, what happened, and the one log line it becomes."""

from __future__ import annotations

import re
import time
from typing import Any

from tidegate.asgi import DisconnectWatcher
from tidegate.auth import Identity
from tidegate.events import Usage
from tidegate.limits import Lease
from tidegate.providers.http import UpstreamClient
from tidegate.redact import Redactor

CLIENT_CLOSED = 499  # nginx's "client closed request"


class RequestContext:
    """Everything known about one request, filled in as it proceeds."""

    __slots__ = (
        "attempts",
        "client",
        "committed",
        "deployment",
        "dropped",
        "endpoint",
        "error_code",
        "error_detail",
        "finish_reason",
        "first_byte_at",
        "headers_out",
        "identity",
        "lease",
        "model",
        "redactor",
        "request_id",
        "resumable",
        "skipped",
        "skipped_lines",
        "start",
        "status",
        "stream",
        "stream_id",
        "tried",
        "upstream",
        "usage",
        "waited",
        "watcher",
    )

    def __init__(
        self,
        request_id: str,
        endpoint: str,
        client: UpstreamClient,
        redactor: Redactor | None = None,
    ):
        self.request_id = request_id
        self.redactor = redactor or Redactor(())
        self.endpoint = endpoint
        self.client = client
        self.start = time.perf_counter()
        self.first_byte_at: float | None = None
        self.committed = False
        self.model: str | None = None
        self.upstream: str | None = None
        self.stream = False
        self.stream_id: str | None = None
        #: The request asked its stream to outlive a disconnect for a while (resume grace).
        self.resumable = False
        #: Watches for the client leaving (set by the app once the body is read).
        self.watcher: DisconnectWatcher | None = None
        self.status = 0
        self.error_code: str | None = None
        self.error_detail: str | None = None  # log-only, see GatewayError.detail
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.dropped: list[str] = []
        self.deployment: str | None = None  # the deployment that served the request
        self.tried: str | None = None  # the deployment tried last
        self.identity: Identity | None = None  # the client key's identity (None: no keys)
        #: What the request holds of its key's limits (None: the key has none).
        self.lease: Lease | None = None
        self.attempts = 0
        self.skipped = 0  # deployments passed over: cooling down or at their limit
        self.skipped_lines = 0  # unreadable upstream events skipped in the answer
        self.waited = 0.0  # seconds spent waiting on upstreams (and backoff), not working
        self.headers_out: list[tuple[bytes, bytes]] = [(b"x-request-id", request_id.encode())]

    def redact(self, text: str) -> str:
        """`text` without any configured secret."""
        return self.redactor(text)

    def redact_bytes(self, data: bytes) -> bytes:
        """`data` without any configured secret."""
        return self.redactor.bytes(data)

    def mark_first_byte(self) -> None:
        """The response's first byte is about to leave."""
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()

    def overhead_ms(self) -> float:
        """Milliseconds the gateway itself has spent so far (upstream waits excluded)."""
        return max(0.0, (time.perf_counter() - self.start - self.waited) * 1000)

    @property
    def owner(self) -> str:
        """Who this request's streams and sessions belong to: the client's subject, or
        `anonymous` when the gateway has no client keys."""
        return self.identity.subject if self.identity is not None else "anonymous"

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers to send with the response: request id, deployment, attempts, overhead."""
        headers = list(self.headers_out)
        if self.deployment is not None:
            headers.append((b"x-tidegate-deployment", self.deployment.encode()))
        if self.attempts:
            headers.append((b"x-tidegate-attempts", str(self.attempts).encode()))
            headers.append((b"x-tidegate-overhead-ms", f"{self.overhead_ms():.2f}".encode()))
        if self.dropped:
            headers.append((b"x-tidegate-dropped-fields", _header_safe(", ".join(self.dropped))))
        return headers

    def log_fields(self) -> dict[str, Any]:
        """The structured access-log record of this request."""
        now = time.perf_counter()
        ttfb = self.first_byte_at - self.start if self.first_byte_at is not None else None
        usage = self.usage
        fields: dict[str, Any] = {
            "request_id": self.request_id,
            "endpoint": self.endpoint,
            "model": self.model,
            "upstream": self.upstream,
            "stream": self.stream,
            "status": self.status,
            "ttfb_ms": round(ttfb * 1000, 2) if ttfb is not None else None,
            "duration_ms": round((now - self.start) * 1000, 2),
            "tokens_in": usage.input_tokens if usage else None,
            "tokens_out": usage.output_tokens if usage else None,
        }
        if usage is not None:
            fields["tokens_cache_read"] = usage.cache_read_tokens
            fields["tokens_cache_write"] = usage.cache_write_tokens
            fields["tokens_reasoning"] = usage.reasoning_tokens
        if self.identity is not None:
            fields["key"] = self.identity.label
            if self.identity.user is not None:
                fields["user"] = self.identity.user
        if self.stream_id is not None:
            fields["stream_id"] = self.stream_id
        if self.deployment is not None or self.tried is not None:
            fields["deployment"] = self.deployment or self.tried
        if self.attempts:
            fields["attempts"] = self.attempts
            fields["overhead_ms"] = round(self.overhead_ms(), 2)
        if self.skipped:
            fields["skipped"] = self.skipped
        if self.skipped_lines:
            fields["skipped_lines"] = self.skipped_lines
        if self.finish_reason:
            fields["finish_reason"] = self.finish_reason
        if self.error_code:
            fields["error"] = self.error_code
        if self.error_detail:
            fields["error_detail"] = self.error_detail
        if self.dropped:
            fields["dropped"] = self.dropped
        return fields


# -- header values built from client data --------------------------------------------------------

MAX_HEADER_VALUE = 1024
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _header_safe(text: str, limit: int = MAX_HEADER_VALUE) -> bytes:
    """`text` (built from client data) as a header value that can never break the response:
    only printable ASCII, any other character escaped as `\\xNN` / `\\uNNNN`, and at most
    `limit` bytes, cut after the last whole ", "-separated item that fits and ending in "..."."""
    if not (text.isascii() and text.isprintable()):
        text = _UNPRINTABLE.sub(_escape, text)
    if len(text) > limit:
        head = text[: limit - 3]
        cut = head.rfind(", ")
        text = (head[: cut + 2] if cut > 0 else head) + "..."
    return text.encode("ascii")
