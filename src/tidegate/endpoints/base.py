"""What an endpoint is: routes with handlers, and for the chat APIs one declared interface.

A `Route` is a method, a path template (`/v1/models/{model}`), a handler, the error shape of
its API and the key it needs. Each endpoint module exports `ROUTES`; `endpoints/__init__.py`
lists the modules, and the app collects their routes the way providers are registered.

A chat API is a `ChatEndpoint`: it reads a request into a `ChatCall` (the model, streamed or
not, the body for a same-format upstream, the canonical request for any other, and how to write
the answer in its own format), and `chat_routes` serves it through the one generic chat flow
(endpoints/chat.py, `chat_routes`). Adding an inbound API is one module and one registry line.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from tidegate.asgi import Request, Send
from tidegate.context import RequestContext
from tidegate.errors import GatewayError
from tidegate.events import ChatRequest, Completion
from tidegate.formats.base import StreamEncoder
from tidegate.providers.base import Provider
from tidegate.services import Services

Handler = Callable[[Services, RequestContext, Request, Send], Awaitable[None]]
ErrorRenderer = Callable[[GatewayError], bytes]
#: Who may call a route: anyone; a client key; an admin key; or a client key *or* (when none is
#: presented) a `token` query parameter that the handler checks itself (a stream's resume
#: token, for a browser `EventSource`, which cannot send headers).
Access = Literal["public", "client", "admin", "client_or_token"]

_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Route:
    """A method and path template served by a handler; `{name}` segments become path params
    (`request.params`), the last one of a template matching the rest of the path."""

    method: str
    path: str
    handler: Handler
    render_error: ErrorRenderer
    access: Access = "client"
    #: How this API's clients send their key, for the message of a 401.
    key_hint: str = "'Authorization: Bearer <key>'"

    @property
    def templated(self) -> bool:
        """True when the path has `{name}` parameters."""
        return "{" in self.path

    def pattern(self) -> re.Pattern[str]:
        """The path template as a regular expression."""
        names = _PARAM.findall(self.path)
        regex = re.escape(self.path)
        for i, name in enumerate(names):
            last = i == len(names) - 1 and self.path.endswith("{" + name + "}")
            group = f"(?P<{name}>{'.+' if last else '[^/]+?'})"
            regex = regex.replace(re.escape("{" + name + "}"), group)
        return re.compile(regex + "$")


@dataclass(slots=True)
class ChatCall:
    """One chat request, read by its endpoint: everything the generic flow needs."""

    model: str
    stream: bool
    #: The canonical request, built only if a deployment needs translation.
    canonical: Callable[[], ChatRequest]
    #: Canonical events to the client's wire format.
    encoder: StreamEncoder
    #: A whole completion in the client's wire format.
    render: Callable[[Completion], bytes]
    #: The body as the client sent it, and the upstream format that takes it as is (None:
    #: always translate).
    body: dict[str, Any] | None = None
    wire_format: str | None = None
    #: The fields a deployment could not carry, in this API's own words (None: as named).
    dropped_for: Callable[[Provider, list[str]], list[str]] | None = None


class ChatEndpoint(ABC):
    """An inbound chat API served by the generic chat flow."""

    #: How this API's errors look before a stream began.
    render_error: ErrorRenderer
    #: How this API's SDK sends its key (for the message of a 401).
    key_hint: str = "'Authorization: Bearer <key>'"

    @abstractmethod
    def read(self, services: Services, ctx: RequestContext, request: Request) -> ChatCall:
        """Validate the request (400 naming the field) and read it into a `ChatCall`."""


class RouteTable:
    """Finds the route of a method and path: exact paths first, then templates."""

    __slots__ = ("_exact", "_templated")

    def __init__(self, routes: list[Route]):
        self._exact: dict[str, dict[str, Route]] = {}
        self._templated: list[tuple[re.Pattern[str], Route]] = []
        for route in routes:
            if route.templated:
                self._templated.append((route.pattern(), route))
            else:
                self._exact.setdefault(route.path, {})[route.method] = route

    def match(self, path: str) -> dict[str, tuple[Route, dict[str, str]]]:
        """Every route serving `path`, by method, with its path params (empty: no route)."""
        exact = self._exact.get(path)
        if exact is not None:
            return {method: (route, {}) for method, route in exact.items()}
        found: dict[str, tuple[Route, dict[str, str]]] = {}
        for pattern, route in self._templated:
            m = pattern.match(path)
            if m is not None and route.method not in found:
                found[route.method] = (route, m.groupdict())
        return found
