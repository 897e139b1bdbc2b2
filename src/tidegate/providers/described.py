"""Providers described as data (`providers:` in the config; docs/providers.md).

A descriptor (descriptors.py, the shape of seed 001's) compiles into a `Descriptor`: its
templates (templates.py), convertors (convertors.py), paths and regular expressions, checked
once at start-up with every problem named by location and fix. At run time a
`DescribedProvider` is a `Provider` like the built-in ones, so every endpoint serves it through
the translation path:

- `build_call` keeps the canonical request on the call; `open` (async) looks up the user's own
  upstream key, gets the auth step's values from the token cache (credentials.py), renders the
  chat request, sends it, and after a 401 refreshes the token once and sends it again;
- `stream_parser` reads the answer in its framing (`sse` with the one SSE decoder, `ndjson` and
  `lines` with the one line splitter, `json` whole) and maps each chunk to canonical events
  through `resp`, `chunk_filter`, `usage` and `errors`.

`${user}` is the authenticated identity's user (`auth.api_keys: [{key, user}]`), `anonymous`
without one; no request field can set it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import orjson
from pydantic import Field

from tidegate.descriptors import AuthStep, ChatStep, NamedValue, ProviderDescriptor
from tidegate.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from tidegate.events import ChatRequest, Completion
from tidegate.formats import openai_chat
from tidegate.formats.base import StreamParser, error_message_of, excerpt
from tidegate.formats.described import (
    OUTPUT_FIELDS,
    AnswerSpec,
    DescribedStreamParser,
    FieldRule,
    Path,
    as_text,
    completion_from_wire,
    valid_path,
)
from tidegate.providers.base import Provider
from tidegate.providers.convertors import (
    ConvertError,
    Convertor,
    SpecError,
    apply,
    join_turns,
    resolve,
)
from tidegate.providers.credentials import ProviderRuntime, Token, default_runtime
from tidegate.providers.http import UpstreamCall, UpstreamClient, UpstreamResponse, join_url
from tidegate.providers.templates import (
    Node,
    Ref,
    Scope,
    TemplateError,
    compile_template,
)
from tidegate.settings import (
    ConfigProblem,
    DeploymentSettings,
    FilesConfig,
    HttpDeploymentSettings,
)

#: Variables every chat template may use, from the request.
REQUEST_VARS = (
    "model",
    "messages",
    "prompt",
    "query",
    "system",
    "stream",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "tools",
    "tool_choice",
    "response_format",
    "session_id",
    "user",
)
#: Variables from the model's settings (chat and auth templates).
SETTINGS_VARS = ("api_key", "base_url")
#: What auth templates may use besides `vars:` and the environment.
AUTH_VARS = (*SETTINGS_VARS, "user", "model")
#: The most of an auth step's answer that is read.
AUTH_BODY_LIMIT = 256 * 1024
_WIRE_VARS = frozenset({"messages", "tools", "tool_choice", "response_format"})


class DescribedSettings(HttpDeploymentSettings):
    """A model served by a described provider: `provider:` names the descriptor; `base_url`
    (for relative URLs and `${base_url}`), `api_key` (`${api_key}`), `model` (`${model}`),
    extra `headers`, and `vars:` (more template variables, `${name}`)."""

    provider: str
    vars: dict[str, Any] = Field(default_factory=dict)


# -- requests ------------------------------------------------------------------------------------


class CompiledValue:
    """One header, body field or parameter: name, template, convertor, where it was written."""

    __slots__ = ("convertor", "name", "node", "where")

    def __init__(self, name: str, node: Node, convertor: Convertor | None, where: str):
        self.name = name
        self.node = node
        self.convertor = convertor
        self.where = where


class Step:
    """A request template: method, URL, headers, body and parameters."""

    __slots__ = ("data", "headers", "method", "params", "url", "where")

    def __init__(
        self,
        method: str,
        url: Node,
        headers: list[CompiledValue],
        data: list[CompiledValue] | Node | None,
        params: list[CompiledValue],
        where: str,
    ):
        self.method = method
        self.url = url
        self.headers = headers
        self.data = data
        self.params = params
        self.where = where

    def refs(self) -> list[tuple[Ref, str]]:
        """Every reference, with where it was written."""
        found = [(r, f"{self.where}.url") for r in self.url.refs()]
        for v in (*self.headers, *self.params):
            found += [(r, v.where) for r in v.node.refs()]
        if isinstance(self.data, Node):
            found += [(r, f"{self.where}.data") for r in self.data.refs()]
        elif self.data is not None:
            found += [(r, v.where) for v in self.data for r in v.node.refs()]
        return found


class Rendered:
    """A rendered request."""

    __slots__ = ("body", "headers", "method", "url")

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes):
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body


async def _values(fields: list[CompiledValue], scope: Scope) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        value = f.node.render(scope)
        if value is None:
            continue
        if f.convertor is not None:
            try:
                value = await apply(f.convertor, value, scope.values)
            except ConvertError as exc:
                raise InvalidRequest(f"{f.where}: {exc}") from None
            if value is None:
                continue
        out[f.name] = value
    return out


def step_url(url: str, base_url: str) -> str:
    """Where a step's rendered URL goes: a path is joined to the model's `base_url`; an
    absolute URL is the API's own address, and a model with a `base_url` sends its path there
    instead (a proxy, a staging server, a test double)."""
    if url.startswith("/"):
        return join_url(base_url, url)
    if base_url and url.startswith(("http://", "https://")):
        parts = urlsplit(url)
        return join_url(base_url, parts.path + (f"?{parts.query}" if parts.query else ""))
    return url


async def render_step(step: Step, scope: Scope, base_url: str) -> Rendered:
    """The request a step stands for in `scope`; `InvalidRequest` when a convertor refuses a
    value or a header would hold a line break."""
    url = step_url(as_text(step.url.render(scope)), base_url)
    headers: dict[str, str] = {}
    for name, value in (await _values(step.headers, scope)).items():
        text = as_text(value)
        if "\r" in text or "\n" in text:
            raise InvalidRequest(f"{step.where}.headers: {name} would contain a line break")
        headers[name] = text
    params = await _values(step.params, scope)
    if params:
        query = urlencode({k: as_text(v) for k, v in params.items()})
        url += ("&" if "?" in url else "?") + query
    body = b""
    if step.data is not None:
        data = step.data.render(scope) if isinstance(step.data, Node) else None
        if not isinstance(step.data, Node):
            data = await _values(step.data, scope)
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        if content_type is not None and "x-www-form-urlencoded" in content_type.lower():
            pairs = data.items() if isinstance(data, dict) else []
            body = urlencode({k: as_text(v) for k, v in pairs}).encode()
        else:
            body = orjson.dumps(data)
            if content_type is None:
                headers["Content-Type"] = "application/json"
    return Rendered(step.method, url, headers, body)


# -- compiling -----------------------------------------------------------------------------------


class Descriptor:
    """A descriptor compiled and checked: its steps, answer, and what its templates read."""

    def __init__(
        self,
        source: ProviderDescriptor,
        auth: Step | None,
        chat: Step,
        answer: AnswerSpec,
    ):
        self.source = source
        self.name = source.name
        self.auth = auth
        self.chat = chat
        self.answer = answer
        self.need_auth = source.chat.need_auth and auth is not None
        self.env = source.env
        self.chat_refs = chat.refs()
        self.auth_refs = auth.refs() if auth is not None else []
        auth_step = source.auth
        self.set_data = [(s.name, Path(s.field)) for s in auth_step.set_data] if auth_step else []
        self.expires_in = Path(auth_step.expires_in) if auth_step and auth_step.expires_in else None
        self.ttl = auth_step.ttl if auth_step else None
        self.refresh_before = auth_step.refresh_before if auth_step else 0.0
        self.auth_timeout = auth_step.timeout if auth_step else 30.0
        self.status_rules = {s: r for r in source.chat.errors for s in r.statuses()}
        self.field_rules = [FieldRule(r) for r in source.chat.errors if r.name is not None]
        names = {r.name for r, _ in self.chat_refs if not r.ns}
        names |= {r.name for r, _ in self.chat_refs if r.ns == "request"}
        #: The plain variables (and request fields) the chat step reads.
        self.reads = frozenset(names)


def compile_descriptor(
    source: ProviderDescriptor,
    where: str,
    plugins: Mapping[str, str],
    files: FilesConfig,
) -> tuple[Descriptor | None, list[ConfigProblem]]:
    """Compile and check a descriptor; every problem found, each with its location and fix
    (the descriptor is None when there is any)."""
    problems: list[ConfigProblem] = []
    env = source.env

    def values(spec: Any, at: str) -> list[CompiledValue]:
        out: list[CompiledValue] = []
        items: list[tuple[str, Any, str | None, str]]
        if isinstance(spec, dict):
            items = [(str(k), v, None, f"{at}.{k}") for k, v in spec.items()]
        else:
            items = [
                (v.name, v.value, v.convertor, f"{at}[{i}]")
                for i, v in enumerate(spec)
                if isinstance(v, NamedValue)
            ]
        for name, raw, convertor_spec, loc in items:
            value_at = f"{loc}.value" if not isinstance(spec, dict) else loc
            try:
                node = compile_template(raw)
            except TemplateError as exc:
                problems.append((value_at, str(exc), "write ${name}, and $${ for a literal ${"))
                continue
            convertor = None
            if convertor_spec:
                try:
                    convertor = resolve(convertor_spec, plugins, files, env)
                except SpecError as exc:
                    problems.append((f"{loc}.convertor", exc.problem, exc.fix))
                    continue
            out.append(CompiledValue(name, node, convertor, value_at))
        return out

    def step(spec: AuthStep | ChatStep, at: str) -> Step | None:
        count = len(problems)
        try:
            url = compile_template(spec.url)
        except TemplateError as exc:
            problems.append((f"{at}.url", str(exc), None))
            url = compile_template("")
        if "${" not in spec.url and not spec.url.startswith(("http://", "https://", "/")):
            problems.append(
                (
                    f"{at}.url",
                    f"{spec.url!r} is neither an http(s) URL nor a path",
                    "write https://host/path, or /path to join it to the model's base_url",
                )
            )
        data: list[CompiledValue] | Node | None = None
        if spec.data is not None:
            if spec.method in ("GET", "DELETE") and spec.data:
                problems.append(
                    (f"{at}.data", f"a {spec.method} request has no body", "move it to params:")
                )
            elif isinstance(spec.data, dict):
                try:
                    data = compile_template(spec.data)
                except TemplateError as exc:
                    problems.append((f"{at}.data", str(exc), None))
            else:
                data = values(spec.data, f"{at}.data")
        headers = values(spec.headers, f"{at}.headers")
        params = values(spec.params, f"{at}.params")
        if len(problems) > count:
            return None
        return Step(spec.method, url, headers, data, params, at)

    auth = step(source.auth, f"{where}.auth") if source.auth is not None else None
    chat_spec = source.chat
    chat = step(chat_spec, f"{where}.chat")
    if chat_spec.need_auth and source.auth is None:
        problems.append(
            (
                f"{where}.chat.need_auth",
                "is true, but the descriptor has no auth step",
                "add auth: (url, method, headers, data, set_data), or set need_auth: false",
            )
        )
    match = None
    if chat_spec.chunk_match is not None:
        try:
            match = re.compile(chat_spec.chunk_match)
        except re.error as exc:
            problems.append(
                (
                    f"{where}.chat.chunk_match",
                    f"{chat_spec.chunk_match!r} is not a regular expression: {exc}",
                    "write a Python regular expression whose first group is the chunk's JSON",
                )
            )
        else:
            if match.groups < 1:
                problems.append(
                    (
                        f"{where}.chat.chunk_match",
                        f"{chat_spec.chunk_match!r} has no group",
                        "put the chunk's JSON in parentheses, as in data: (.*)",
                    )
                )
    problems += _path_problems(source, where)
    if source.auth is not None:
        for i, sd in enumerate(source.auth.set_data):
            if sd.name in (*REQUEST_VARS, *SETTINGS_VARS):
                problems.append(
                    (
                        f"{where}.auth.set_data[{i}].name",
                        f"{sd.name!r} is a built-in variable",
                        "give the kept value another name",
                    )
                )
    for ref, at in (chat.refs() if chat else []) + (auth.refs() if auth else []):
        if ref.ns == "env" and ref.default is None and ref.name not in env:
            problems.append(
                (
                    at,
                    f"environment variable {ref.name} (${{env.{ref.name}}}) is not set",
                    f"set {ref.name} in the environment or in .env, "
                    f"or give a default with ${{env.{ref.name}:-value}}",
                )
            )
    kept = {sd.name for sd in source.auth.set_data} if source.auth else set()
    for ref, at in auth.refs() if auth else []:
        if not ref.ns and ref.name not in AUTH_VARS and ref.name in (*REQUEST_VARS, *kept):
            problems.append(
                (
                    at,
                    f"the auth step cannot use ${{{ref.name}}}: a token is shared by every "
                    "request of a user",
                    f"use {', '.join(AUTH_VARS)}, vars: or ${{env.NAME}}",
                )
            )
        if ref.ns == "request":
            problems.append(
                (at, f"the auth step cannot use ${{{ref.text}}}", "use vars: or ${env.NAME}")
            )
    if not chat_spec.need_auth:
        for ref, at in chat.refs() if chat else []:
            if not ref.ns and ref.name in kept:
                problems.append(
                    (
                        at,
                        f"${{{ref.name}}} is kept by the auth step, but chat.need_auth is false",
                        "set need_auth: true",
                    )
                )
    if problems or chat is None:
        return None, problems
    return Descriptor(source, auth, chat, AnswerSpec(chat_spec, source.name, match)), []


def _path_problems(source: ProviderDescriptor, where: str) -> list[ConfigProblem]:
    chat = source.chat
    problems: list[ConfigProblem] = []
    fix = "write a dotted path such as choices.0.delta.content (no spaces, no [ ])"
    paths: list[tuple[str, str]] = []
    names = dict(chat.resp_pairs())
    for i, (name, path) in enumerate(chat.resp_pairs()):
        at = f"{where}.chat.resp[{i}]" if not isinstance(chat.resp, dict) else f"{where}.chat.resp"
        if name not in OUTPUT_FIELDS:
            problems.append(
                (
                    f"{at}.name",
                    f"{name!r} is not a canonical field",
                    f"use {', '.join(OUTPUT_FIELDS)}",
                )
            )
        paths.append((f"{at}.value", path))
    several = isinstance(chat.chunk_filter, tuple)
    for i, f in enumerate(chat.filters()):
        at = f"{where}.chat.chunk_filter" + (f"[{i}]" if several else "")
        paths.append((f"{at}.name", f.name))
        if f.field not in names:
            problems.append(
                (
                    f"{at}.field",
                    f"{f.field!r} is not an output field of resp",
                    f"use one of: {', '.join(names) or '(resp maps nothing)'}",
                )
            )
    for name, path in chat.usage.items():
        paths.append((f"{where}.chat.usage.{name}", path))
    for i, rule in enumerate(chat.errors):
        if rule.name is not None:
            paths.append((f"{where}.chat.errors[{i}].name", rule.name))
        if rule.message is not None:
            paths.append((f"{where}.chat.errors[{i}].message", rule.message))
    if source.auth is not None:
        for i, sd in enumerate(source.auth.set_data):
            paths.append((f"{where}.auth.set_data[{i}].field", sd.field))
        if source.auth.expires_in is not None:
            paths.append((f"{where}.auth.expires_in", source.auth.expires_in))
    for at, path in paths:
        if not valid_path(path):
            problems.append((at, f"{path!r} is not a dotted path", fix))
    return problems


def model_problems(
    descriptor: Descriptor, model: DescribedSettings, where: str
) -> list[ConfigProblem]:
    """What is wrong with the model at `where` that uses the descriptor: variables its
    templates read that neither the request, the settings, the auth step nor the model's
    `vars:` define, and a missing `base_url` for relative URLs."""
    problems: list[ConfigProblem] = []
    own = set(model.vars)
    for name in sorted(own):
        if name in (*REQUEST_VARS, *SETTINGS_VARS) or not re.fullmatch(r"[A-Za-z_]\w*", name):
            problems.append(
                (
                    f"{where}.vars.{name}",
                    f"{name!r} is a built-in variable or not a plain name",
                    "rename it (letters, digits and _)",
                )
            )
    kept = {name for name, _ in descriptor.set_data}
    known_chat = {*REQUEST_VARS, *SETTINGS_VARS, *kept, *own}
    known_auth = {*AUTH_VARS, *own}
    for refs, known in ((descriptor.chat_refs, known_chat), (descriptor.auth_refs, known_auth)):
        for ref, loc in refs:
            unknown = (not ref.ns and ref.name not in known) or (
                ref.ns == "vars" and ref.name not in own
            )
            if unknown:
                problems.append(
                    (
                        loc,
                        f"unknown variable ${{{ref.text}}} (for {where}, {model.name})",
                        f"use one of: {', '.join(sorted(known))}; or define {ref.name} under "
                        f"vars: of {where}",
                    )
                )
    source = descriptor.source
    urls = [source.chat.url] + ([source.auth.url] if source.auth is not None else [])
    if any(url.startswith("/") for url in urls) and not model.base_url:
        problems.append(
            (
                f"{where}.base_url",
                f"is required: provider {descriptor.name!r} has URLs relative to it",
                "set base_url to the API root, for example https://api.example.com/v1",
            )
        )
    return problems


# -- the provider --------------------------------------------------------------------------------


class DescribedProvider(Provider):
    """A model served by a descriptor (one subclass per descriptor: `provider_for`)."""

    descriptor: ClassVar[Descriptor]
    settings: ClassVar[type[DeploymentSettings]] = DescribedSettings
    key_header = None
    config: DescribedSettings

    def __init__(self, config: DeploymentSettings):
        super().__init__(config)
        d = self.descriptor
        self._base = self.config.base_url or ""
        self._vars = dict(self.config.vars)
        self._extra = {k: v.get_secret_value() for k, v in self.config.headers.items()}
        self._key = self.config.api_key.get_secret_value() if self.config.api_key else None
        self.url = self.stream_url = step_url(d.source.chat.url, self._base)
        self._fingerprints: dict[str | None, str] = {}

    @property
    def label(self) -> str:
        return f"{self.config.name}@{self.name}"

    # -- calls -----------------------------------------------------------------------------

    def build_call(self, request: ChatRequest) -> UpstreamCall:
        """A call that carries the canonical request: `open` renders it (it needs the user's
        key and token, which only an async step can get)."""
        reads = self.descriptor.reads
        present = (
            ("max_tokens", request.max_tokens is not None),
            ("temperature", request.temperature is not None),
            ("top_p", request.top_p is not None),
            ("top_k", request.top_k is not None),
            ("stop", bool(request.stop)),
            ("tools", bool(request.tools)),
            ("tool_choice", request.tool_choice not in (None, "auto")),
            ("response_format", request.json_mode or request.json_schema is not None),
        )
        dropped = [name for name, given in present if given and name not in reads]
        has_images = any(p.type == "image" for m in request.messages for p in m.content)
        if has_images and "messages" not in reads:
            dropped.append("images")
        if request.max_tokens is None and self.config.max_tokens is not None:
            request = replace(request, max_tokens=self.config.max_tokens)
        call = UpstreamCall(self.url, b"", {}, stream=request.stream, dropped=dropped)
        call.source = request
        return call

    def build_passthrough(self, body: dict[str, Any], stream: bool) -> UpstreamCall:
        """Never used: a described format has no inbound endpoint."""
        raise NotImplementedError(f"{self.name} has no pass-through")

    def stream_parser(self, *, side: bool = False) -> StreamParser:
        """A parser of this descriptor's answers."""
        return DescribedStreamParser(self.descriptor.answer, max_event_bytes=self.max_event_bytes)

    def parse_completion(self, body: bytes) -> Completion:
        """A whole answer (any framing: a stream is read whole) as a completion."""
        return completion_from_wire(self.descriptor.answer, body, self.max_response_bytes)

    def usage_of_body(self, body: bytes) -> Completion:
        """See `parse_completion`."""
        return self.parse_completion(body)

    def error_from_status(
        self, status: int, body: bytes, retry_after: float | None
    ) -> UpstreamError:
        """An error answer, read by the descriptor's `errors` rules when one applies."""
        d = self.descriptor
        message = None
        retryable = None
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            obj = None
        for rule in d.field_rules:
            if obj is not None and rule.condition.holds(obj):
                found = rule.message.get(obj) if rule.message is not None else None
                message = as_text(found) if found is not None else None
                retryable = rule.retryable
                break
        status_rule = d.status_rules.get(status)
        if status_rule is not None and status_rule.retryable is not None:
            retryable = status_rule.retryable
        err = UpstreamStatusError(
            f"upstream returned HTTP {status}: {message or error_message_of(body) or 'no message'}",
            upstream_status=status,
            retry_after=retry_after,
        )
        err.retryable = retryable
        return err

    async def open(self, client: UpstreamClient, call: UpstreamCall) -> UpstreamResponse:
        """Render and send the chat request: the user's key, the auth step's token (refreshed
        once after a 401, then sent again), the request's variables."""
        d = self.descriptor
        request = call.source
        if request is None:
            raise UpstreamProtocolError(f"{self.name}: a described call without its request")
        runtime = self.runtime or default_runtime()
        key = await self._key_for(runtime, call.user)
        scope = self._scope(request, call.user, key)
        token: Token | None = None
        if d.need_auth:
            token = await self._token(runtime, client, call.user, key)
            scope.values.update(token.values)
        sent = await self._render(call, scope)
        response = await client.send(
            sent, connect_timeout=self.timeouts.connect, model=self.config.name
        )
        if response.status == 401 and token is not None:
            response.close()
            token = await self._token(runtime, client, call.user, key, stale=token.id)
            scope.values.update(token.values)
            sent = await self._render(call, scope)
            response = await client.send(
                sent, connect_timeout=self.timeouts.connect, model=self.config.name
            )
        return response

    async def _render(self, call: UpstreamCall, scope: Scope) -> UpstreamCall:
        rendered = await render_step(self.descriptor.chat, scope, self._base)
        headers = {**rendered.headers, **self._extra}
        if self.descriptor.answer.framing != "json":
            headers.setdefault("Accept-Encoding", "identity")
        else:
            headers.setdefault("Accept-Encoding", "gzip, deflate")
        sent = UpstreamCall(
            rendered.url, rendered.body, headers, stream=call.stream, method=rendered.method
        )
        sent.user = call.user
        return sent

    async def _key_for(self, runtime: ProviderRuntime, user: str | None) -> str | None:
        if user is not None and runtime.keys is not None:
            own = await runtime.keys.find(user, self.config.name, self.name)
            if own is not None:
                return own
        return self._key

    def _scope(self, request: ChatRequest, user: str | None, key: str | None) -> Scope:
        reads = self.descriptor.reads
        model = self.config.upstream_model
        values: dict[str, Any] = {
            **self._vars,
            "model": model,
            "stream": self.descriptor.answer.framing != "json",
            "user": user or "anonymous",
            "api_key": key,
            "base_url": self._base or None,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "top_k": request.top_k,
            "stop": request.stop or None,
            "session_id": request.session_id,
        }
        if reads & _WIRE_VARS:
            wire = openai_chat.request_to_wire(request, model)[0]
            for name in _WIRE_VARS:
                values[name] = wire.get(name)
        if "prompt" in reads:
            values["prompt"] = join_turns([(m.role, m.text()) for m in request.messages])
        if "system" in reads:
            system = [m.text() for m in request.messages if m.role in ("system", "developer")]
            values["system"] = "\n\n".join(system) or None
        if "query" in reads:
            values["query"] = request.last_user_text()
        return Scope(values, self.descriptor.env, self._vars, request.inbound)

    # -- auth --------------------------------------------------------------------------------

    def token_key(self, user: str | None, key: str | None) -> str:
        """The token cache key: the seed's `{apiname}_a_{user}` and a fingerprint of the
        credentials (two models of one descriptor with different keys never share a token)."""
        fingerprint = self._fingerprints.get(key)
        if fingerprint is None:
            material = orjson.dumps(
                [key, self._base, self._vars, self.config.upstream_model],
                option=orjson.OPT_SORT_KEYS,
                default=str,
            )
            fingerprint = hashlib.sha256(material).hexdigest()[:16]
            if len(self._fingerprints) > 1024:
                self._fingerprints.clear()
            self._fingerprints[key] = fingerprint
        return f"{self.name}_a_{user or 'anonymous'}:{fingerprint}"

    async def _token(
        self,
        runtime: ProviderRuntime,
        client: UpstreamClient,
        user: str | None,
        key: str | None,
        stale: str | None = None,
    ) -> Token:
        d = self.descriptor

        async def fetch() -> tuple[dict[str, Any], float | None]:
            return await self.fetch_token(client, user, key)

        try:
            return await runtime.tokens.get(
                self.token_key(user, key),
                fetch,
                margin=d.refresh_before,
                lock_ttl=d.auth_timeout + 5,
                stale=stale,
            )
        except TimeoutError:
            raise UpstreamAuthFailed(
                self.name,
                f"no token within {d.auth_timeout + 5:g}s (another instance holds "
                "the refresh lock)",
            ) from None

    async def fetch_token(
        self, client: UpstreamClient, user: str | None, key: str | None
    ) -> tuple[dict[str, Any], float | None]:
        """Run the auth step: the `set_data` values of its answer and their lifetime."""
        d = self.descriptor
        assert d.auth is not None
        scope = Scope(
            {
                **self._vars,
                "api_key": key,
                "base_url": self._base or None,
                "user": user or "anonymous",
                "model": self.config.upstream_model,
            },
            d.env,
            self._vars,
        )
        try:
            rendered = await render_step(d.auth, scope, self._base)
        except GatewayError as exc:
            raise UpstreamAuthFailed(
                self.name, f"its request could not be built: {exc.message}"
            ) from None
        call = UpstreamCall(
            rendered.url, rendered.body, rendered.headers, stream=False, method=rendered.method
        )
        try:
            async with asyncio.timeout(d.auth_timeout):
                response = await client.send(
                    call, connect_timeout=self.timeouts.connect, model=self.config.name
                )
                try:
                    body = await response.read_body(AUTH_BODY_LIMIT)
                finally:
                    response.close()
        except TimeoutError:
            raise UpstreamAuthFailed(self.name, f"no answer within {d.auth_timeout:g}s") from None
        except UpstreamError as exc:
            raise UpstreamAuthFailed(
                self.name, f"the auth endpoint failed: {exc.message}"
            ) from None
        if not 200 <= response.status < 300:
            raise UpstreamAuthFailed(
                self.name,
                f"the auth endpoint answered HTTP {response.status}",
                upstream_status=response.status,
                detail=f"auth answer: {excerpt(body)[:500]}",
            )
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamAuthFailed(self.name, "its answer is not JSON") from None
        values: dict[str, Any] = {}
        for i, (name, path) in enumerate(d.set_data):
            found = path.get(answer)
            if found is None:
                raise UpstreamAuthFailed(
                    self.name,
                    f"its answer has no {path.text!r} (auth.set_data[{i}].field)",
                )
            values[name] = found
        lifetime: float | None = d.ttl
        if d.expires_in is not None:
            found = d.expires_in.get(answer)
            if (isinstance(found, int | float) and not isinstance(found, bool) and found > 0) or (
                isinstance(found, str) and found.isdigit() and int(found) > 0
            ):
                lifetime = float(found)
        return values, lifetime


def provider_for(descriptor: Descriptor) -> type[DescribedProvider]:
    """The provider class of a descriptor (`provider: <name>`)."""
    return type(
        f"DescribedProvider[{descriptor.name}]",
        (DescribedProvider,),
        {
            "name": descriptor.name,
            "wire_format": f"described:{descriptor.name}",
            "descriptor": descriptor,
        },
    )


def compile_all(
    descriptors: tuple[ProviderDescriptor, ...],
    plugins: Mapping[str, str],
    files: FilesConfig,
) -> tuple[dict[str, Descriptor], list[ConfigProblem]]:
    """Every descriptor of a config, compiled, and every problem found."""
    compiled: dict[str, Descriptor] = {}
    problems: list[ConfigProblem] = []
    for i, source in enumerate(descriptors):
        done, found = compile_descriptor(source, f"providers[{i}] ({source.name})", plugins, files)
        problems += found
        if done is not None:
            compiled[source.name] = done
    return compiled, problems
