"""A real browser for the dashboard's tests: Debian's Chromium, driven by playwright.

Only the system's ``/usr/bin/chromium`` is used (``apt-get install chromium``; .ci/run
does it): never ``playwright install``, which downloads browsers. The flags keep
Chromium from reaching the network on its own (updates, sync, field trials), so a test
sees only the dashboard it opened.
"""

from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

from devtools.localredis import free_port
from devtools.processes import REPO, Process, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = REPO / "docs" / "screenshots"


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium from Debian's package."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def start_web(
    redis_url: str,
    log: Path,
    processes: list[Process],
    *,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> str:
    """``rqbeat web`` as a subprocess on a free port; its base URL once it answers."""
    port = free_port()
    args = [sys.executable, "-m", "scheduler", "--redis-url", redis_url, "web", "--port", str(port), *extra]
    proc = Process(args, log, env=env)
    processes.append(proc)
    url = f"http://127.0.0.1:{port}/"

    def answers() -> bool:
        if not proc.alive():
            raise AssertionError(f"rqbeat web exited: {proc.output()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "rqbeat-static/rqbeat.css", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_for(answers, 30, interval=0.1, what="rqbeat web to answer")
    return url


def screenshot(page: Page, name: str, tmp_path: Path, *, publish: bool) -> Path:
    """A full-page PNG in ``tmp_path``, copied to docs/screenshots when ``publish``."""
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot), full_page=False)
    if publish:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOTS / shot.name)
    return shot
