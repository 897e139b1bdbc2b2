"""A fake LLM upstream on 127.0.0.1 that speaks six formats and misbehaves on request.

`server.py` runs it, `scenarios.py` says what each scenario does, `formats/` holds one module
per wire format, `content.py` what a correct answer contains.
"""

from tests.fake_upstream.content import (
    ANSWER_PIECES,
    ANSWER_TEXT,
    API_KEY,
    COMPLETION_TOKENS,
    EXPECTED_TEXT,
    FIX_PIECES,
    FIX_TEXT,
    PROMPT_TOKENS,
    R_CACHED,
    R_INPUT,
    R_OUTPUT,
    R_REASONING,
    REASONING_PIECES,
    REASONING_TEXT,
    SOURCES,
    T_INPUT,
    T_OUTPUT,
    TEXT_PIECES,
    TOOL_CALLS,
)
from tests.fake_upstream.scenarios import CHAOS, SCENARIOS, Recorded
from tests.fake_upstream.server import FakeUpstream

__all__ = [
    "ANSWER_PIECES",
    "ANSWER_TEXT",
    "API_KEY",
    "CHAOS",
    "COMPLETION_TOKENS",
    "EXPECTED_TEXT",
    "FIX_PIECES",
    "FIX_TEXT",
    "PROMPT_TOKENS",
    "REASONING_PIECES",
    "REASONING_TEXT",
    "R_CACHED",
    "R_INPUT",
    "R_OUTPUT",
    "R_REASONING",
    "SCENARIOS",
    "SOURCES",
    "TEXT_PIECES",
    "TOOL_CALLS",
    "T_INPUT",
    "T_OUTPUT",
    "FakeUpstream",
    "Recorded",
]
