"""Debian's Chromium, headless, driven by Playwright: for the tests that need a real browser.

With ``CI=true`` a missing Chromium fails the test (``.ci/run`` installs it); elsewhere it skips
with the reason.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""As root, offline: no sandbox, no GPU, and none of the background traffic this machine's closed
network would refuse."""


@asynccontextmanager
async def chromium(*args: str) -> AsyncIterator[Any]:
    """A headless Chromium (a Playwright ``Browser``) started with :data:`CHROMIUM_ARGS` and
    ``args``; closed on the way out."""
    if not Path(CHROMIUM).exists():  # noqa: ASYNC240 (one stat before the test starts)
        reason = f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *args], headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()
