"""The coding tasks of `/stream-ask` and `/ask`, and the conversation a request becomes.

A task is a system prompt and a template for the user turn (`stream_ask.tasks.<name>` in the
config; a field left out keeps its default from `DEFAULTS`). A template names the request's
values as `{question}`, `{code}`, `{error}`, `{language}`, `{file}` and `{selection}`; any other
brace is left as written, and each value is inserted once (a `{code}` inside the user's code
stays text). Two rules keep the rendered text clean whatever a request leaves out:

- a paragraph of the template (text between blank lines) whose placeholders all have empty
  values is left out, so a fix without a traceback has no empty "the error" block;
- every fence (three or more backticks) of the template grows longer than the longest run of
  backticks in the values, so code that itself contains a fence cannot end the block early.

`{code}` is the request's `code`, else the context's `selection`, else the context's `code`;
`{language}` is the context's `language`, else guessed from the file's extension.

The conversation, in order: the client's `system` and the task's system prompt (system
messages), the turns a session kept, the client's `history`, then the user turn: the rendered
template, the `context` as fenced blocks naming the file and language (a piece already shown
as `{code}` is not repeated), and the `images` as image parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from tidegate.events import ChatRequest, Message, Part
from tidegate.formats.stream_ask import Context, StreamAskRequest
from tidegate.settings import TaskPrompt, TasksConfig


@dataclass(frozen=True, slots=True)
class Prompt:
    """A task's system prompt (empty: none) and its user-turn template."""

    system: str
    template: str


_CODE_BLOCK = "```{language}\n{code}\n```"

#: The built-in prompts of each task (docs/protocol.md lists them).
DEFAULTS: dict[str, Prompt] = {
    "ask": Prompt(system="", template="{question}"),
    "generate": Prompt(
        system=(
            "You are an expert programmer. Write correct, complete and idiomatic code for the "
            "request: give the code in one fenced block, then explain briefly how to use it."
        ),
        template="{question}",
    ),
    "fix": Prompt(
        system=(
            "You are an expert debugger. Diagnose the error from the traceback: name its cause "
            "in one or two sentences, then give the corrected code in one fenced block, with a "
            "short comment on each line you changed."
        ),
        template=(
            f"Fix this code.\n\n{_CODE_BLOCK}\n\n"
            "It fails with this error:\n```text\n{error}\n```\n\n{question}"
        ),
    ),
    "explain": Prompt(
        system=(
            "You are a patient senior engineer. Explain what the code does and why, step by "
            "step, for a developer who has not seen it; point out anything surprising or risky. "
            "Be concise."
        ),
        template=f"Explain this code.\n\n{_CODE_BLOCK}\n\n{{question}}",
    ),
    "review": Prompt(
        system=(
            "You are a careful code reviewer. List bugs, security problems and readability "
            "issues, most severe first, each with the line it concerns and a concrete fix. If "
            "the code looks right, say so."
        ),
        template=f"Review this code.\n\n{_CODE_BLOCK}\n\n{{question}}",
    ),
}

#: Languages by file extension, for code fences when a request names none.
LANGUAGES = {
    ".py": "python", ".pyi": "python", ".ipynb": "python", ".js": "javascript",
    ".mjs": "javascript", ".cjs": "javascript", ".jsx": "jsx", ".ts": "typescript",
    ".tsx": "tsx", ".java": "java", ".kt": "kotlin", ".go": "go", ".rs": "rust", ".rb": "ruby",
    ".php": "php", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp",
    ".cs": "csharp", ".swift": "swift", ".sh": "bash", ".bash": "bash", ".sql": "sql",
    ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".md": "markdown",
    ".html": "html", ".css": "css", ".lua": "lua", ".r": "r",
}  # fmt: skip

_PLACEHOLDER = re.compile(r"\{(question|code|error|language|file|selection)\}")
_FENCE = re.compile(r"`{3,}")
_BACKTICKS = re.compile(r"`+")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")


def prompt_for(task: str, tasks: TasksConfig) -> Prompt:
    """The prompts of `task`: the configured ones, each field defaulting to `DEFAULTS`."""
    default = DEFAULTS[task]
    configured: TaskPrompt = getattr(tasks, task)
    return Prompt(
        system=default.system if configured.system is None else configured.system,
        template=default.template if configured.template is None else configured.template,
    )


def language_of(file: str | None) -> str:
    """The fence language of a file name, from its extension ("" when unknown)."""
    if not file:
        return ""
    return LANGUAGES.get(PurePosixPath(file.replace("\\", "/")).suffix.lower(), "")


def render(template: str, values: dict[str, str]) -> str:
    """`template` with its placeholders replaced (see the module docstring for the rules)."""
    fence = "`" * max(3, 1 + max((len(m) for v in values.values() for m in _runs(v)), default=0))
    paragraphs = []
    for paragraph in _PARAGRAPH.split(template):
        names = _PLACEHOLDER.findall(paragraph)
        if names and not any(values.get(name) for name in names):
            continue
        paragraph = _FENCE.sub(lambda m: max(m.group(), fence, key=len), paragraph)
        paragraphs.append(_PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), paragraph))
    return "\n\n".join(p for p in paragraphs if p.strip())


def _runs(text: str) -> list[str]:
    return _BACKTICKS.findall(text) if "`" in text else []


def fenced(code: str, language: str) -> str:
    """`code` in a fence longer than any run of backticks inside it."""
    fence = "`" * max(3, 1 + max((len(m) for m in _runs(code)), default=0))
    return f"{fence}{language}\n{code}\n{fence}"


def context_block(context: Context, language: str, shown: str) -> str:
    """The editor context as text: the file and language, its code and its selection as fenced
    blocks (a piece equal to `shown`, the code the template already holds, is left out)."""
    where = f"`{context.file}`" if context.file else ""
    about = " ".join(p for p in (where, f"({language})" if language else "") if p)
    code, selection = (context.code or "").strip("\n"), (context.selection or "").strip("\n")
    pieces = []
    if code and code != shown:
        head = f"The file {about}:" if about else "The file:"
        pieces.append(f"{head}\n{fenced(code, language)}")
    if selection and selection != shown:
        head = f"Selected in {where}:" if where else "Selected:"
        pieces.append(f"{head}\n{fenced(selection, language)}")
    if not pieces and where:
        pieces.append(f"The file open in the editor: {about}.")
    return "\n\n".join(pieces)


def user_turn(request: StreamAskRequest, prompt: Prompt) -> str:
    """The text of the user turn: the task's template rendered, then the context."""
    context = request.context or Context()
    language = context.language or language_of(context.file)
    values = {
        "question": request.question or "",
        "code": (request.code or context.selection or context.code or "").strip("\n"),
        "error": (request.error or "").strip("\n"),
        "language": language,
        "file": context.file or "",
        "selection": context.selection or "",
    }
    text = render(prompt.template, values)
    shown = values["code"] if "{code}" in prompt.template else ""
    block = context_block(context, language, shown)
    return f"{text}\n\n{block}" if text and block else text or block


def image_part(data_url: str) -> Part:
    """An image part from a validated `data:image/...;base64,...` URL."""
    head, _, data = data_url.partition(",")
    media_type = head[len("data:") :].split(";", 1)[0]
    return Part("image", media_type=media_type, data="".join(data.split()))


def build_chat(
    request: StreamAskRequest, model: str, tasks: TasksConfig, kept: list[Message]
) -> tuple[ChatRequest, str]:
    """The canonical request of a /stream-ask request, after the turns a session `kept`; and
    the user turn's text (what a session keeps of it)."""
    task = request.task_name
    prompt = prompt_for(task, tasks)
    messages = [
        Message("system", [Part("text", text=text)])
        for text in (request.system, prompt.system)
        if text
    ]
    messages += kept
    messages += [Message(t.role, [Part("text", text=t.content)]) for t in request.history or ()]
    text = user_turn(request, prompt)
    parts = [Part("text", text=text)] + [image_part(url) for url in request.images or ()]
    messages.append(Message("user", parts))
    chat = ChatRequest(
        model=model,
        messages=messages,
        stream=True,
        include_usage=True,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        session_id=request.session_id or None,
        mode=request.mode or None,
        task=task if request.task else None,
    )
    return chat, text
