"""`${var}` templates of provider descriptors: compiled once, rendered per request.

A template is any JSON value. Strings may hold references:

- `${name}`: a variable of the request, the model's settings or the auth step's `set_data`;
- `${env.NAME}` (or `${env.NAME:-default}`): the environment, read once at start-up;
- `${request.field}` (a dotted path): a field of the client's request body by name, null when
  the client did not send it;
- `${vars.name}`: a value under the model's `vars:` (also reachable as `${name}`);
- `$${` is a literal `${`.

Substitution is typed: a string that is exactly one reference becomes the variable's value as
it is (a list for `${messages}`, a boolean for `${stream}`, a number for `${max_tokens}`,
null when unset); inside a longer string a value becomes text (booleans `true`/`false`, null
nothing, lists and objects JSON). Mappings and lists are rendered member by member; a mapping
member that renders to null is left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tidegate.formats.described import as_text

_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME = re.compile(
    r"^(?:(?P<ns>env|request|vars)\.)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?P<path>(?:\.[A-Za-z0-9_-]+)*)(?::-(?P<default>.*))?$",
    re.DOTALL,
)


class TemplateError(ValueError):
    """A template that cannot be compiled; the message says what is wrong with it."""


class Ref:
    """One `${...}` reference."""

    __slots__ = ("default", "name", "ns", "path")

    def __init__(self, ns: str, name: str, path: tuple[str, ...], default: str | None):
        self.ns = ns  # "" (a variable), "env", "request" or "vars"
        self.name = name
        self.path = path
        self.default = default

    @property
    def text(self) -> str:
        """The reference as written, without `${}`."""
        head = f"{self.ns}.{self.name}" if self.ns else self.name
        tail = "".join("." + p for p in self.path)
        return head + tail + (f":-{self.default}" if self.default is not None else "")

    def resolve(self, scope: Scope) -> Any:
        """The value this reference stands for in `scope` (None when unset)."""
        if not self.ns:
            return scope.values.get(self.name)
        if self.ns == "env":
            value = scope.env.get(self.name)
            return self.default if value is None else value
        if self.ns == "vars":
            return scope.vars.get(self.name)
        value = scope.body.get(self.name) if scope.body is not None else None
        for step in self.path:
            value = step_into(value, step)
        return value


class Scope:
    """What references resolve to for one request: variables by name, the environment values
    the descriptor reads, the model's `vars:`, and the client's request body."""

    __slots__ = ("body", "env", "values", "vars")

    def __init__(
        self,
        values: dict[str, Any],
        env: Mapping[str, str],
        vars: Mapping[str, Any],
        body: Mapping[str, Any] | None = None,
    ):
        self.values = values
        self.env = env
        self.vars = vars
        self.body = body


class Node:
    """A compiled template."""

    __slots__ = ()

    def render(self, scope: Scope) -> Any:
        """The value of this template in `scope`."""
        raise NotImplementedError

    def refs(self) -> list[Ref]:
        """Every reference in the template."""
        return []


class Const(Node):
    """A value without references."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def render(self, scope: Scope) -> Any:
        return self.value


class Var(Node):
    """A string that is exactly one reference: the value as it is (typed)."""

    __slots__ = ("ref",)

    def __init__(self, ref: Ref):
        self.ref = ref

    def render(self, scope: Scope) -> Any:
        return self.ref.resolve(scope)

    def refs(self) -> list[Ref]:
        return [self.ref]


class Text(Node):
    """A string with references inside: always text."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[str | Ref]):
        self.parts = parts

    def render(self, scope: Scope) -> Any:
        return "".join(p if isinstance(p, str) else as_text(p.resolve(scope)) for p in self.parts)

    def refs(self) -> list[Ref]:
        return [p for p in self.parts if isinstance(p, Ref)]


class Obj(Node):
    """A mapping with templates inside; members that render to null are left out."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[str, Node]]):
        self.items = items

    def render(self, scope: Scope) -> Any:
        out: dict[str, Any] = {}
        for key, node in self.items:
            value = node.render(scope)
            if value is not None:
                out[key] = value
        return out

    def refs(self) -> list[Ref]:
        return [r for _, node in self.items for r in node.refs()]


class Arr(Node):
    """A list with templates inside."""

    __slots__ = ("nodes",)

    def __init__(self, nodes: list[Node]):
        self.nodes = nodes

    def render(self, scope: Scope) -> Any:
        return [node.render(scope) for node in self.nodes]

    def refs(self) -> list[Ref]:
        return [r for node in self.nodes for r in node.refs()]


def compile_template(value: Any) -> Node:
    """Compile a JSON value with `${...}` references; `TemplateError` on a malformed one."""
    if isinstance(value, str):
        return _compile_string(value)
    if isinstance(value, dict):
        items = [(str(k), compile_template(v)) for k, v in value.items()]
        if all(isinstance(n, Const) for _, n in items):
            return Const(value)
        return Obj(items)
    if isinstance(value, list | tuple):
        nodes = [compile_template(v) for v in value]
        if all(isinstance(n, Const) for n in nodes):
            return Const(list(value))
        return Arr(nodes)
    return Const(value)


def _compile_string(text: str) -> Node:
    if "$" not in text:
        return Const(text)
    parts: list[str | Ref] = []
    at = 0
    for match in _REF.finditer(text):
        if match.start() > at:
            parts.append(_literal(text[at : match.start()], text))
        at = match.end()
        if match.group(0) == "$${":
            parts.append("${")
            continue
        parts.append(parse_ref(match.group(1)))
    if at < len(text):
        parts.append(_literal(text[at:], text))
    if len(parts) == 1 and isinstance(parts[0], Ref):
        return Var(parts[0])
    if all(isinstance(p, str) for p in parts):
        return Const("".join(p for p in parts if isinstance(p, str)))
    return Text(parts)


def _literal(segment: str, text: str) -> str:
    if "${" in segment:
        raise TemplateError(f"'${{' without a closing '}}' in {text!r} (write $${{ for a literal)")
    return segment


def parse_ref(inner: str) -> Ref:
    """The reference written as `${inner}`; `TemplateError` when it is not a valid one."""
    match = _NAME.match(inner.strip())
    if match is None:
        raise TemplateError(
            f"${{{inner}}} is not a variable reference (a name such as ${{model}}, "
            "${env.NAME}, ${request.field} or ${vars.name})"
        )
    ns = match.group("ns") or ""
    path = tuple(p for p in match.group("path").split(".") if p)
    default = match.group("default")
    if default is not None and ns != "env":
        raise TemplateError(f"${{{inner}}}: a default (:-) is only for ${{env.NAME:-value}}")
    if path and ns != "request":
        raise TemplateError(
            f"${{{inner}}}: only ${{request.field.path}} may have a dotted path; use a plain name"
        )
    return Ref(ns, match.group("name"), path, default)


def step_into(value: Any, step: str) -> Any:
    """One step of a dotted path: a member of a mapping, or an item of a list by index."""
    if isinstance(value, dict):
        return value.get(step)
    if isinstance(value, list) and (step.isdigit() or (step[:1] == "-" and step[1:].isdigit())):
        index = int(step)
        if -len(value) <= index < len(value):
            return value[index]
    return None
