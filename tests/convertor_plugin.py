"""User convertors for the tests: loaded by dotted path from a config's `convertors:`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any


def shout(value: Any) -> str:
    """One argument: the value, upper-cased."""
    return str(value).upper()


async def sign(value: Any, variables: Mapping[str, Any]) -> str:
    """Two arguments, asynchronous: the value signed with the request's model name."""
    await asyncio.sleep(0)
    return f"{value}|signed-for-{variables['model']}"


def three(a: Any, b: Any, c: Any) -> Any:
    """Not a convertor: too many arguments."""
    return a


NOT_CALLABLE = 42
