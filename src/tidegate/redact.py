"""Removes configured secrets from everything that leaves the process: responses, errors, logs.

Three shapes of the same rule:

- `Redactor(text)` / `Redactor.bytes(data)`: a whole text. Every occurrence of a secret is
  replaced, and so is a trailing prefix of one (at least `PREFIX_MIN` characters): a text that
  was cut, by the upstream or by a read limit, may end in the first half of a key.
- `Redactor.excerpt(text, limit)`: redact first, then shorten, so a cut never keeps half a key.
- `Redactor.stream()`: a `StreamRedactor` for a byte stream that reaches a client read by read
  (configured secrets; see `Redactor.stream` for the runtime ones).
  A secret split across reads is still caught: the bytes at the end of a read that could be the
  start of a secret wait for the next read (an SSE read ends with a blank line, which starts no
  secret, so in practice only reads cut inside an event wait).

Secrets come from the configuration, and, for redactors given the process's `RUNTIME_SECRETS`
book, from what the gateway learns while running (tokens a descriptor's auth step fetched,
per-user upstream keys): those are redacted from the moment they are learned.

A secret is only recognised as the contiguous bytes of its configured value. Secrets shorter
than `SECRET_MIN` characters are not treated as secrets (they would match everywhere).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable
from typing import AnyStr

REDACTED = "[REDACTED]"
SECRET_MIN = 4
PREFIX_MIN = 6
#: Secrets learned at run time shorter than this are not kept (a short field of an auth
#: answer, say a region, is not worth redacting everywhere).
RUNTIME_SECRET_MIN = 8


class SecretBook:
    """Secrets learned while running (tokens fetched by a descriptor's auth step, per-user
    upstream keys): redactors built with the book redact them too, from the moment they are
    added. Bounded: the newest `limit` values are kept (an old token has long expired)."""

    __slots__ = ("_limit", "_values", "version")

    def __init__(self, limit: int = 4096):
        self._limit = limit
        self._values: dict[str, None] = {}
        #: Changes whenever the values do; redactors compare it to rebuild lazily.
        self.version = 0

    def add(self, *values: str) -> None:
        """Learn secrets (values shorter than `RUNTIME_SECRET_MIN` are ignored)."""
        changed = False
        for value in values:
            if len(value) < RUNTIME_SECRET_MIN or value in self._values:
                continue
            self._values[value] = None
            changed = True
            while len(self._values) > self._limit:
                del self._values[next(iter(self._values))]
        if changed:
            self.version += 1

    def values(self) -> tuple[str, ...]:
        """Every secret currently known."""
        return tuple(self._values)


#: The process's book of secrets learned at run time, read by its redactors (logs, responses).
RUNTIME_SECRETS = SecretBook()


class _Compiled:
    """The secrets of a redactor and their patterns, replaced as one object (a log thread
    reading it while the loop adds a secret sees the old set or the new one, never a mix)."""

    __slots__ = ("byte_set", "bytes_pattern", "pattern", "secret_bytes", "secrets")

    def __init__(self, secrets: Iterable[str]):
        values = sorted({s for s in secrets if len(s) >= SECRET_MIN}, key=len, reverse=True)
        self.secrets = tuple(values)
        self.secret_bytes = tuple(v.encode() for v in values)
        self.byte_set = frozenset(b for v in self.secret_bytes for b in v)
        self.pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None
        self.bytes_pattern = (
            re.compile(b"|".join(re.escape(v) for v in self.secret_bytes)) if values else None
        )

    def open_prefix_bytes(self, data: builtins.bytes) -> int:
        if not data or data[-1] not in self.byte_set:
            return 0  # the common case: a read that ends in a byte no secret contains
        return _open_prefix(data, self.secret_bytes)


class Redactor:
    """Replaces every occurrence of the given secrets with `[REDACTED]`; with a `book`, also
    every secret learned at run time."""

    __slots__ = ("_book", "_c", "_configured", "_seen", "_static")

    def __init__(self, secrets: Iterable[str], book: SecretBook | None = None):
        self._static = tuple(secrets)
        self._book = book
        self._seen = book.version if book is not None else 0
        self._configured = _Compiled(self._static)
        self._c = (
            _Compiled((*self._static, *book.values())) if book is not None else self._configured
        )

    def _current(self) -> _Compiled:
        book = self._book
        if book is not None and book.version != self._seen:
            self._seen = book.version
            self._c = _Compiled((*self._static, *book.values()))
        return self._c

    def __bool__(self) -> bool:
        return bool(self._current().secrets)

    def __call__(self, text: str) -> str:
        """`text` with the secrets, and a trailing prefix of one, replaced."""
        c = self._current()
        if c.pattern is None:
            return text
        if _contains(text, c.secrets):
            text = c.pattern.sub(REDACTED, text)
        keep = _open_prefix(text, c.secrets)
        if keep >= PREFIX_MIN:
            text = text[:-keep] + REDACTED
        return text

    def bytes(self, data: bytes) -> bytes:
        """`data` with the secrets, and a trailing prefix of one, replaced."""
        c = self._current()
        if c.bytes_pattern is None:
            return data
        if _contains(data, c.secret_bytes):
            data = c.bytes_pattern.sub(REDACTED.encode(), data)
        keep = c.open_prefix_bytes(data)
        if keep >= PREFIX_MIN:
            data = data[:-keep] + REDACTED.encode()
        return data

    def excerpt(self, text: str, limit: int) -> str:
        """At most `limit` characters of `text`, redacted before it is cut."""
        text = self(text)
        return text if len(text) <= limit else text[:limit] + "…"

    def stream(self) -> StreamRedactor:
        """A redactor for one byte stream, read by read: the configured secrets only.

        Checking every chunk costs time in proportion to the number of secrets, and the
        secrets learned at run time can be many (a token per user); they cannot be in a
        streamed answer's text (the model never sees them), and an upstream's error, the one
        place they are echoed, is redacted with them before it is written (`excerpt`). An
        upstream's own error event forwarded as is in pass-through can only echo the
        requesting user's own upstream key back to that user.
        """
        return StreamRedactor(self._configured)


class StreamRedactor:
    """Redacts a byte stream fed in reads; call `flush()` at its end."""

    __slots__ = ("_c", "_held")

    def __init__(self, compiled: _Compiled):
        self._c = compiled
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        """The redacted bytes that can go out now (the possible start of a secret waits)."""
        c = self._c
        if c.bytes_pattern is None:
            return data
        if self._held:
            data = self._held + data
            self._held = b""
        if _contains(data, c.secret_bytes):
            data = c.bytes_pattern.sub(REDACTED.encode(), data)
        keep = c.open_prefix_bytes(data)
        if keep:
            self._held = data[-keep:]
            data = data[:-keep]
        return data

    def flush(self) -> bytes:
        """The end of the stream: what was held, or `[REDACTED]` if it is a long key prefix."""
        held, self._held = self._held, b""
        if len(held) >= PREFIX_MIN:
            return REDACTED.encode()
        return held


def _contains(data: AnyStr, secrets: tuple[AnyStr, ...]) -> bool:
    for secret in secrets:  # noqa: SIM110 (a plain loop: cheaper than any() with few secrets)
        if secret in data:
            return True
    return False


def _open_prefix(data: AnyStr, secrets: tuple[AnyStr, ...]) -> int:
    """The length of the longest suffix of `data` that is a proper prefix of a secret."""
    n = len(data)
    best = 0
    for secret in secrets:
        first = secret[:1]
        i = data.find(first, max(0, n - len(secret) + 1))
        while i >= 0 and n - i > best:
            if secret.startswith(data[i:]):
                best = n - i
                break
            i = data.find(first, i + 1)
    return best
