"""The browser tests' shared fixture: Playwright driving Debian's Chromium (never ``playwright install``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _labharness import CHROMIUM


@pytest.fixture(scope="module")
def playwright():  # type: ignore[no-untyped-def]
    """A Playwright instance, or a skip that says what is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); never `playwright install`")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    with sync_api.sync_playwright() as pw:
        yield pw
