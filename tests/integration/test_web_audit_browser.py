"""The dashboard's pause form in a real browser (Debian's Chromium, headless): a note
and an until, the pause shown on the page, the edit marked with who made it."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect
from redis import Redis

from devtools.browser import CHROMIUM, chromium, start_web
from devtools.processes import Process
from tests.integration.test_web_audit import seed

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]

TOKEN = "browser-audit-token"
WAIT_MS = 20_000


def test_pause_with_a_note_and_an_until_from_the_page(
    redis_url: str, conn: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    client = seed(conn)
    base = start_web(
        redis_url,
        tmp_path / "web.log",
        processes,
        extra=("--allow-actions",),
        env={"RQBEAT_WEB_TOKEN": TOKEN},
    )
    with chromium() as browser:
        page = browser.new_page()
        page.goto(base + "schedule/daily-summary")
        page.fill("input[name=token]", TOKEN)
        page.click("text=Unlock actions")
        page.fill("#pause-note", "warehouse migration")
        page.fill("#pause-until", "2h")
        page.click("#do-pause")
        expect(page.locator("#message")).to_have_text("paused daily-summary", timeout=WAIT_MS)
        expect(page.locator("#pause")).to_contain_text("by web-token")
        expect(page.locator("#pause")).to_contain_text("warehouse migration")
        expect(page.locator("#history li.event-paused .by")).to_have_text("by web-token")
    record = client.get("daily-summary")
    assert (record.state, record.raw["pause_note"], record.raw["paused_by"]) == (
        "paused",
        "warehouse migration",
        "web-token",
    )
    assert conn.zscore("rqbeat:paused_until", "daily-summary") is not None
