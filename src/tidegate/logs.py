"""Logging, written off the event loop: one JSON line per request, and the rest.

Access lines do not go through the `logging` machinery, which costs more than the relay of a
small request: the loop serializes the record with orjson and enqueues the bytes, and a writer
thread writes whatever has queued up in one `write` to stderr. Other messages (start-up,
errors) use `logging`, routed through a `QueueListener` thread for the same reason.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from typing import Any

import orjson

from tidegate.redact import Redactor

access_log = logging.getLogger("tidegate.access")
log = logging.getLogger("tidegate")


def timestamp(seconds: float) -> str:
    """`seconds` since the epoch as ISO 8601 UTC with milliseconds: 2026-11-30T00:21:54.123Z."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds % 1 * 1000):03d}Z"


class RedactingFormatter(logging.Formatter):
    """Formats a record, traceback included, then removes every configured secret from it."""

    def __init__(self, redactor: Redactor):
        super().__init__("%(message)s")
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self._redactor(super().format(record))


class JsonFormatter(RedactingFormatter):
    """One JSON object per line: time, level, logger and message (traceback included),
    redacted, so that every line of the gateway's output is JSON."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": super().format(record),
        }
        return orjson.dumps(line).decode()


def startup_line(text: str, *, json: bool) -> str:
    """A line written before logging is up (the bound address), in the chosen format."""
    if not json:
        return text
    line = {"time": timestamp(time.time()), "level": "info", "logger": "tidegate", "message": text}
    return orjson.dumps(line).decode()


#: Held by both writer threads (log records, access lines) around each write to stderr: a write
#: longer than the pipe's atomic size could otherwise be interleaved with the other's.
STDERR_LOCK = threading.Lock()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes under `STDERR_LOCK`."""

    def emit(self, record: logging.LogRecord) -> None:
        with STDERR_LOCK:
            super().emit(record)


def setup_logging(
    level: str = "info", redactor: Redactor | None = None, *, json: bool = True
) -> logging.handlers.QueueListener:
    """Route the root logger through a queue to stderr; returns the started listener.

    Every line, a traceback's text included, passes `redactor` before it is written: an
    exception's message may quote upstream data, and that may quote a key. With `json`, every
    line is a JSON object (uvicorn's own lines included).
    """
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stream = _StderrHandler(sys.stderr)
    formatter = JsonFormatter if json else RedactingFormatter
    stream.setFormatter(formatter(redactor or Redactor(())))
    listener = logging.handlers.QueueListener(records, stream, respect_handler_level=False)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(records))
    root.setLevel(level.upper())
    listener.start()
    return listener


class AccessLog:
    """Writes one JSON line per request to stderr from a thread, secrets removed.

    The loop only appends the record and the time to a list, handed to the writer thread once
    per loop iteration (one queue put and one thread wake-up for all the requests that ended
    in it, instead of one per request); serializing, redacting and stamping each line
    (`"time"`, ISO 8601 UTC, last) happen in the writer thread.
    """

    def __init__(self, redact: Redactor, fd: int | None = None):
        self._redact = redact
        self._fd = sys.stderr.fileno() if fd is None else fd
        self._batches: queue.SimpleQueue[list[tuple[float, dict[str, Any]]] | None] = (
            queue.SimpleQueue()
        )
        self._pending: list[tuple[float, dict[str, Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.enabled = access_log.isEnabledFor(logging.INFO)

    def start(self) -> None:
        """Start the writer thread (if access logging is enabled); records written from the
        running loop, if any, are handed over once per iteration."""
        if self.enabled and self._thread is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = None
            self._thread = threading.Thread(
                target=self._run, name="tidegate-access-log", daemon=True
            )
            self._thread.start()

    def write(self, fields: dict[str, Any]) -> None:
        """Queue one record; never blocks."""
        if self._thread is None:
            return
        line = (time.time(), fields)
        if self._loop is None or self._loop.is_closed():
            self._batches.put([line])
            return
        self._pending.append(line)
        if len(self._pending) == 1:
            self._loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._batches.put(batch)

    def close(self) -> None:
        """Write what is queued and stop the thread."""
        if self._thread is not None:
            self._hand_over()
            self._batches.put(None)
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while True:
            batch = self._batches.get()
            out: list[bytes] = []
            while batch is not None:
                for at, fields in batch:
                    fields["time"] = timestamp(at)
                    out.append(self._redact.bytes(orjson.dumps(fields)) + b"\n")
                if len(out) >= 512:
                    break
                try:
                    batch = self._batches.get_nowait()
                except queue.Empty:
                    break
            if out:
                data = b"".join(out)
                try:
                    with STDERR_LOCK:
                        while data:
                            data = data[os.write(self._fd, data) :]
                except OSError:
                    pass  # stderr closed: nothing sensible left to do with the line
            if batch is None:
                return
