"""Every log line, a traceback's included, goes through the redactor."""

from __future__ import annotations

import logging

import pytest

from tidegate.logs import setup_logging
from tidegate.redact import Redactor

KEY = "sk-log-SECRET-7f3a9c2e"


def test_a_traceback_quoting_a_key_is_redacted(capfd: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    listener = setup_logging("info", Redactor([KEY]))
    try:
        try:
            int(KEY)
        except ValueError:
            logging.getLogger("tidegate").exception("parsing %s failed", KEY)
    finally:
        listener.stop()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    err = capfd.readouterr().err
    assert "Traceback" in err and "ValueError" in err
    assert KEY not in err
    assert KEY[:8] not in err
    assert err.count("[REDACTED]") == 2
