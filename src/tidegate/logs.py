"""Logging: one JSON line per request, written off the event loop.

Handlers write to stderr from a `QueueListener` thread, so a slow terminal or pipe never
blocks the event loop; the loop only enqueues the formatted record.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
from typing import Any

import orjson

from tidegate.redact import Redactor

access_log = logging.getLogger("tidegate.access")
log = logging.getLogger("tidegate")


def setup_logging(level: str = "info") -> logging.handlers.QueueListener:
    """Route the root logger through a queue to stderr; returns the started listener."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(message)s"))
    listener = logging.handlers.QueueListener(records, stream, respect_handler_level=False)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(records))
    root.setLevel(level.upper())
    listener.start()
    return listener


def write_access(fields: dict[str, Any], redact: Redactor) -> None:
    """Write one request's record, with every configured secret removed."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(redact(orjson.dumps(fields).decode()))
