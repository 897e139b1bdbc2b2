"""Inbound APIs, one module per API, each exporting `ROUTES`.

Adding an API: write its module (a `ChatEndpoint` and `chat_routes(...)` for a chat API, plain
`Route`s otherwise) and add it to `MODULES`.
"""

from __future__ import annotations

from tidegate.endpoints import (
    admin,
    anthropic_messages,
    dashboard,
    gemini,
    health,
    metrics,
    openai_chat,
    openai_responses,
    playground,
    stream_ask,
    streams,
    workflows,
)
from tidegate.endpoints.base import Route

MODULES = (
    health,
    stream_ask,
    openai_chat,
    anthropic_messages,
    gemini,
    openai_responses,
    workflows,
    streams,
    playground,
    dashboard,
    metrics,
    admin,
)


def all_routes() -> list[Route]:
    """Every route of every registered API, in registration order."""
    return [route for module in MODULES for route in module.ROUTES]
