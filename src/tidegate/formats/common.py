"""What every inbound request schema shares: the base model, unions, and one error per body.

Each schema is a plain pydantic model validated once per request with `model_validate(body)`:
strict (no `"2"` for an integer, no `1` for `true`), and `extra="allow"`, so fields the gateway
does not read still pass through to a same-format upstream (and are named as dropped when the
request is translated). Unions of values of different JSON kinds (`"a string or an array of
content parts"`) and of objects told apart by their `type` member are chosen by a small
discriminator function rather than tried member by member, so a wrong value gives one error at
the field itself. Their tags are written `<kind>` and never appear in the paths that clients
see.

`Schema.validate` turns the first error of a `ValidationError` into one `InvalidRequest` naming
the field path as `a.b[0].c` (object members by the name the client used, array items by index)
in the wording of the endpoint's format.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, ValidationError
from pydantic_core import ErrorDetails

from tidegate.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)

#: Bounds on the arrays of a request, so that validating one costs milliseconds at most
#: (about 4 µs an item): far above what a conversation needs, far below what stalls the loop.
MAX_MESSAGES = 4096
MAX_PARTS = 1024
MAX_TOOLS = 512
MAX_STOP = 64


class Inbound(BaseModel):
    """Base of every inbound request model: strict types, unknown fields kept."""

    model_config = ConfigDict(extra="allow", strict=True)


# -- unions --------------------------------------------------------------------------------------

_KIND_TAGS: dict[type, str] = {
    str: "<string>",
    list: "<array>",
    dict: "<object>",
    bool: "<boolean>",
    int: "<integer>",
    float: "<number>",
}


def _json_kind(value: Any) -> str | None:
    return _KIND_TAGS.get(type(value))


def by_kind(expected: str) -> Discriminator:
    """Pick a union member by the value's JSON kind: tag members `<string>`, `<array>`,
    `<object>`, `<boolean>`, `<integer>` or `<number>`. Any other kind is an error at the field
    itself, worded "must be {expected}"."""
    return Discriminator(_json_kind, custom_error_type="wrong_kind", custom_error_message=expected)


def by_type(known: frozenset[str], expected: str = "an object") -> Discriminator:
    """Pick a union member of objects by their `type` member: `<{type}>` for a type in `known`,
    `<other>` for any other object (so new block types still pass through), and an error worded
    "must be {expected}" for a value that is not an object."""

    def tag(value: Any) -> str | None:
        if type(value) is not dict:
            return None
        kind = value.get("type")
        return f"<{kind}>" if type(kind) is str and kind in known else "<other>"

    return Discriminator(tag, custom_error_type="wrong_kind", custom_error_message=expected)


# -- errors --------------------------------------------------------------------------------------

Wording = Callable[[str, str], str]


def colon_wording(path: str, problem: str) -> str:
    """`messages[0].content: must be ...`: the Anthropic and Gemini way."""
    return f"{path}: {problem}"


def quoted_wording(path: str, problem: str) -> str:
    """`'model' is required ...` for a top-level field, `messages[0].role must be ...` for a
    nested one: the wording the OpenAI endpoint and /stream-ask have always used."""
    if path.isidentifier():
        return f"'{path}' {problem}"
    return f"{path} {problem}"


_TYPE_PROBLEMS = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be an array",
    "wrong_kind": "",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "greater than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}
_INDEX = re.compile(r"\[\d+\]")


def path_of(loc: tuple[int | str, ...]) -> str:
    """An error location as `a.b[0].c`, without the `<kind>` tags of discriminated unions."""
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        elif item.startswith("<") and item.endswith(">"):
            continue
        else:
            out += f".{item}" if out else item
    return out


def describe(value: Any) -> str:
    """A JSON value's kind, for "(got ...)"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def problem_of(error: ErrorDetails, hint: str | None) -> str:
    """What is wrong, as "is required", "must be ..." (with what was sent when its kind was
    wrong). A `hint` says what the field must be; one starting with "is " is the whole problem."""
    kind = error["type"]
    if kind == "too_long":
        return f"must have at most {(error.get('ctx') or {}).get('max_length')} items"
    wrong_kind = kind in _TYPE_PROBLEMS
    got = f" (got {describe(error['input'])})" if wrong_kind else ""
    if hint is not None and hint.startswith("is "):
        return hint + ("" if kind == "missing" else got)
    if kind == "missing":
        return f"is required ({hint})" if hint else "is required"
    if hint is not None:
        return f"must be {hint}{got}"
    if kind == "wrong_kind":
        return f"must be {error['msg']}{got}"
    if wrong_kind:
        return _TYPE_PROBLEMS[kind] + got
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"must be {words} {ctx.get(key)}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"

    return "is invalid: " + str(error["msg"])


class Schema(Generic[M]):
    """A request model and the wording of its format's errors.

    `hints` map a field path with its indices written `[]` (e.g. `messages[].content`) to what
    that field must be ("a number from 0 to 2"), for messages more precise than the type alone.
    """

    __slots__ = ("_hints", "_wording", "model")

    def __init__(
        self, model: type[M], *, wording: Wording, hints: Mapping[str, str] | None = None
    ) -> None:
        self.model = model
        self._wording = wording
        self._hints = dict(hints or {})

    def validate(self, body: dict[str, Any]) -> M:
        """`body` as the model, or `InvalidRequest` naming the first field that is wrong."""
        try:
            return self.model.model_validate(body)
        except ValidationError as exc:
            raise self.invalid(exc) from None

    def invalid(self, exc: ValidationError) -> InvalidRequest:
        """The one client error a validation failure stands for (its first error)."""
        error = exc.errors(include_url=False)[0]
        path = path_of(error["loc"]) or "request body"
        hint = self._hints.get(_INDEX.sub("[]", path))
        return InvalidRequest(self._wording(path, problem_of(error, hint)))
