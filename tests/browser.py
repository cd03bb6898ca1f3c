"""Headless Chromium for the browser tests: the Debian package's binary (Playwright downloads no
browser of its own), and a record of what a page asked the archive for and complained about."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Response

CHROMIUM = Path("/usr/bin/chromium")


def chromium() -> str:
    """The Chromium to launch; a missing one fails the test, never skips it."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/install-system-packages (Debian chromium)")
    return str(CHROMIUM)


@dataclass
class Traffic:
    """What the browser asked the archive for, and what the page complained about."""

    base_url: str
    answers: list[tuple[str, str, int]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def record(self, response: Response) -> None:
        if response.url.startswith(self.base_url):
            self.answers.append((response.request.method, response.url, response.status))

    def complain(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            where = message.location.get("url", "")
            self.console.append(f"{message.type}: {message.text} ({where})")

    def report(self) -> str:
        lines = [f"{status} {method} {url}" for method, url, status in self.answers]
        return "\n".join(["requests:", *lines, "console:", *self.console[-40:]])
