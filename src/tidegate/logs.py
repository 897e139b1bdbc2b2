"""Logging, written off the event loop: one JSON line per request, and the rest.

Access lines do not go through the `logging` machinery, which costs more than the relay of a
small request: the loop serializes the record with orjson and enqueues the bytes, and a writer
thread writes whatever has queued up in one `write` to stderr. Other messages (start-up,
errors) use `logging`, routed through a `QueueListener` thread for the same reason.
"""

from __future__ import annotations

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

    The loop only enqueues the record and the time; serializing, redacting and stamping the
    line (`"time"`, ISO 8601 UTC, last) happen in the writer thread.
    """

    def __init__(self, redact: Redactor, fd: int | None = None):
        self._redact = redact
        self._fd = sys.stderr.fileno() if fd is None else fd
        self._lines: queue.SimpleQueue[tuple[float, dict[str, Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.enabled = access_log.isEnabledFor(logging.INFO)

    def start(self) -> None:
        """Start the writer thread (if access logging is enabled)."""
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="tidegate-access-log", daemon=True
            )
            self._thread.start()

    def write(self, fields: dict[str, Any]) -> None:
        """Queue one record; never blocks."""
        if self._thread is not None:
            self._lines.put((time.time(), fields))

    def close(self) -> None:
        """Write what is queued and stop the thread."""
        if self._thread is not None:
            self._lines.put(None)
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while True:
            line = self._lines.get()
            batch = []
            while line is not None:
                at, fields = line
                fields["time"] = timestamp(at)
                batch.append(self._redact.bytes(orjson.dumps(fields)) + b"\n")
                if len(batch) >= 512:
                    break
                try:
                    line = self._lines.get_nowait()
                except queue.Empty:
                    break
            if batch:
                data = b"".join(batch)
                try:
                    with STDERR_LOCK:
                        while data:
                            data = data[os.write(self._fd, data) :]
                except OSError:
                    pass  # stderr closed: nothing sensible left to do with the line
            if line is None:
                return
