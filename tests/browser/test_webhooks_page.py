"""The Webhooks page (add, Send test, the delivery log following live) and the Events page's
audit filters and export, in Chromium against a real receiver."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ADMIN, Site, screenshot
from tests.support.receiver import Receiver

SECRET = "browser-webhook-secret-0123"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    def answer(number: int, _body: dict[str, Any]) -> int:
        return 500 if number == 0 else 200  # the first request is refused

    started = Receiver(secret=SECRET, answer=answer).start()
    yield started
    started.stop()


def test_add_a_webhook_send_tests_and_follow_the_log(
    admin_page: Page, site: Site, receiver: Receiver
) -> None:
    page = admin_page
    page.goto("/events")
    page.locator("nav").first.get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    expect(page.get_by_text("No webhooks yet.")).to_be_visible()

    form = page.locator("#add-webhook")
    form.get_by_label("Receiver URL").fill("ftp://nowhere")
    form.get_by_label("Secret").fill(SECRET)
    form.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#e-url")).to_contain_text("http:// or https://")
    form = page.locator("#add-webhook")
    form.get_by_label("Receiver URL").fill(receiver.url)
    form.get_by_label("Secret").fill(SECRET)
    form.get_by_label("Description").fill("on-call pager")
    form.get_by_role("button", name="Add webhook").click()
    expect(page.get_by_role("heading", name="Webhook 1")).to_be_visible()
    expect(page.get_by_text("Keep its secret")).to_be_visible()
    assert SECRET not in page.content()

    # the first test is refused by the receiver (500): tried once, failed, the answer shown
    page.get_by_role("button", name="Send test").click()
    failed = page.locator("#delivery-log tr[data-state=failed]")
    expect(failed).to_have_count(1, timeout=10_000)
    expect(failed).to_contain_text("HTTP 500")
    expect(failed).to_contain_text("try again later")
    page.get_by_role("button", name="Send test").click()
    delivered = page.locator("#delivery-log tr[data-state=delivered]")
    expect(delivered).to_have_count(1, timeout=10_000)
    expect(delivered).to_contain_text("HTTP 200")
    expect(delivered).to_contain_text("accepted")

    # a status change arrives while the page is open: the log follows without a reload
    node = site.add_node("hooked-01", roles=("wk",))
    site.controller.nodes.action(node.id, "standby", actor=ADMIN)
    row = page.locator("#delivery-log tr", has_text="node.status_changed")
    expect(row).to_have_count(1, timeout=10_000)
    expect(row).to_have_attribute("data-state", "delivered", timeout=10_000)
    assert all(r.signature_ok for r in receiver.got)
    assert [r.json["event"] for r in receiver.got] == [
        "webhook.test",
        "webhook.test",
        "node.status_changed",
    ]
    page.locator("#delivery-log details").first.click()
    screenshot(page, "webhook-deliveries")

    page.goto("/webhooks")
    listed = page.locator("#webhooks tr[data-webhook='1']")
    expect(listed).to_contain_text("2 delivered, 1 failed, 0 pending")
    expect(listed).to_contain_text("on-call pager")
    screenshot(page, "webhooks")


def test_events_filters_and_export(admin_page: Page, site: Site) -> None:
    first = site.add_node("audit-01", roles=("wk",))
    second = site.add_node("audit-02", roles=("wk",))
    site.controller.nodes.action(first.id, "standby", actor=ADMIN)
    site.controller.nodes.action(second.id, "standby", actor="operator:olga")

    page = admin_page
    page.goto("/events")
    page.get_by_label("Actor").fill("olga")
    page.get_by_label("Operation").fill("standby")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#events-total")).to_contain_text("of 1 events")
    rows = page.locator("table.events tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("audit-02")
    expect(rows.first).to_contain_text("Offline → StandBy")
    screenshot(page, "events-filtered")

    href = page.locator("#export-csv").get_attribute("href")
    assert href is not None
    assert "actor=olga" in href
    assert "operation=standby" in href
    answer = page.request.get(href)
    assert answer.ok
    exported = list(csv.DictReader(io.StringIO(answer.text())))
    assert [(r["actor"], r["node_id"], r["status_after"]) for r in exported] == [
        ("operator:olga", str(second.id), "StandBy")
    ]

    page.get_by_label("From (UTC, inclusive)").fill("tomorrow")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("alert")).to_contain_text("not an ISO 8601 time")
    expect(page.get_by_label("From (UTC, inclusive)")).to_have_attribute("aria-invalid", "true")
    page.get_by_role("link", name="Clear filters").click()
    expect(page.locator("#events-total")).not_to_contain_text("of 1 events")
