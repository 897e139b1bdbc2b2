"""The schema of provider descriptors: upstream APIs described as data (`providers:`).

A descriptor has the shape of seed 001's JSON descriptors, accepted unchanged: a `name`, an
optional token-exchange `auth` step, and a `chat` step. Each step has a `url`, a `method`,
`headers`, `data` and `params`, given as a list of `{name, value, convertor?}` (the seed's
form) or as a mapping (`headers: {Authorization: "Bearer ${access_token}"}`). Values are
templates (`${var}`), kept here as they were written: `tidegate.providers.templates` compiles
them and `tidegate.providers.described` renders them per request. The chat step also says how
to read the answer: `framing` (`sse`, `ndjson`, `lines`, `json`), `chunk_match`, `resp` (a
canonical field from a dotted path), `chunk_filter`, `usage` and `errors`.

docs/providers.md documents every field with examples.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PrivateAttr,
    field_validator,
    model_validator,
)

#: How a chunk filter or an error rule compares the value at a path.
Op = Literal["==", "!=", "in", "not_in", "exists"]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
#: How the upstream frames its answer.
Framing = Literal["sse", "ndjson", "lines", "json"]
#: The canonical usage counters a descriptor may map (events.Usage).
UsageName = Literal[
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens"
]
_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NamedValue(_Frozen):
    """One header, body field or query parameter: a name, a template, an optional convertor."""

    name: str = Field(min_length=1)
    value: Any = None
    convertor: str | None = None


#: Headers, body fields or parameters: the seed's list of `{name, value, convertor?}`, or a
#: mapping of name to template.
Values = tuple[NamedValue, ...] | dict[str, Any]


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class SetData(_Frozen):
    """A value kept from the auth step's answer: `name` (a template variable) ← dotted `field`."""

    name: str = Field(pattern=_IDENTIFIER)
    field: str = Field(min_length=1)


class AuthStep(_Frozen):
    """The token exchange: one request whose answer's `set_data` fields are kept per
    (descriptor, user) until they expire (`expires_in` path or a fixed `ttl`; without either,
    until the upstream refuses them with a 401)."""

    url: str = Field(min_length=1)
    method: Method = "POST"
    headers: Values = ()
    data: Values | None = None
    params: Values = ()
    set_data: tuple[SetData, ...] = Field(min_length=1)
    #: Dotted path of the token's lifetime in seconds, in the auth step's answer.
    expires_in: str | None = None
    #: A fixed lifetime in seconds, when the answer does not say.
    ttl: PositiveFloat | None = None
    #: Seconds before expiry at which a token is refreshed (at most half its lifetime).
    refresh_before: float = Field(default=30.0, ge=0)
    #: Seconds the auth step may take.
    timeout: PositiveFloat = 30.0

    _method = field_validator("method", mode="before")(_upper)


class ChunkFilter(_Frozen):
    """When the condition on the chunk's dotted path `name` holds, output field `field` is
    cleared for that chunk. A path the chunk lacks makes no condition hold but
    `exists` with `value: false`."""

    name: str = Field(min_length=1)
    value: Any = None
    op: Op = "=="
    field: str = Field(min_length=1)


class RespField(_Frozen):
    """A canonical output field (`text`, `reasoning`, `done`, `finish_reason`, `error`) taken
    from a dotted path of each chunk (or of the whole answer)."""

    name: str = Field(min_length=1)
    value: str = Field(min_length=1)


class ErrorRule(_Frozen):
    """What counts as an error, and whether it is worth another try.

    Either `status` (upstream HTTP statuses this rule is about) or a condition on a field of a
    chunk or a whole answer (`name`, `op`, `value`, as in `chunk_filter`), whose message is at
    the dotted path `message` and which stands for HTTP status `as_status`.
    """

    status: int | tuple[int, ...] | None = None
    name: str | None = None
    op: Op = "exists"
    value: Any = None
    message: str | None = None
    as_status: int = Field(default=502, ge=400, le=599)
    retryable: bool | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ErrorRule:
        if (self.status is None) == (self.name is None):
            raise ValueError("give either status (HTTP statuses) or name (a field condition)")
        return self

    def statuses(self) -> tuple[int, ...]:
        """The HTTP statuses of a status rule (empty for a field rule)."""
        if self.status is None:
            return ()
        return (self.status,) if isinstance(self.status, int) else self.status


class ChatStep(_Frozen):
    """The chat request, and how its answer maps to canonical events."""

    url: str = Field(min_length=1)
    method: Method = "POST"
    need_auth: bool = False
    headers: Values = ()
    data: Values | None = None
    params: Values = ()
    resp: tuple[RespField, ...] | dict[str, str] = ()
    chunk_match: str | None = None
    chunk_filter: ChunkFilter | tuple[ChunkFilter, ...] | None = None
    framing: Framing = "sse"
    #: The chunk that ends the stream (after `chunk_match`); null: the end of the body. When
    #: not given: `[DONE]` with `sse`, none otherwise (`end_marker()`).
    end: str | None = None
    usage: dict[UsageName, str] = Field(default_factory=dict)
    errors: tuple[ErrorRule, ...] = ()

    _method = field_validator("method", mode="before")(_upper)

    def resp_pairs(self) -> list[tuple[str, str]]:
        """`resp` as (canonical field, dotted path) pairs, whichever form it was written in."""
        if isinstance(self.resp, dict):
            return list(self.resp.items())
        return [(r.name, r.value) for r in self.resp]

    def end_marker(self) -> str | None:
        """The chunk that ends the stream: `end` when given, else `[DONE]` for SSE."""
        if "end" in self.model_fields_set:
            return self.end
        return "[DONE]" if self.framing == "sse" else None

    def filters(self) -> tuple[ChunkFilter, ...]:
        """`chunk_filter` as a tuple (one filter or several)."""
        if self.chunk_filter is None:
            return ()
        if isinstance(self.chunk_filter, ChunkFilter):
            return (self.chunk_filter,)
        return self.chunk_filter


class ProviderDescriptor(_Frozen):
    """One upstream API described as data; models use it with `provider: <name>`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    auth: AuthStep | None = None
    chat: ChatStep
    #: The environment values its templates read (`${env.NAME}`, `hmac_sha256:NAME`), filled
    #: in by the config loader: the only reader of the environment.
    _env: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment values its templates read, by name."""
        return self._env

    def bind_env(self, values: dict[str, str]) -> None:
        """Record the environment values its templates read (config loader only)."""
        self._env = dict(values)

    def secrets(self) -> list[str]:
        """Values to redact everywhere: whatever it reads from the environment."""
        return list(self._env.values())
