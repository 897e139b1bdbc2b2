"""What the fake upstream answers: the text, reasoning, tool calls and token counts tests expect."""

from __future__ import annotations

API_KEY = "sk-fake-upstream-SECRET-4b1d9e7a2c"
TEXT_PIECES = ["Hello", ", wor", "ld! ", "héllo ", "你好 ", "🌊"]
EXPECTED_TEXT = "".join(TEXT_PIECES)
PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
SOURCES = [{"id": "doc-1", "title": "handbook.md", "text": "Tidegate handbook", "score": 0.87}]

REASONING_PIECES = ["Let me ", "think."]
REASONING_TEXT = "".join(REASONING_PIECES)
ANSWER_PIECES = ["The answer ", "is 42."]
ANSWER_TEXT = "".join(ANSWER_PIECES)
# Reasoning scenario usage: 20 prompt tokens (8 cached); 15 output tokens (9 reasoning).
R_INPUT, R_CACHED, R_OUTPUT, R_REASONING = 20, 8, 15, 9

TOOL_CALLS = [
    ("call_w1", "get_weather", {"city": "Paris"}, ['{"ci', 'ty": "Pa', 'ris"}']),
    ("call_t2", "get_time", {"tz": "Europe/Paris"}, ['{"tz": ', '"Europe/Paris"}']),
]
T_INPUT, T_OUTPUT = 30, 12

# A coding assistant's answer to a fix task: a diagnosis, then the corrected code in one block.
FIX_PIECES = [
    "The traceback ends in `NameError: name 'y' is not defined`: ",
    "`y` is never assigned.\n\n",
    "```python\ndef add(x, y=0):\n",
    "    return x + y  # fixed: y is a parameter now\n",
    "```\n",
]
FIX_TEXT = "".join(FIX_PIECES)
