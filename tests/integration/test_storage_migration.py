"""Moving recorded calls from local disk to S3 (a real moto_server), paused halfway and
resumed, with every checksum verified; on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveApi
from tests.integration.test_storage_api import live_storage_api, ok, s3_config, unique_bucket
from tests.support.moto import MotoServer, moto_server

MiB = 1024 * 1024
SMALL_OBJECTS = 200
BASE = "/api/v1/storage/recordings"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def storage_api(tmp_path: Path, database_url: str) -> Iterator[LiveApi]:
    with live_storage_api(tmp_path, database_url) as api:
        yield api


def wait_migration(
    client: Any, until: Any, timeout: float = 120, url: str = f"{BASE}/migration"
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress: dict[str, Any] = ok(client.get(url))
        if until(progress):
            return progress
        time.sleep(0.02)
    raise AssertionError(f"migration did not reach the expected state: {progress}")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_local_to_s3_paused_halfway_resumed_and_verified(
    storage_api: LiveApi, moto: MotoServer
) -> None:
    client = storage_api.client
    local_root = storage_api.settings.data_dir.resolve() / "storage" / "recordings"
    contents = {
        f"{1000 + i % 12}/call-{i:04d}.wav": os.urandom(512 + (i * 37) % 3000)
        for i in range(SMALL_OBJECTS)
    }
    contents["1000/long-call.wav"] = os.urandom(9 * MiB + 7)  # over the multipart threshold
    for key, data in contents.items():
        assert ok(client.put(f"{BASE}/resources/{key}", content=data))["backend"] == "local"
    corrupted = "1003/call-0003.wav"  # damaged on disk: its checksum cannot verify
    (local_root / corrupted).write_bytes(b"bit rot")

    bucket = unique_bucket(moto, "migrate")
    config = ok(client.put("/api/v1/storage", json={"recordings": s3_config(moto, bucket)}))
    assert config["recordings"]["pending_migration"] == len(contents)
    new = ok(client.put(f"{BASE}/resources/2000/new.wav", content=b"after the switch"))
    assert new["backend"] == "s3"  # new resources go to the active backend at once
    contents["2000/new.wav"] = b"after the switch"

    started = ok(client.post(f"{BASE}/migration"), 202)
    assert (started["source"], started["target"]) == ("local", "s3")
    halfway = wait_migration(client, lambda p: p["done"] >= p["total"] // 2)
    paused = ok(client.post(f"{BASE}/migration/pause"))
    assert paused["status"] == "paused"
    assert halfway["done"] <= paused["done"] < paused["total"] == len(contents)

    # paused: every resource is readable from wherever it is, moved ones are gone from disk
    listed = ok(client.get(f"{BASE}/resources", params={"limit": 1000}))["items"]
    by_backend = {b: [r["key"] for r in listed if r["backend"] == b] for b in ("local", "s3")}
    assert by_backend["local"]
    assert by_backend["s3"]
    for key in by_backend["s3"][:20] + by_backend["local"][:20]:
        if key != corrupted:
            assert client.get(f"{BASE}/resources/{key}").content == contents[key]
    for key in by_backend["s3"]:
        assert not (local_root / key).exists()

    ok(client.post(f"{BASE}/migration"), 202)  # resume
    final = wait_migration(client, lambda p: p["status"] not in {"running"})
    assert final["status"] == "failed"
    assert final["failed"] == 1
    assert corrupted in final["last_error"]
    assert "sha256" in final["last_error"]
    assert (local_root / corrupted).read_bytes() == b"bit rot"  # the original is kept
    still = ok(client.get(f"{BASE}/resources", params={"prefix": corrupted}))["items"]
    assert [(r["key"], r["backend"]) for r in still] == [(corrupted, "local")]
    damaged = client.get(f"{BASE}/resources/{corrupted}")  # refused before any byte is sent
    assert damaged.status_code == 409
    assert damaged.json()["rule"] == "storage-checksum-mismatch"
    assert "is damaged: 7 bytes" in damaged.json()["detail"]

    # replace the damaged one, then the migration completes
    ok(client.put(f"{BASE}/resources/{corrupted}", content=contents[corrupted]))
    ok(client.post(f"{BASE}/migration"), 202)
    done = wait_migration(client, lambda p: p["status"] != "running")
    assert done["status"] == "completed", done
    assert done["done"] == done["total"] == len(contents)
    assert done["bytes_done"] == done["bytes_total"] == sum(len(d) for d in contents.values())
    assert ok(client.get("/api/v1/storage"))["recordings"]["pending_migration"] == 0

    # every object: in the bucket with the right bytes, fetched through the API intact
    s3 = moto.client()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="pbx/")
    in_bucket = {o["Key"].removeprefix("pbx/") for page in pages for o in page["Contents"]}
    assert in_bucket == set(contents)
    for key, data in contents.items():
        body = s3.get_object(Bucket=bucket, Key=f"pbx/{key}")["Body"].read()
        assert sha(body) == sha(data), key
        fetched = client.get(f"{BASE}/resources/{key}")
        assert fetched.headers["x-checksum-sha256"] == sha(data)
        assert sha(fetched.content) == sha(data), key
    assert not [p for p in local_root.rglob("*") if p.is_file()]  # old copies deleted
