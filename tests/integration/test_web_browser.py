"""The dashboard in a real browser (Debian's Chromium, headless, via playwright)
against a real ``rqbeat web``, a real replica and a real worker on the private Redis.

``RQBEAT_SCREENSHOTS=1`` also copies the screenshots to docs/screenshots (the README's).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Dialog, Page, expect
from redis import Redis

from devtools.browser import CHROMIUM, chromium, screenshot, start_web
from devtools.cluster import Cluster
from devtools.processes import Process
from scheduler import Client, Schedule

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]

XSS = "<img src=x onerror=alert(1)>"
TOKEN = "browser-test-token"
BULK = 100_000
PUBLISH = os.environ.get("RQBEAT_SCREENSHOTS") == "1"
#: Seconds a browser-side expectation waits (live refreshes come every second).
WAIT_MS = 20_000


def seed_bulk(client: Client, n: int) -> None:
    """``n`` schedules through the public API, firing once a year (never during the test)."""
    for start in range(0, n, 10_000):
        client.upsert_many(
            [
                Schedule(
                    id=f"bulk-{i:06d}",
                    target="tests.jobs.record",
                    cron=f"{i % 60} {i % 24} 1 1 *",
                    timezone="Europe/Berlin" if i % 3 else "UTC",
                    queue="reports" if i % 10 == 0 else "default",
                )
                for i in range(start, min(n, start + 10_000))
            ]
        )


def refuse_dialogs(page: Page, seen: list[str]) -> None:
    """Any alert() would mean injected script ran: record it."""

    def on_dialog(dialog: Dialog) -> None:
        seen.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)


def next_page(page: Page, shown: list[str]) -> list[str]:
    """Click "next" and wait until the list shows another page (the click only starts
    the navigation), then read it."""
    page.click("#next-page")
    expect(page.locator("#rows tr").first).not_to_have_attribute("data-id", shown[0], timeout=WAIT_MS)
    page.wait_for_load_state()
    return row_ids(page)


def row_ids(page: Page) -> list[str]:
    return [
        str(page.locator("#rows tr").nth(i).get_attribute("data-id"))
        for i in range(page.locator("#rows tr").count())
    ]


def test_list_is_live_filters_pages_and_keeps_untrusted_text_inert(
    redis_url: str, conn: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    client = Client(conn)
    seed_bulk(client, BULK)
    client.upsert(Schedule(id="beat", target="tests.jobs.record", every_ms=1000, description="every second"))
    client.upsert(Schedule(id="xss", target="tests.jobs.fail", args=(XSS,), every_ms=2000, description=XSS))
    client.upsert(Schedule(id="held", target="tests.jobs.record", cron="0 4 * * *"))
    client.upsert(
        Schedule(
            id="report",
            target="tests.jobs.record",
            cron="*/2 * * * * *",
            timezone="Europe/Berlin",
            description="sales figures to the ops channel",
        )
    )
    client.pause("held")
    cluster = Cluster(redis_url, tmp_path, processes)
    cluster.replica("r1")
    cluster.worker("w1", "default")
    base = start_web(redis_url, tmp_path / "web.log", processes, extra=("--refresh", "1"))

    dialogs: list[str] = []
    with chromium() as browser:
        # a viewer far from both UTC and the schedules' zone: the page shows their local time
        page = browser.new_page(viewport={"width": 1280, "height": 860}, timezone_id="America/New_York")
        refuse_dialogs(page, dialogs)
        page.goto(base)
        page.evaluate("window.loadedOnce = true")
        beat = page.locator('#rows tr[data-id="beat"]')
        # the page refreshes itself: the first success shows up without a reload
        expect(beat.locator(".result")).to_have_text("succeeded", timeout=WAIT_MS)
        expect(page.locator('#rows tr[data-id="xss"] .result')).to_have_text("failed", timeout=WAIT_MS)
        assert page.evaluate("window.loadedOnce") is True
        expect(page.locator("[data-count=total]")).to_have_text(str(BULK + 4))
        screenshot(page, "list", tmp_path, publish=PUBLISH)

        page.fill("input[name=prefix]", "bulk-0000")
        page.click("button[type=submit]")
        ids = row_ids(page)
        assert len(ids) == 50 and ids == sorted(ids) and all(i.startswith("bulk-0000") for i in ids)
        more = next_page(page, ids)
        assert sorted(ids + more) == [f"bulk-{i:06d}" for i in range(100)]

        page.goto(base)
        page.select_option("select[name=state]", "paused")
        page.click("button[type=submit]")
        expect(page.locator("#rows tr")).to_have_count(1)
        assert row_ids(page) == ["held"]

        page.goto(base + "?state=due&queue=reports")
        first = row_ids(page)
        second = next_page(page, first)
        assert len(first) == len(second) == 50 and not set(first) & set(second)
        rows = page.locator("#rows tr td[data-label=Trigger] code").all_text_contents()
        assert all(re.fullmatch(r"\d+ \d+ 1 1 \*", r) for r in rows)

        for path in ("schedule/xss", ""):  # as rendered by the server, then by the refresh
            page.goto(base + path)
            expect(page.locator("body[data-refreshes]")).to_be_visible(timeout=WAIT_MS)
            assert page.locator("img").count() == 0, path
        expect(page.locator('#rows tr[data-id="xss"] .error')).to_contain_text(XSS)
        page.goto(base + "schedule/xss")
        expect(page.locator("#last-error")).to_contain_text(XSS)
        expect(page.locator("dd.description")).to_have_text(XSS)
        expect(page.locator("body[data-refreshes]")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#history .outcome").first).to_contain_text(XSS)
        assert page.locator("img").count() == 0
        assert dialogs == []

        page.goto(base + "schedule/report")
        expect(page.locator("#history li.event-succeeded").first).to_be_visible(timeout=WAIT_MS)
        local = page.locator(".fires tbody tr").first.locator("time").text_content() or ""
        utc = page.locator(".fires tbody tr").first.locator("td[data-label=UTC]").text_content() or ""
        assert local and local != utc
        screenshot(page, "schedule", tmp_path, publish=PUBLISH)
        page.goto(base + "cluster")
        expect(page.locator("#replicas")).to_contain_text("r1")
        expect(page.locator("#queues")).to_contain_text("default")
        screenshot(page, "cluster", tmp_path, publish=PUBLISH)

        phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
        phone.goto(base + "?state=due")
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the list scrolls sideways on a phone ({width}px)"
        screenshot(phone, "phone", tmp_path, publish=PUBLISH)


def test_each_action_works_once_and_needs_credentials(
    redis_url: str, conn: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    client = Client(conn)
    client.upsert(
        Schedule(id="nightly", target="tests.jobs.record", cron="0 3 * * *", timezone="Europe/Berlin")
    )
    cluster = Cluster(redis_url, tmp_path, processes)
    cluster.replica("r1")
    cluster.worker("w1", "default")
    base = start_web(
        redis_url,
        tmp_path / "web.log",
        processes,
        extra=("--refresh", "1", "--allow-actions"),
        env={"RQBEAT_WEB_TOKEN": TOKEN},
    )
    url = base + "schedule/nightly"
    with chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        expect(page.locator("#do-pause")).to_have_count(0)
        csrf = page.locator("input[name=csrf]").get_attribute("value")
        refused = page.request.post(url + "/pause", form={"csrf": str(csrf), "version": "1"})
        assert refused.status == 401
        assert client.get("nightly").state == "due"

        page.fill("input[name=token]", TOKEN)
        page.click("text=Unlock actions")
        expect(page.locator("#do-pause")).to_be_visible()
        page.click("#do-pause")
        expect(page.locator("#message")).to_have_text("paused nightly")
        expect(page.locator("h1 .state")).to_have_text("paused")
        page.click("#do-resume")
        expect(page.locator("#message")).to_have_text("resumed nightly")
        page.click("#do-trigger")
        expect(page.locator("#message")).to_have_text("triggered nightly: it runs now, once")
        # the worker runs it; the page's own refresh shows the run succeed
        expect(page.locator("#history li.event-succeeded")).to_have_count(1, timeout=WAIT_MS)
        events = [e.event for e in client.history("nightly")]
        assert events == ["paused", "resumed", "triggered", "dispatched", "succeeded"]

        client.upsert(
            Schedule(
                id="nightly",
                target="tests.jobs.record",
                cron="0 3 * * *",
                timezone="Europe/Berlin",
                description="edited",
            )
        )
        expect(page.locator("#changed")).to_be_visible(timeout=WAIT_MS)
        page.click("#do-pause")
        expect(page.locator("#message")).to_contain_text("changed meanwhile")
        assert client.get("nightly").state == "due"
