"""How a /stream-ask request becomes a conversation: tasks, templates, context, images.

Invariants: a plain question is sent exactly as it came (nothing added); a template's value is
inserted once and never re-read as a placeholder; a fence in the user's code cannot close the
template's block; a paragraph whose values are all empty is left out.
"""

from __future__ import annotations

from typing import Any

import pytest

from tidegate.formats.stream_ask import validate_request
from tidegate.prompts import DEFAULTS, build_chat, language_of, render
from tidegate.settings import TaskPrompt, TasksConfig

CODE = "def add(x):\n    return x + y\n"
TRACEBACK = "Traceback (most recent call last):\n  File \"a.py\", line 2\nNameError: name 'y'"


def chat_of(tasks: TasksConfig | None = None, **body: Any) -> tuple[list[tuple[str, str]], str]:
    chat, turn = build_chat(validate_request(body), "m", tasks or TasksConfig(), [])
    return [(m.role, m.text()) for m in chat.messages], turn


def test_a_plain_question_is_sent_as_it_came() -> None:
    messages, turn = chat_of(question="  What is tidegate? ")
    assert messages == [("user", "  What is tidegate? ")]
    assert turn == "  What is tidegate? "


def test_fix_renders_its_template_with_code_and_traceback() -> None:
    messages, turn = chat_of(task="fix", code=CODE, error=TRACEBACK, context={"file": "src/a.py"})
    assert messages[0] == ("system", DEFAULTS["fix"].system)
    assert "diagnose the error from the traceback" in DEFAULTS["fix"].system.lower()
    assert messages[1] == ("user", turn)
    assert turn.startswith("Fix this code.\n\n```python\ndef add(x):\n    return x + y\n```")
    assert f"It fails with this error:\n```text\n{TRACEBACK}\n```" in turn
    assert turn.endswith("The file open in the editor: `src/a.py` (python).")


def test_the_client_system_comes_before_the_task_system() -> None:
    messages, _ = chat_of(task="review", code="x = 1", system="Answer in French.")
    assert [role for role, _ in messages] == ["system", "system", "user"]
    assert messages[0][1] == "Answer in French."
    assert messages[1][1] == DEFAULTS["review"].system


def test_empty_paragraphs_are_left_out() -> None:
    _, turn = chat_of(task="fix", question="The loop never ends.")
    assert turn == "Fix this code.\n\nThe loop never ends."


def test_a_fence_in_the_code_cannot_close_the_block() -> None:
    code = 'doc = """\n```python\nx\n```\n"""'
    _, turn = chat_of(task="explain", code=code)
    assert turn.startswith(f"Explain this code.\n\n````\n{code}\n````")


def test_placeholders_inside_values_are_not_expanded() -> None:
    _, turn = chat_of(task="explain", code="print('{error}')", error="boom")
    assert "print('{error}')" in turn
    assert "boom" not in turn


def test_configured_templates_override_one_field_at_a_time() -> None:
    tasks = TasksConfig(fix=TaskPrompt(template="FIX {file}: {code} / {error} / {nope}"))
    messages, turn = chat_of(tasks, task="fix", code="x", error="E", context={"file": "a.py"})
    assert messages[0] == ("system", DEFAULTS["fix"].system)
    assert turn.startswith("FIX a.py: x / E / {nope}")


def test_context_becomes_fenced_blocks_naming_file_and_language() -> None:
    _, turn = chat_of(
        question="Why is this slow?",
        context={"file": "lib/q.ts", "code": "const a = 1;\n", "selection": "a + 1"},
    )
    assert turn == (
        "Why is this slow?\n\n"
        "The file `lib/q.ts` (typescript):\n```typescript\nconst a = 1;\n```\n\n"
        "Selected in `lib/q.ts`:\n```typescript\na + 1\n```"
    )


def test_a_selection_shown_as_the_code_is_not_repeated() -> None:
    _, turn = chat_of(
        task="explain", question="q", context={"selection": "a = 1", "language": "py"}
    )
    assert turn.count("a = 1") == 1


def test_images_become_image_parts() -> None:
    body = {"question": "What is this?", "images": ["data:image/jpeg;base64,/9j/\n4AAQ"]}
    chat, _ = build_chat(validate_request(body), "m", TasksConfig(), [])
    parts = chat.messages[-1].content
    assert [p.type for p in parts] == ["text", "image"]
    assert (parts[1].media_type, parts[1].data) == ("image/jpeg", "/9j/4AAQ")


def test_history_and_sampling_settings_are_carried() -> None:
    body = {
        "question": "And now?",
        "history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "session_id": "s",
        "mode": "query",
    }
    chat, _ = build_chat(validate_request(body), "m", TasksConfig(), [])
    assert [(m.role, m.text()) for m in chat.messages] == [
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "And now?"),
    ]
    assert (chat.max_tokens, chat.temperature, chat.top_p) == (50, 0.2, 0.9)
    assert (chat.session_id, chat.mode, chat.task) == ("s", "query", None)


@pytest.mark.parametrize(
    ("file", "language"),
    [("a.py", "python"), ("C:\\src\\Main.JAVA", "java"), ("Makefile", ""), (None, "")],
)
def test_language_of(file: str | None, language: str) -> None:
    assert language_of(file) == language


def test_render_keeps_longer_fences_and_unknown_braces() -> None:
    assert render("`````\n{code}\n`````", {"code": "x"}) == "`````\nx\n`````"
    assert render("{json} {code}", {"code": "x"}) == "{json} x"
