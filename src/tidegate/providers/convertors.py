"""Convertors: named functions a descriptor applies to a rendered value (the seed's
`convertor`), written `name` or `name:argument`.

Built-in:

| convertor | gives |
|---|---|
| `json` | the value as JSON text |
| `prompt` | messages (a list of `{role, content}`) flattened to one text |
| `base64` | the value's UTF-8 text, base64-encoded |
| `timestamp` (`:ms`, `:iso`) | the time given (ISO 8601), or now: Unix seconds (ms, ISO) |
| `hmac_sha256:NAME` | the hex HMAC-SHA256 of the value, keyed by environment variable NAME |
| `image_file` (`:dataurl`) | the image at the path, base64 (a data URL); `files.allowed_dirs` |

User convertors are Python callables named in the config (`convertors: {sign:
mypkg.sign:convert}`), called with the value and, if they take a second argument, a read-only
mapping of the request's variables; they may be `async`. All are resolved at start-up: an
unknown name, a module that does not import or a wrong signature is a configuration error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib
import inspect
import os
import stat
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from tidegate.settings import FilesConfig

#: A convertor: the value and the request's variables in, the new value (or an awaitable) out.
Convertor = Callable[[Any, Mapping[str, Any]], Any]

BUILTINS = ("json", "prompt", "base64", "timestamp", "hmac_sha256", "image_file")

#: Image types `image_file` accepts, recognised by their first bytes.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


class SpecError(ValueError):
    """A convertor that cannot be used: what is wrong and the fix (a configuration error)."""

    def __init__(self, problem: str, fix: str | None = None):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


class ConvertError(ValueError):
    """A convertor refused a value at request time (a file outside the allowed directories, a
    value of the wrong type); the message is safe to show to the client."""


def resolve(
    spec: str,
    plugins: Mapping[str, str],
    files: FilesConfig,
    env: Mapping[str, str],
) -> Convertor:
    """The convertor `spec` names; `SpecError` when it is unknown or unusable."""
    name, _, arg = spec.partition(":")
    if name in plugins:
        if arg:
            raise SpecError(
                f"convertor {name!r} is a plugin and takes no argument ({spec!r})",
                f"write just {name!r}",
            )
        return load_plugin(name, plugins[name])
    if name == "json":
        _no_arg(spec, arg)
        return _json
    if name == "prompt":
        _no_arg(spec, arg)
        return lambda value, _: flatten(value)
    if name == "base64":
        _no_arg(spec, arg)
        return _base64
    if name == "timestamp":
        if arg not in ("", "s", "ms", "iso"):
            raise SpecError(f"timestamp:{arg} is not a unit", "use timestamp, timestamp:ms or :iso")
        return _timestamp(arg or "s")
    if name == "hmac_sha256":
        if not arg:
            raise SpecError(
                "hmac_sha256 needs the environment variable holding its key",
                "write hmac_sha256:NAME and set NAME in the environment or .env",
            )
        key = env.get(arg)
        if not key:
            raise SpecError(
                f"environment variable {arg} (the key of hmac_sha256:{arg}) is not set",
                f"set {arg} in the environment or in .env",
            )
        return _hmac(key.encode())
    if name == "image_file":
        if arg not in ("", "base64", "dataurl"):
            raise SpecError(f"image_file:{arg} is not an output", "use image_file or :dataurl")
        if not files.allowed_dirs:
            raise SpecError(
                "image_file reads server files, but files.allowed_dirs lists no directory",
                "add the directories it may read under files.allowed_dirs",
            )
        return _image_file(files, dataurl=arg == "dataurl")
    known = ", ".join([*BUILTINS, *plugins])
    raise SpecError(
        f"unknown convertor {name!r}",
        f"use one of: {known}, or declare it under convertors: as module.path:function",
    )


def _no_arg(spec: str, arg: str) -> None:
    if arg:
        name = spec.partition(":")[0]
        raise SpecError(f"convertor {name!r} takes no argument ({spec!r})", f"write just {name!r}")


def load_plugin(name: str, target: str) -> Convertor:
    """The user convertor `module.path:function`, adapted to the two-argument form."""
    module, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(
            f"convertor {name!r}: cannot load {target!r}: {type(exc).__name__}: {exc}",
            "give an importable module path and a function name, module.path:function",
        ) from None
    if not callable(fn):
        raise SpecError(f"convertor {name!r}: {target!r} is not callable")
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    takes_context = len(params) >= 2
    if len(params) not in (1, 2) and not any(
        p.kind == p.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values()
    ):
        raise SpecError(
            f"convertor {name!r}: {target!r} takes {len(params)} arguments",
            "a convertor takes the value, and optionally the request's variables",
        )
    if takes_context:
        return lambda value, variables: fn(value, MappingProxyType(dict(variables)))
    return lambda value, _: fn(value)


async def apply(convertor: Convertor, value: Any, variables: Mapping[str, Any]) -> Any:
    """Run a convertor, awaiting it if it is asynchronous."""
    result = convertor(value, variables)
    if inspect.isawaitable(result):
        result = await result
    return result


# -- built-ins -----------------------------------------------------------------------------------


def _json(value: Any, _: Mapping[str, Any]) -> str:
    return orjson.dumps(value).decode()


def _base64(value: Any, _: Mapping[str, Any]) -> str:
    raw = value if isinstance(value, bytes) else _text(value).encode()
    return base64.b64encode(raw).decode("ascii")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _timestamp(unit: str) -> Convertor:
    def convert(value: Any, _: Mapping[str, Any]) -> Any:
        if value in (None, ""):
            seconds = time.time()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise ConvertError(f"timestamp: {value!r} is not an ISO 8601 date") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
        else:
            raise ConvertError(f"timestamp: cannot read a {type(value).__name__} as a time")
        if unit == "ms":
            return int(seconds * 1000)
        if unit == "iso":
            return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
        return int(seconds)

    return convert


def _hmac(key: bytes) -> Convertor:
    def convert(value: Any, _: Mapping[str, Any]) -> str:
        return hmac.new(key, _text(value).encode(), hashlib.sha256).hexdigest()

    return convert


def flatten(value: Any) -> str:
    """Messages as one text: a single message's text alone, else `role: text` blocks
    separated by blank lines (a string is returned as it is)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return "" if value is None else _text(value)
    blocks: list[tuple[str, str]] = []
    for m in value:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):
            parts = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
            text = "\n".join(str(p.get("text", "")) for p in parts)
        else:
            text = content if isinstance(content, str) else ""
        blocks.append((str(m.get("role") or "user"), text))
    return join_turns(blocks)


def join_turns(turns: list[tuple[str, str]]) -> str:
    """(role, text) turns as one text (see `flatten`)."""
    if len(turns) == 1:
        return turns[0][1]
    return "\n\n".join(f"{role}: {text}" for role, text in turns)


# -- image_file -----------------------------------------------------------------------------------


def _image_file(files: FilesConfig, *, dataurl: bool) -> Convertor:
    roots = allowed_roots(files.allowed_dirs)
    limit = files.max_bytes

    async def convert(value: Any, _: Mapping[str, Any]) -> str:
        if not isinstance(value, str) or not value:
            raise ConvertError("image_file: the value must be a file path")
        data, media_type = await asyncio.to_thread(read_allowed_file, value, roots, limit)
        encoded = base64.b64encode(data).decode("ascii")
        return f"data:{media_type};base64,{encoded}" if dataurl else encoded

    return convert


def allowed_roots(dirs: tuple[str, ...] | list[str]) -> list[tuple[Path, Path]]:
    """Each allowed directory as written (absolute) and resolved."""
    roots = []
    for d in dirs:
        spelled = Path(os.path.abspath(Path(d).expanduser()))
        roots.append((spelled, spelled.resolve()))
    return roots


def read_allowed_file(
    path_text: str, roots: list[tuple[Path, Path]], limit: int
) -> tuple[bytes, str]:
    """The bytes and media type of the image at `path_text`, which must lie below one of the
    allowed directories `roots` (see `allowed_roots`); a relative path is taken below the
    first. Refused with `ConvertError`: `..`, a symlink anywhere below the allowed directory
    (the path is resolved, then must equal itself and stay inside), anything but a regular
    file, more than `limit` bytes, and files that are not PNG, JPEG, GIF or WebP. Messages
    name no server path but the one given."""
    if "\0" in path_text:
        raise ConvertError("image_file: the path contains a NUL byte")
    given = Path(path_text)
    if ".." in given.parts:
        raise ConvertError(f"image_file: {path_text!r} is refused: '..' is not allowed")
    candidate: Path | None = None
    if not given.is_absolute():
        if roots:
            candidate = roots[0][1] / given
    else:
        for spelled, resolved in roots:
            for base in (spelled, resolved):
                if given.is_relative_to(base):
                    candidate = resolved / given.relative_to(base)
                    break
            if candidate is not None:
                break
    if candidate is None:
        raise ConvertError(f"image_file: {path_text!r} is outside files.allowed_dirs")
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ConvertError(f"image_file: {path_text!r} does not exist") from None
    if real != candidate:
        raise ConvertError(f"image_file: {path_text!r} is refused: it is or passes a symlink")
    return _read_image(real, path_text, limit)


def _read_image(path: Path, shown: str, limit: int) -> tuple[bytes, str]:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        raise ConvertError(f"image_file: {shown!r} cannot be opened") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConvertError(f"image_file: {shown!r} is not a regular file")
        if info.st_size > limit:
            raise ConvertError(f"image_file: {shown!r} is larger than {limit} bytes")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ConvertError(f"image_file: {shown!r} is larger than {limit} bytes")
    media_type = _media_type(data)
    if media_type is None:
        raise ConvertError(f"image_file: {shown!r} is not a PNG, JPEG, GIF or WebP image")
    return data, media_type


def _media_type(data: bytes) -> str | None:
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


__all__ = [
    "BUILTINS",
    "ConvertError",
    "Convertor",
    "SpecError",
    "allowed_roots",
    "apply",
    "flatten",
    "join_turns",
    "load_plugin",
    "read_allowed_file",
    "resolve",
]
