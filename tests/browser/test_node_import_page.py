"""Add Node's "Import many": a CSV upload, the per-row results, the keys file as a download."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import Site, screenshot

CSV = (
    "hostname,private_ip,public_ip,roles,sip.sip_port\n"
    "web-imp-1,10.8.0.1,203.0.113.81,sip,5070\n"
    "web-imp-2,10.8.0.2,,wk que,\n"
    "web-imp-2,10.8.0.3,,wk,\n"
    "web bad,10.8.0.4,,,\n"
    "web-imp-3,10.8.0.5,,,\n"
)


def upload(page: Page, name: str, content: str) -> None:
    page.get_by_label("CSV file").set_input_files(
        {"name": name, "mimeType": "text/csv", "buffer": content.encode()}
    )
    page.get_by_role("button", name="Import", exact=True).click()


def test_import_many_shows_each_row_and_offers_the_keys_as_a_file(
    admin_page: Page, site: Site
) -> None:
    page = admin_page
    page.get_by_role("link", name="Add Node").click()
    expect(page.get_by_role("heading", name="Import many")).to_be_visible()
    screenshot(page, "add-node-import-many")

    # not the form: the file's problem shown above the field, nothing created
    upload(page, "wrong.csv", "name,address\nx,10.0.0.1\n")
    expect(page.locator("#import-error")).to_contain_text("unknown column 'name'")
    expect(page.get_by_label("CSV file")).to_have_attribute("aria-invalid", "true")

    upload(page, "nodes.csv", CSV)
    expect(page.get_by_role("heading", name="3 created, 2 refused")).to_be_visible()
    rows = page.locator("#import-results tbody tr")
    expect(rows).to_have_count(5)
    outcomes = [rows.nth(i).get_attribute("data-outcome") for i in range(5)]
    assert outcomes == ["created", "created", "refused", "refused", "created"]
    expect(page.locator("#row-3")).to_have_attribute("data-rule", "hostname-unique")
    expect(page.locator("#row-4")).to_have_attribute("data-field", "hostname")
    # the keys are not on the page; the file holds them
    page_text = page.content()
    with page.expect_download() as downloading:
        page.locator("#keys-link").click()
    download = downloading.value
    assert download.suggested_filename == "voipcloud-session-keys.csv"
    keys = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert [k["hostname"] for k in keys] == ["web-imp-1", "web-imp-2"]  # web-imp-3: no role
    for key in keys:
        assert key["session_key"] == site.session_key(int(key["node_id"]))
        assert key["session_key"] not in page_text
    screenshot(page, "add-node-import-results")
    first = site.node(int(keys[0]["node_id"]))
    assert (first.status.value, first.roles) == ("Offline", ["sip"])
