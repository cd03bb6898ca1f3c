"""Headless Chromium for the browser tests: the Debian package's binary (Playwright downloads no
browser of its own), signing in on the login form, and a record of what a page asked the archive
for and complained about."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, Response

from tests.conftest import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")


def chromium() -> str:
    """The Chromium to launch; a missing one fails the test, never skips it."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/install-system-packages (Debian chromium)")
    return str(CHROMIUM)


def sign_in(
    page: Page, base_url: str, user: str, password: str = PASSWORD, start: str = "/"
) -> None:
    """Sign in on the login form as a user does, and wait for their role's start page."""
    page.goto(f"{base_url}/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}{start}")


@dataclass
class Traffic:
    """What the browser asked the archive for, and what the page complained about."""

    base_url: str
    answers: list[tuple[str, str, int]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        """Record what `page` asks for and complains about from now on."""
        page.on("response", self.record)
        page.on("console", self.complain)

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
