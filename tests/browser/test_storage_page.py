"""Storage Configuration page: test with the form's values (a real, authenticating
moto_server), field errors, save with write-only keys, and a migration with its progress bar."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Site, screenshot
from tests.support.moto import MotoServer, moto_server
from voipcloud.domain.storage import ResourceKind
from voipcloud.store import storage as rows


@pytest.fixture
def moto_auth(tmp_path: Path) -> Iterator[MotoServer]:
    with moto_server(tmp_path / "moto", authenticating=True) as server:
        yield server


def test_configure_test_save_and_migrate_voicemail_to_s3(
    admin_page: Page, site: Site, moto_auth: MotoServer, tmp_path: Path
) -> None:
    assert moto_auth.bucket
    storage = site.controller.storage
    storage.bind_data_dir(tmp_path / "data")
    for number in range(30):
        storage.put(
            kind=ResourceKind.VOICEMAIL,
            key=f"10{number % 3}/msg-{number:03d}.wav",
            content=io.BytesIO(b"RIFF" + bytes([number]) * 2048),
            content_type="audio/wav",
        )

    page = admin_page
    page.get_by_role("link", name="Storage", exact=True).click()
    expect(page.get_by_role("heading", name="Storage Configuration")).to_be_visible()
    section = page.locator("#kind-voicemail")
    expect(section.locator("[data-usage]")).to_contain_text("30 on Local storage")

    section.get_by_label("Amazon S3").check()
    section.get_by_label("Bucket").fill(moto_auth.bucket)
    section.get_by_label("Region").fill("us-east-1")
    section.get_by_label("Endpoint URL").fill(moto_auth.endpoint_url)
    section.get_by_label("Key prefix").fill("voicemail")
    section.get_by_label("Access key ID").fill(moto_auth.access_key_id)
    section.get_by_label("Secret access key").fill("not-the-secret")
    section.get_by_role("button", name="Test").click()
    failed = section.locator("[data-probe]")
    expect(failed).to_have_attribute("data-probe", "bad-credentials")
    expect(failed).to_contain_text("secret key does not match")
    screenshot(page, "storage-test-failed")

    section.get_by_label("Secret access key").fill(moto_auth.secret_access_key)
    section.get_by_role("button", name="Test").click()
    expect(section.locator("[data-probe]")).to_have_attribute("data-probe", "ok")
    expect(section.locator("[data-probe]")).to_contain_text("Test passed")

    # a field error is shown beside its field; nothing is saved
    section.get_by_label("Bucket").fill("Not A Bucket")
    section.get_by_role("button", name="Save").click()
    section = page.locator("#kind-voicemail")
    expect(section.get_by_label("Bucket")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#e-voicemail-bucket")).to_contain_text("bucket name")
    assert storage.config(ResourceKind.VOICEMAIL).backend.value == "local"

    section.get_by_label("Bucket").fill(moto_auth.bucket)
    section.get_by_label("Access key ID").fill(moto_auth.access_key_id)
    section.get_by_label("Secret access key").fill(moto_auth.secret_access_key)
    section.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved the storage of voicemail messages: Amazon S3.")).to_be_visible()
    section = page.locator("#kind-voicemail")
    secret = section.get_by_label("Secret access key")
    expect(secret).to_have_value("")  # write-only
    expect(secret).to_have_attribute("placeholder", "unchanged")
    assert moto_auth.secret_access_key not in page.content()

    section.get_by_role("button", name="Migrate to Amazon S3").click()
    panel = page.locator("#migration-voicemail")
    expect(panel).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(panel.locator("[data-progress]")).to_have_text("30 of 30")
    expect(panel.locator("progress")).to_have_attribute("value", "30")
    expect(panel.locator("[data-usage]")).to_contain_text("30 on Amazon S3")
    screenshot(page, "storage-migrated")
    listed = storage.list(kind=ResourceKind.VOICEMAIL, limit=100)
    assert {r.backend for r in listed.items} == {"s3"}
    assert listed.total == 30


def test_an_interrupted_migration_says_so_and_resumes_from_the_page(
    admin_page: Page, site: Site, moto_auth: MotoServer, tmp_path: Path
) -> None:
    assert moto_auth.bucket
    storage = site.controller.storage
    storage.bind_data_dir(tmp_path / "data")
    s3 = {
        "bucket": moto_auth.bucket,
        "region": "us-east-1",
        "endpoint_url": moto_auth.endpoint_url,
        "prefix": "vm",
        "access_key_id": moto_auth.access_key_id,
        "secret_access_key": moto_auth.secret_access_key,
    }
    storage.configure(actor="test", changes={"voicemail": {"backend": "s3", "s3": s3}})
    for number in range(5):
        storage.put(
            kind=ResourceKind.VOICEMAIL,
            key=f"200/msg-{number}.wav",
            content=io.BytesIO(b"RIFF" + bytes([number]) * 512),
            content_type="audio/wav",
        )
    storage.configure(actor="test", changes={"voicemail": {"backend": "local"}})
    now = site.controller.ctx.clock()
    with site.controller.ctx.db.write() as conn:  # as a controller killed mid-migration leaves it
        rows.save_migration(
            conn,
            "voicemail",
            source="s3",
            target="local",
            status="running",
            total=5,
            done=0,
            failed=0,
            bytes_total=5 * 516,
            bytes_done=0,
            last_error=None,
            started_at=now,
            updated_at=now,
            finished_at=None,
        )

    page = admin_page
    page.get_by_role("link", name="Storage", exact=True).click()
    panel = page.locator("#migration-voicemail")
    expect(panel).to_have_attribute("data-status", "interrupted")
    expect(panel).to_contain_text("The controller stopped while this migration ran")
    resume = panel.get_by_role("button", name="Resume migration")
    expect(resume).to_be_visible()
    screenshot(page, "storage-interrupted")
    resume.click()
    panel = page.locator("#migration-voicemail")
    expect(panel).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(panel.locator("[data-progress]")).to_have_text("5 of 5")
    listed = storage.list(kind=ResourceKind.VOICEMAIL, limit=10)
    assert {r.backend for r in listed.items} == {"local"}
