"""`tidegate ask`: the terminal client of a running gateway (tidegate.client underneath).

The answer streams from `/stream-ask` and is rendered as markdown while it arrives (rich);
`--raw` writes the text exactly as it arrives, for pipes, and `--json` prints the `/ask`
result. Ctrl-C stops the stream (the connection closes, so the gateway cancels the upstream
call) and exits with 130. Any failure is one line on stderr and a non-zero exit: 1 when the
gateway refused or the answer failed, 2 for a mistake in the command itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from tidegate.client import (
    DEFAULT_URL,
    Chunk,
    Client,
    FinalEnd,
    InBandError,
    Reasoning,
    Stream,
    TidegateError,
)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
TASKS = ("ask", "generate", "fix", "explain", "review")
#: Seconds between two markdown renders (each one parses the whole answer so far).
RENDER_EVERY = 0.08


class UsageError(Exception):
    """A mistake in the command line (exit 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `tidegate ask`."""
    parser.add_argument("question", nargs="?", help="what to ask (optional with --code)")
    parser.add_argument("--url", help=f"the gateway (default: $TIDEGATE_URL, else {DEFAULT_URL})")
    parser.add_argument("--key", help="a client key (default: $TIDEGATE_API_KEY)")
    parser.add_argument("--model", help="a configured model (default: the gateway's)")
    parser.add_argument("--session", help="a session id: the gateway keeps the conversation")
    parser.add_argument(
        "--task",
        choices=TASKS,
        help="a coding task (default: ask; with --code: fix when --error is given, else explain)",
    )
    parser.add_argument("--code", metavar="FILE", help="the code the task is about ('-': stdin)")
    parser.add_argument("--error", metavar="FILE", help="a traceback ('-': read it from stdin)")
    parser.add_argument("--max-tokens", type=int, help="the longest answer, in tokens")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--raw", action="store_true", help="plain text as it arrives")
    output.add_argument("--json", action="store_true", help="the whole /ask result as JSON")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run `tidegate ask`; return the exit status."""
    try:
        fields = request_fields(args)
        client = Client(args.url or env.get("TIDEGATE_URL") or DEFAULT_URL)
    except (UsageError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    client.key = args.key or env.get("TIDEGATE_API_KEY") or None
    try:
        if args.json:
            result = client.ask(args.question, **fields)
            print(json.dumps(result.raw, ensure_ascii=False, indent=2))
            return 0
        with client.stream(args.question, **fields) as stream:
            try:
                if args.raw:
                    _raw(stream, sys.stdout)
                else:
                    _markdown(stream)
            except KeyboardInterrupt:
                stream.stop()
                return _fail("stopped", EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        return _fail("stopped", EXIT_INTERRUPTED)
    except InBandError as exc:
        return _fail(f"the answer failed: {exc.code}: {exc.message}", EXIT_FAILED)
    except TidegateError as exc:
        return _fail(str(exc), EXIT_FAILED)
    return 0


def request_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The request's fields from the options (the question goes separately)."""
    fields: dict[str, Any] = {
        "model": args.model,
        "session_id": args.session,
        "task": args.task,
        "max_tokens": args.max_tokens,
    }
    if args.code == "-" and args.error == "-":
        raise UsageError("only one of --code and --error can be read from stdin")
    if args.code:
        fields["code"] = _read(args.code, "--code")
        if args.code != "-":
            fields["context"] = {"file": Path(args.code).name}
    if args.error:
        fields["error"] = _read(args.error, "--error")
    if args.code and not args.task:
        fields["task"] = "fix" if args.error else "explain"
    return fields


def _read(path: str, option: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read {option} {path}: {exc.strerror or exc}") from None


def _fail(message: str, status: int) -> int:
    print(f"tidegate: {message}", file=sys.stderr, flush=True)
    return status


def _raw(stream: Stream, out: TextIO) -> None:
    """The answer's text as it arrives, nothing else (and a last line end if it had none)."""
    try:
        for event in stream:
            if isinstance(event, Chunk):
                out.write(event.text)
                out.flush()
    finally:
        if stream.text and not stream.text.endswith("\n"):
            out.write("\n")
        out.flush()


def _markdown(stream: Stream) -> None:
    """The answer rendered as markdown while it arrives, then its sources and any notes."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.markdown import Markdown
    from rich.text import Text

    console = Console()
    notes = Console(stderr=True)
    reasoning: list[str] = []

    def view() -> Group:
        parts: list[Any] = []
        if reasoning:
            parts.append(Text("".join(reasoning), style="dim italic"))
        parts.append(Markdown(stream.text))
        return Group(*parts)

    final: FinalEnd | None = None
    if not console.is_interactive:
        # A pipe or a dumb terminal cannot redraw: render the answer once, at its end (or at
        # Ctrl-C or a failure, as far as it came).
        try:
            for event in stream:
                if isinstance(event, Reasoning):
                    reasoning.append(event.text)
                elif isinstance(event, FinalEnd):
                    final = event
        finally:
            console.print(view())
    else:
        with Live(view(), console=console, auto_refresh=False, vertical_overflow="visible") as live:
            last = 0.0
            for event in stream:
                if isinstance(event, Reasoning):
                    reasoning.append(event.text)
                elif isinstance(event, FinalEnd):
                    final = event
                now = time.monotonic()
                if now - last >= RENDER_EVERY:
                    live.update(view(), refresh=True)
                    last = now
            live.update(view(), refresh=True)
    if final is not None and final.sources:
        titles = [str(s.get("title") or s.get("id") or "?") for s in final.sources]
        console.print(Text("Sources: " + ", ".join(titles), style="dim"))
    if stream.dropped_fields:
        notes.print(
            Text("not carried by this model: " + ", ".join(stream.dropped_fields), style="dim")
        )
    if final is not None and final.finish_reason == "length":
        notes.print(Text("the answer was cut at its token limit (--max-tokens)", style="dim"))
