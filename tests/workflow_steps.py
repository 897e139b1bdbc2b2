"""Step functions the workflow tests configure (loaded by the gateway by dotted path)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator


def shout(question: str, outputs: dict[str, str]) -> str:
    """A sync function: the first step's output in capitals."""
    return outputs["draft"].upper()


def words(question: str, outputs: dict[str, str], *, sep: str = " ") -> Iterator[str]:
    """A sync generator with an argument from the config: the input, a word at a time."""
    for word in question.split():
        yield word + sep


async def count(question: str, outputs: dict[str, str]) -> str:
    """An async function."""
    await asyncio.sleep(0)
    return f"{len(outputs)} earlier step(s)"


async def slowly(question: str, outputs: dict[str, str]) -> AsyncIterator[str]:
    """An async generator that would take a minute."""
    for i in range(600):
        yield f"{i} "
        await asyncio.sleep(0.1)


def fails(question: str, outputs: dict[str, str]) -> str:
    """A function that raises."""
    raise ValueError("the warehouse is closed")
