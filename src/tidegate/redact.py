"""Removes configured secrets from any text that leaves the process (errors, logs)."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"


class Redactor:
    """Replaces every occurrence of the given secrets with `[REDACTED]`."""

    __slots__ = ("_bytes_pattern", "_pattern")

    def __init__(self, secrets: Iterable[str]):
        values = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None
        self._bytes_pattern = (
            re.compile(b"|".join(re.escape(v.encode()) for v in values)) if values else None
        )

    def __call__(self, text: str) -> str:
        """`text` with the secrets replaced."""
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def bytes(self, data: bytes) -> bytes:
        """`data` with the secrets replaced (for upstream bytes forwarded untouched otherwise)."""
        if self._bytes_pattern is None:
            return data
        return self._bytes_pattern.sub(REDACTED.encode(), data)
