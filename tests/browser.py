"""Debian's Chromium under Playwright, for the tests of the gateway's pages (the playground,
the dashboard): where it is, how it is started, where screenshots go, and the skip marker
when it is absent."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Screenshots of the pages, kept for people to look at (git-ignored).
ARTIFACTS = Path(__file__).parent / "artifacts"

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Chromium not found at /usr/bin/chromium (apt-get install chromium); browser tests "
    "skipped",
)


def launch_chromium() -> Iterator[Any]:
    """A headless Chromium for the duration of a fixture (Playwright is imported here, so a
    module without it skips instead of failing to import)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing"
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
