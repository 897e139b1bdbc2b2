"""The conversations the gateway keeps for `/stream-ask` and `/ask`, per client and session.

An upstream with no memory of its own (every provider but AnythingLLM, whose workspace keeps
each thread by `sessionId`) gets the earlier turns of a session from here. A session is a JSON
list of turns, `[{"role": "user" | "assistant", "content": text}, ...]`, kept in the shared
state store (memory, or Redis for several instances) under `session:<identity>:<session_id>`.
The identity is the id of the client key the request was authenticated with (`anonymous` when
no keys are configured): it never comes from the request body, so no client can name another
client's session. An identity has no `:` in it, so keys of different identities never meet.

A session is trimmed to a budget of tokens, estimated as characters / 4: the oldest exchanges
(a user turn and its answer) are dropped whole until the rest fits, so a single exchange
larger than the whole budget is not kept. Each answer stored resets the session's time to live.
An exchange is stored only once its answer is complete (the caller's promise).

Two answers of one client finishing together must both be kept, so the read-modify-write of an
append holds a lock per identity (a handful of milliseconds; per identity rather than per
session, so that the in-memory store keeps one lock per client key, not one per session).
"""

from __future__ import annotations

from typing import Any

import orjson

from tidegate.errors import GatewayError
from tidegate.events import Message, Part
from tidegate.logs import log
from tidegate.state import State

ANONYMOUS = "anonymous"
#: Seconds an append may wait for the identity's lock (others are appending meanwhile).
LOCK_SECONDS = 5.0


class SessionStoreUnavailable(GatewayError):
    """The shared state store could not be read: the session cannot be continued."""

    status = 503
    code = "session_store_unavailable"


def estimate_tokens(text: str) -> int:
    """A token count for `text`, estimated as characters / 4 (rounded up)."""
    return (len(text) + 3) // 4


def trim(turns: list[dict[str, str]], budget: int) -> list[dict[str, str]]:
    """The newest turns that fit in `budget` estimated tokens, dropping the oldest exchange
    (two turns) at a time."""
    total = sum(estimate_tokens(t["content"]) for t in turns)
    start = 0
    while total > budget and start < len(turns):
        step = 2 if start + 1 < len(turns) else 1
        total -= sum(estimate_tokens(t["content"]) for t in turns[start : start + step])
        start += step
    return turns[start:]


def session_key(identity: str | None, session_id: str) -> str:
    """The state key of one identity's session."""
    return f"session:{identity or ANONYMOUS}:{session_id}"


class Sessions:
    """The kept conversations in a state store, trimmed to `budget_tokens`, kept `ttl` s."""

    __slots__ = ("budget_tokens", "state", "ttl")

    def __init__(self, state: State, *, budget_tokens: int, ttl: float):
        self.state = state
        self.budget_tokens = budget_tokens
        self.ttl = ttl

    async def _read(self, key: str) -> list[dict[str, str]] | None:
        raw = await self.state.get(key)
        if raw is None:
            return None
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(data, list):
            return []
        return [
            {"role": t["role"], "content": t["content"]}
            for t in data
            if isinstance(t, dict)
            and t.get("role") in ("user", "assistant")
            and isinstance(t.get("content"), str)
        ]

    async def turns(self, identity: str | None, session_id: str) -> list[Message]:
        """The kept turns of a session, oldest first, within the budget (none if unknown).

        Raises `SessionStoreUnavailable` (503) when the store cannot be read."""
        try:
            turns = await self._read(session_key(identity, session_id))
        except Exception as exc:
            raise SessionStoreUnavailable(
                "the session store is unavailable; try again, or send no session_id",
                detail=f"{type(exc).__name__}: {exc}",
            ) from exc
        kept = trim(turns or [], self.budget_tokens)
        return [Message(t["role"], [Part("text", text=t["content"])]) for t in kept]

    async def remember(
        self, identity: str | None, session_id: str, question: str, answer: str
    ) -> bool:
        """Append one complete exchange to a session (creating it) and trim it; false, with a
        warning logged, when the store failed (the answer itself was delivered regardless)."""
        key = session_key(identity, session_id)
        try:
            async with self.state.lock(f"session-lock:{identity or ANONYMOUS}", LOCK_SECONDS):
                turns = await self._read(key) or []
                turns += [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
                turns = trim(turns, self.budget_tokens)
                await self.state.set(key, orjson.dumps(turns), ttl=self.ttl)
        except Exception as exc:
            log.warning("session %r not updated: %s: %s", session_id, type(exc).__name__, exc)
            return False
        return True

    async def forget(self, identity: str | None, session_id: str) -> bool:
        """Forget a session; false if there was none."""
        key = session_key(identity, session_id)
        try:
            if await self.state.get(key) is None:
                return False
            await self.state.delete(key)
        except Exception as exc:
            raise SessionStoreUnavailable(
                "the session store is unavailable; try again",
                detail=f"{type(exc).__name__}: {exc}",
            ) from exc
        return True
