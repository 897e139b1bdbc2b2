"""Removes configured secrets from everything that leaves the process: responses, errors, logs.

Three shapes of the same rule:

- `Redactor(text)` / `Redactor.bytes(data)`: a whole text. Every occurrence of a secret is
  replaced, and so is a trailing prefix of one (at least `PREFIX_MIN` characters): a text that
  was cut, by the upstream or by a read limit, may end in the first half of a key.
- `Redactor.excerpt(text, limit)`: redact first, then shorten, so a cut never keeps half a key.
- `Redactor.stream()`: a `StreamRedactor` for a byte stream that reaches a client read by read.
  A secret split across reads is still caught: the bytes at the end of a read that could be the
  start of a secret wait for the next read (an SSE read ends with a blank line, which starts no
  secret, so in practice only reads cut inside an event wait).

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


class Redactor:
    """Replaces every occurrence of the given secrets with `[REDACTED]`."""

    __slots__ = ("_byte_set", "_bytes_pattern", "_pattern", "_secret_bytes", "_secrets")

    def __init__(self, secrets: Iterable[str]):
        values = sorted({s for s in secrets if len(s) >= SECRET_MIN}, key=len, reverse=True)
        self._secrets = tuple(values)
        self._secret_bytes = tuple(v.encode() for v in values)
        self._byte_set = frozenset(b for v in self._secret_bytes for b in v)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None
        self._bytes_pattern = (
            re.compile(b"|".join(re.escape(v) for v in self._secret_bytes)) if values else None
        )

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        """`text` with the secrets, and a trailing prefix of one, replaced."""
        if self._pattern is None:
            return text
        if _contains(text, self._secrets):
            text = self._pattern.sub(REDACTED, text)
        keep = _open_prefix(text, self._secrets)
        if keep >= PREFIX_MIN:
            text = text[:-keep] + REDACTED
        return text

    def bytes(self, data: bytes) -> bytes:
        """`data` with the secrets, and a trailing prefix of one, replaced."""
        if self._bytes_pattern is None:
            return data
        if _contains(data, self._secret_bytes):
            data = self._bytes_pattern.sub(REDACTED.encode(), data)
        keep = self._open_prefix_bytes(data)
        if keep >= PREFIX_MIN:
            data = data[:-keep] + REDACTED.encode()
        return data

    def excerpt(self, text: str, limit: int) -> str:
        """At most `limit` characters of `text`, redacted before it is cut."""
        text = self(text)
        return text if len(text) <= limit else text[:limit] + "…"

    def stream(self) -> StreamRedactor:
        """A redactor for one byte stream, read by read."""
        return StreamRedactor(self)

    def _open_prefix_bytes(self, data: builtins.bytes) -> int:
        if not data or data[-1] not in self._byte_set:
            return 0  # the common case: a read that ends in a byte no secret contains
        return _open_prefix(data, self._secret_bytes)


class StreamRedactor:
    """Redacts a byte stream fed in reads; call `flush()` at its end."""

    __slots__ = ("_held", "_redactor")

    def __init__(self, redactor: Redactor):
        self._redactor = redactor
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        """The redacted bytes that can go out now (the possible start of a secret waits)."""
        r = self._redactor
        if r._bytes_pattern is None:
            return data
        if self._held:
            data = self._held + data
            self._held = b""
        if _contains(data, r._secret_bytes):
            data = r._bytes_pattern.sub(REDACTED.encode(), data)
        keep = r._open_prefix_bytes(data)
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
