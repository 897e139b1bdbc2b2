"""The one error tree of tidegate.

Every failure inside the gateway is one of these classes. Lower-level errors (aiohttp, JSON,
OS errors) are translated into it in one place, `upstream_error_from_exception`, and each
endpoint renders a `GatewayError` in its own wire format in one function of its own.

```
GatewayError                          status  code
├── ClientError                       4xx
│   ├── InvalidRequest                400     invalid_request
│   ├── Unauthorized                  401     unauthorized
│   ├── Forbidden                     403     forbidden (a valid key without the right)
│   ├── UnknownModel                  404     model_not_found
│   ├── NotFound                      404     not_found
│   ├── MethodNotAllowed              405     method_not_allowed
│   ├── RequestTimeout                408     request_timeout (the body came too slowly)
│   ├── PayloadTooLarge               413     payload_too_large
│   ├── RateLimited                   429     rate_limited
│   └── ClientDisconnected            499     client_closed (never sent: nobody to send it to)
├── UpstreamError                     502/504
│   ├── UpstreamTimeout               504     upstream_timeout (connect|first_byte|idle|total)
│   ├── UpstreamNetworkError          502     upstream_unreachable / upstream_disconnected
│   ├── UpstreamProtocolError         502     upstream_protocol_error (malformed, truncated)
│   ├── UpstreamStatusError           by upstream status (see below)
│   ├── UpstreamAuthFailed            502     upstream_auth_failed (a descriptor's auth step)
│   └── UpstreamUnavailable           503     upstream_unavailable (every deployment cooling down)
├── ShuttingDown                      503     shutting_down (open at the end of the grace period)
├── StoreUnavailable                  503     store_unavailable (the key database cannot be read)
├── StreamCancelled                   409     cancelled (a cancel request stopped the stream)
├── InternalError                     500     internal_error
└── ConfigError                       start-up only: names the field and the fix
```

An error's `message` may reach the client; its `detail` (for example an upstream's internal
address) is written to the access log only.

The HTTP layer below the app answers some requests itself, before any of this exists:
431 (request head too large), 408 (request head too slow) and 503 (too many connections),
see `server_protocol.py`.

An upstream HTTP error keeps the upstream's status and message (with secrets redacted by the
caller) and maps to the client status a user can act on: the client's own mistakes (400, 404
of a request field, 413, 422) stay client errors, the gateway's credentials being refused
(401, 403) and server faults (5xx) become 502, and a 429 stays 429 with its Retry-After.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class GatewayError(Exception):
    """A failure with an HTTP status and a stable machine-readable code."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        detail: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        # What only the access log may see (internal hosts, addresses, library messages).
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    @property
    def retry_after(self) -> float | None:
        """Seconds the client should wait before retrying, when known."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r}, status={self.status})"


class ClientError(GatewayError):
    """The request itself cannot be served as sent."""

    status = 400
    code = "invalid_request"


class InvalidRequest(ClientError):
    """The body or a parameter is malformed or out of range; the message names the field."""


class Unauthorized(ClientError):
    """No client key, or one the gateway does not know."""

    status = 401
    code = "unauthorized"


class Forbidden(ClientError):
    """A known key that does not open this route (a client key on the admin API)."""

    status = 403
    code = "forbidden"


class UnknownModel(ClientError):
    """The request names a model that no `models:` entry defines."""

    status = 404
    code = "model_not_found"

    def __init__(self, model: str, known: list[str]):
        names = ", ".join(known) if known else "none"
        super().__init__(f"unknown model {model!r}; configured models: {names}")
        self.model = model


class NotFound(ClientError):
    """No route for this path."""

    status = 404
    code = "not_found"


class MethodNotAllowed(ClientError):
    """The path exists, the method does not; `allowed` goes in the `Allow` header a 405 must
    have (RFC 9110 15.5.6)."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allowed: list[str]):
        super().__init__(message)
        self.allowed = allowed


class RequestTimeout(ClientError):
    """The request body did not arrive within `limits.body_timeout`."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(ClientError):
    """The request body is larger than `limits.max_body_bytes`."""

    status = 413
    code = "payload_too_large"


class RateLimited(ClientError):
    """Too many requests; `retry_after` says when to come back."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, code: str | None = None):
        super().__init__(message, code=code)
        self._retry_after = retry_after

    @property
    def retry_after(self) -> float | None:
        return self._retry_after


class ClientDisconnected(ClientError):
    """The client went away before its request was read; logged as 499, never rendered."""

    status = 499
    code = "client_closed"


class UpstreamError(GatewayError):
    """The upstream failed: unreachable, too slow, malformed, or answered with an error."""

    status = 502
    code = "upstream_error"
    upstream_status: int | None = None
    #: Whether another try may help, when the upstream's description says (a described
    #: provider's `errors:` rules); None: decided by the kind of error and its status.
    retryable: bool | None = None


class UpstreamTimeout(UpstreamError):
    """A named deadline passed: `connect`, `first_byte`, `idle` (gap between chunks) or `total`."""

    status = 504
    code = "upstream_timeout"

    def __init__(self, phase: str, seconds: float):
        super().__init__(f"upstream {phase.replace('_', ' ')} timeout after {seconds:g}s")
        self.phase = phase
        self.seconds = seconds


class UpstreamNetworkError(UpstreamError):
    """The connection could not be made, or broke while the answer was streaming."""

    code = "upstream_unreachable"


class UpstreamProtocolError(UpstreamError):
    """The upstream sent data that is not its documented format, or stopped without its end."""

    code = "upstream_protocol_error"


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status or an error event; its status and message kept."""

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        upstream_type: str | None = None,
        retry_after: float | None = None,
    ):
        status, code = _client_status_for(upstream_status)
        super().__init__(message, code=code, status=status)
        self.upstream_status = upstream_status
        self.upstream_type = upstream_type
        self._retry_after = retry_after
        #: The upstream's own error body and its wire format: a client of the same format
        #: gets that body (redacted), with every detail the upstream put in it.
        self.upstream_body: bytes | None = None
        self.upstream_format: str | None = None

    @property
    def retry_after(self) -> float | None:
        return self._retry_after


class UpstreamAuthFailed(UpstreamError):
    """A described provider's auth step (its token exchange) failed. The message names the
    provider and the step, never a secret; the auth answer's excerpt goes to `detail`."""

    code = "upstream_auth_failed"

    def __init__(
        self,
        provider: str,
        why: str,
        *,
        upstream_status: int | None = None,
        detail: str | None = None,
    ):
        super().__init__(f"provider {provider!r}: the auth step failed: {why}", detail=detail)
        self.upstream_status = upstream_status


class UpstreamUnavailable(UpstreamError):
    """Every deployment of the model is cooling down after failures; nothing was sent."""

    status = 503
    code = "upstream_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self._retry_after = retry_after

    @property
    def retry_after(self) -> float | None:
        return self._retry_after


class ShuttingDown(GatewayError):
    """The gateway is stopping: a stream still open at the end of the grace period ends so."""

    status = 503
    code = "shutting_down"


class StateUnavailable(GatewayError):
    """The shared state (Redis) cannot be reached, so a key's limits cannot be checked: the
    request is refused rather than let through unlimited."""

    status = 503
    code = "state_unavailable"


class StoreUnavailable(GatewayError):
    """The database of managed keys cannot be read, so a key cannot be checked."""

    status = 503
    code = "store_unavailable"


class StreamCancelled(GatewayError):
    """The stream was cancelled on request (`POST /v1/streams/{id}/cancel`)."""

    status = 409
    code = "cancelled"


class InternalError(GatewayError):
    """A bug or a broken invariant inside the gateway."""


class ConfigError(Exception):
    """The configuration cannot be used. The message names the field and the fix."""

    def __init__(self, field: str, problem: str, fix: str | None = None):
        text = f"{field}: {problem}" if field else problem
        if fix:
            text += f" ({fix})"
        super().__init__(text)
        self.field = field
        self.problem = problem
        self.fix = fix

    def redacted(self, redact: Callable[[str], str]) -> ConfigError:
        """The same error with `redact` applied to every part of its text."""
        return ConfigError(
            redact(self.field), redact(self.problem), redact(self.fix) if self.fix else None
        )


def _client_status_for(upstream_status: int) -> tuple[int, str]:
    if upstream_status in (400, 422):
        return 400, "upstream_invalid_request"
    if upstream_status == 413:
        return 413, "upstream_payload_too_large"
    if upstream_status == 429:
        return 429, "upstream_rate_limited"
    if upstream_status in (401, 403):
        return 502, "upstream_auth_failed"
    if upstream_status == 404:
        return 502, "upstream_not_found"
    if upstream_status in (408, 504):
        return 504, "upstream_timeout"
    return 502, "upstream_error"


def error_fields(err: GatewayError) -> dict[str, Any]:
    """The fields every rendering of an error shares: message, code, and upstream status if any."""
    fields: dict[str, Any] = {"message": err.message, "code": err.code}
    if isinstance(err, UpstreamError) and err.upstream_status is not None:
        fields["upstream_status"] = err.upstream_status
    return fields


def as_gateway_error(exc: BaseException) -> GatewayError:
    """Any exception as a member of the tree; unknown ones become internal errors."""
    if isinstance(exc, GatewayError):
        return exc
    return InternalError(f"internal error: {type(exc).__name__}")
