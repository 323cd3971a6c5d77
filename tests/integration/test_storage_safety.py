"""Storage edge cases against a real moto_server, on SQLite and PostgreSQL: deletes while the
kind is being migrated leave no copy anywhere, keys never escape the local directory, failed
local writes leave no temporary files, fetches carry the recorded sha256."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveApi
from tests.integration.test_storage_api import live_storage_api, ok, s3_config, unique_bucket
from tests.integration.test_storage_migration import wait_migration
from tests.support.moto import MotoServer, moto_server
from voipcloud.domain.errors import InvalidInput
from voipcloud.domain.storage import check_key

MiB = 1024 * 1024
BASE = "/api/v1/storage/recordings"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def storage_api(tmp_path: Path, database_url: str) -> Iterator[LiveApi]:
    with live_storage_api(tmp_path, database_url) as api:
        yield api


def bucket_keys(moto: MotoServer, bucket: str) -> set[str]:
    pages = moto.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def check_delete_during_migration_leaves_no_copy(storage_api: LiveApi, moto: MotoServer) -> None:
    client = storage_api.client
    local_root = storage_api.settings.data_dir.resolve() / "storage" / "recordings"
    contents = {f"500/call-{i:03d}.wav": os.urandom(700 + i) for i in range(60)}
    contents["000/big.wav"] = os.urandom(9 * MiB + 3)  # first in key order, multipart: slow
    for key, data in contents.items():
        ok(client.put(f"{BASE}/resources/{key}", content=data))
    bucket = unique_bucket(moto, "delmig")
    ok(client.put("/api/v1/storage", json={"recordings": s3_config(moto, bucket)}))

    # deleted while moved (the big one), and before the migration reaches them (the last ones)
    doomed = ["000/big.wav", *[f"500/call-{i:03d}.wav" for i in range(50, 60)]]
    ok(client.post(f"{BASE}/migration"), 202)
    # the big object takes a while: meanwhile the kind's storage cannot change under it
    switch = client.put("/api/v1/storage", json={"recordings": {"backend": "local"}})
    assert switch.status_code == 409, switch.text
    assert switch.json()["rule"] == "storage-migration-running"
    assert "pause it" in switch.json()["detail"]
    answers: dict[str, int] = {}

    def delete(key: str) -> None:
        answers[key] = storage_api.client.delete(f"{BASE}/resources/{key}").status_code

    threads = [threading.Thread(target=delete, args=(key,)) for key in doomed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == dict.fromkeys(doomed, 204)
    final = wait_migration(client, lambda p: p["status"] != "running")
    assert final["status"] == "completed", final
    assert final["failed"] == 0
    assert final["done"] == final["total"] == len(contents) - len(doomed)
    assert ok(client.get("/api/v1/storage"))["recordings"]["backend"] == "s3"

    kept = {k: v for k, v in contents.items() if k not in doomed}
    assert bucket_keys(moto, bucket) == {f"pbx/{k}" for k in kept}  # no orphan in the target
    assert not [p for p in local_root.rglob("*") if p.is_file()]  # nor in the source
    listed = ok(client.get(f"{BASE}/resources", params={"limit": 1000}))
    assert {r["key"] for r in listed["items"]} == set(kept)
    for key in doomed:
        assert client.get(f"{BASE}/resources/{key}").status_code == 404
    key, data = next(iter(kept.items()))
    fetched = client.get(f"{BASE}/resources/{key}")
    assert fetched.content == data
    assert fetched.headers["x-checksum-sha256"] == hashlib.sha256(data).hexdigest()
    assert fetched.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'


ESCAPING = [
    "%2E%2E/escaped",
    "a/%2E%2E/%2E%2E/%2E%2E/escaped",
    "%2Fescaped",
    "%2F%2Ftmp/escaped",
    "a%2F..%2F..%2Fescaped",
    ".hidden",
    "a//b",
    "a%00b",
    "a\\..\\escaped",
    "%C3%A9t%C3%A9",
    "a/",
]


def check_keys_never_escape_the_local_directory(storage_api: LiveApi, tmp_path: Path) -> None:
    client = storage_api.client
    local_root = storage_api.settings.data_dir.resolve() / "storage" / "recordings"
    before = set(tmp_path.rglob("*"))
    for key in ESCAPING:
        url = f"{BASE}/resources/{key}"
        put = client.put(url, content=b"escape attempt")
        assert put.status_code in {404, 405, 422}, (key, put.text)
        if put.status_code == 422:
            assert put.json()["detail"][0]["loc"] == ["path", "key"], put.text
        assert client.get(url).status_code in {404, 422}, key
        assert client.delete(url).status_code in {404, 405, 422}, key
    for raw in ("a\n", "a/b\n", "../a", "/a", "a/../b", "a/.b"):  # not via a URL: raw
        with pytest.raises(InvalidInput):
            check_key(raw)
    created = set(tmp_path.rglob("*")) - before
    assert not [p for p in created if "escaped" in p.name or p.is_file()], created
    assert not local_root.exists() or not any(local_root.rglob("*"))


def check_failed_local_writes_leave_no_temporary_files(storage_api: LiveApi) -> None:
    client = storage_api.client
    local_root = storage_api.settings.data_dir.resolve() / "storage" / "faxes"
    base = "/api/v1/storage/faxes/resources"
    ok(client.put(f"{base}/clash", content=b"a file"))
    ok(client.put(f"{base}/dir/inner", content=b"a file in a directory"))
    under_a_file = client.put(f"{base}/clash/inner", content=b"x")  # its parent is a file
    over_a_dir = client.put(f"{base}/dir", content=b"x")  # the key is a directory
    for answer in (under_a_file, over_a_dir):
        assert answer.status_code == 409, answer.text
        assert answer.json()["rule"] == "storage-io-error"
        assert "Check that the directory exists" in answer.json()["detail"]
    files = sorted(p.relative_to(local_root).as_posix() for p in local_root.rglob("*"))
    assert files == ["clash", "dir", "dir/inner"]  # no .part file left behind
    assert client.get(f"{base}/clash").content == b"a file"
    listed = ok(client.get(base))
    assert sorted(r["key"] for r in listed["items"]) == ["clash", "dir/inner"]


def check_content_type_must_be_ascii_media_type(storage_api: LiveApi) -> None:
    client = storage_api.client
    for value in ("audio/w\u00e4v", "audio", "audio/wav; x=\u00e9", "/wav"):
        answer = client.put(
            "/api/v1/storage/voicemail/resources/ct/1",
            content=b"x",
            headers={"Content-Type": value.encode("utf-8")},
        )
        assert answer.status_code == 422, (value, answer.text)
        assert answer.json()["detail"][0]["loc"] == ["header", "content-type"]
    stored = ok(
        client.put(
            "/api/v1/storage/voicemail/resources/ct/1",
            content=b"x",
            headers={"Content-Type": "audio/wav; rate=8000"},
        )
    )
    assert stored["content_type"] == "audio/wav; rate=8000"


def check_an_unverified_copy_is_removed_and_the_original_kept(
    storage_api: LiveApi, moto: MotoServer
) -> None:
    client = storage_api.client
    base = "/api/v1/storage/voicemail"
    local_root = storage_api.settings.data_dir.resolve() / "storage" / "voicemail"
    bucket = unique_bucket(moto, "verify")
    ok(client.put("/api/v1/storage", json={"voicemail": s3_config(moto, bucket)}))
    good, bad = os.urandom(3000), os.urandom(4000)
    assert ok(client.put(f"{base}/resources/1001/good.wav", content=good))["backend"] == "s3"
    ok(client.put(f"{base}/resources/1001/bad.wav", content=bad))
    tampered = os.urandom(len(bad))  # same size: only the checksum can tell
    moto.client().put_object(Bucket=bucket, Key="pbx/1001/bad.wav", Body=tampered)

    ok(client.put("/api/v1/storage", json={"voicemail": {"backend": "local"}}))
    ok(client.post(f"{base}/migration"), 202)
    final = wait_migration(client, lambda p: p["status"] != "running", url=f"{base}/migration")
    assert (final["status"], final["failed"]) == ("failed", 1), final
    assert "1001/bad.wav" in final["last_error"]
    assert "sha256" in final["last_error"]
    assert (local_root / "1001" / "good.wav").read_bytes() == good
    assert not (local_root / "1001" / "bad.wav").exists()  # the unverified copy is gone
    assert not [p for p in local_root.rglob("*") if p.name.endswith(".part")]
    body = moto.client().get_object(Bucket=bucket, Key="pbx/1001/bad.wav")["Body"].read()
    assert body == tampered  # the original is kept where it was
    assert bucket_keys(moto, bucket) == {"pbx/1001/bad.wav"}
    listed = ok(client.get(f"{base}/resources", params={"prefix": "1001/"}))["items"]
    assert {r["key"]: r["backend"] for r in listed} == {
        "1001/bad.wav": "s3",
        "1001/good.wav": "local",
    }


BAD_ENDPOINTS = [
    "http://[",
    "http://[::1",
    "http://[zz::1]:9000",
    "http://a:b",
    "http://%zz",
    "http://user@host",
    "http://\u00e9.example",
    "http://-",
    "http://host:99999",
    "http://host:0",
    "ftp://host",
    "http://host/path",
]


def check_endpoint_urls_botocore_cannot_use_get_422(storage_api: LiveApi, moto: MotoServer) -> None:
    """Each of these was a 500 (botocore raised ValueError building the client)."""
    client = storage_api.client
    for endpoint in BAD_ENDPOINTS:
        config = {"faxes": s3_config(moto, "any-bucket", endpoint_url=endpoint)}
        for answer in (
            client.post("/api/v1/storage/test", json={"kinds": ["faxes"], "config": config}),
            client.put("/api/v1/storage", json=config),
        ):
            assert answer.status_code == 422, (endpoint, answer.text)
            assert answer.json()["detail"][0]["loc"] == ["body", "faxes", "s3", "endpoint_url"]
    assert ok(client.get("/api/v1/storage"))["faxes"]["backend"] == "local"  # nothing saved
    bucket = unique_bucket(moto, "endpoints")
    port = moto.endpoint_url.rsplit(":", 1)[1]
    for endpoint in (moto.endpoint_url, f"http://localhost:{port}/", f"http://[::1]:{port}"):
        config = {"faxes": s3_config(moto, bucket, endpoint_url=endpoint)}
        answer = ok(
            client.post("/api/v1/storage/test", json={"kinds": ["faxes"], "config": config})
        )
        result = answer["results"][0]
        assert result["ok"] or result["reason"] == "endpoint-unreachable", (endpoint, result)
    config = {"faxes": s3_config(moto, bucket)}
    answer = ok(client.post("/api/v1/storage/test", json={"kinds": ["faxes"], "config": config}))
    assert answer["results"][0]["ok"], answer


def check_control_characters_are_refused_in_paths_and_secrets(
    storage_api: LiveApi, tmp_path: Path
) -> None:
    client = storage_api.client
    odd_dir = tmp_path / "odd\x01dir"
    changes = [
        ({"local": {"path": str(odd_dir)}}, ["body", "faxes", "local", "path"]),
        ({"s3": {"secret_access_key": "a\x00b"}}, ["body", "faxes", "s3", "secret_access_key"]),
        ({"s3": {"secret_access_key": "a\x1bb"}}, ["body", "faxes", "s3", "secret_access_key"]),
    ]
    for change, field in changes:
        for answer in (
            client.put("/api/v1/storage", json={"faxes": change}),
            client.post("/api/v1/storage/test", json={"config": {"faxes": change}}),
        ):
            assert answer.status_code == 422, (change, answer.text)
            assert answer.json()["detail"][0]["loc"] == field
    assert not odd_dir.exists()
    config = ok(client.get("/api/v1/storage"))["faxes"]
    assert config["s3"]["secret_access_key_set"] is False
    assert "\x01" not in config["local"]["path"]


def test_storage_safety(storage_api: LiveApi, moto: MotoServer, tmp_path: Path) -> None:
    check_keys_never_escape_the_local_directory(storage_api, tmp_path)
    check_failed_local_writes_leave_no_temporary_files(storage_api)
    check_content_type_must_be_ascii_media_type(storage_api)
    check_endpoint_urls_botocore_cannot_use_get_422(storage_api, moto)
    check_control_characters_are_refused_in_paths_and_secrets(storage_api, tmp_path)
    check_delete_during_migration_leaves_no_copy(storage_api, moto)
    check_an_unverified_copy_is_removed_and_the_original_kept(storage_api, moto)
