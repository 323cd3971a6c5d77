"""`voipcloud storage ...`: the real executable against a real `voipcloud serve` and a real
moto_server; a migration interrupted by killing the controller, then resumed with --follow."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli_support import Cli, one_line_error
from tests.support.moto import MotoServer, moto_server
from tests.support.processes import Controller, wait_for

pytestmark = pytest.mark.e2e
MiB = 1024 * 1024
OBJECTS = 80


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    with moto_server(tmp_path / "moto") as server:
        yield server


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    started = Controller(
        data_dir=tmp_path / "controller",
        env={
            "VOIPCLOUD_MAX_BODY_BYTES": str(64 * MiB),
            "VOIPCLOUD_STORAGE_MULTIPART_MIB": "5",  # multipart above 5 MiB
        },
    ).start()
    yield started
    started.stop()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_storage_commands_and_a_migration_that_survives_a_killed_controller(
    tmp_path: Path, controller: Controller, moto: MotoServer
) -> None:
    cli = Cli(config_dir=tmp_path / "operator")
    cli.login(controller)
    shown = cli.json("storage", "show")
    assert shown["recordings"]["backend"] == "local"
    assert "Storage Configuration" in cli.ok("storage", "show").stdout

    # put / get / list / delete through the CLI, one over the multipart threshold
    big = tmp_path / "long-call.wav"
    big.write_bytes(os.urandom(6 * MiB + 11))
    stored = cli.json("storage", "put", "recordings", "1001/long-call.wav", str(big))
    assert stored["sha256"] == sha(big.read_bytes())
    assert stored["content_type"] == "audio/x-wav"
    copy = tmp_path / "copy.wav"
    done = cli.ok("storage", "get", "recordings", "1001/long-call.wav", "--file", str(copy))
    assert copy.read_bytes() == big.read_bytes()
    assert "sha256 verified" in done.stderr
    small = tmp_path / "note.txt"
    small.write_bytes(b"temporary")
    cli.ok("storage", "put", "recordings", "1001/note.txt", str(small))
    assert cli.ok("storage", "get", "recordings", "1001/note.txt").stdout == "temporary"
    listed = cli.json("storage", "list", "recordings", "--prefix", "1001/")
    assert [r["key"] for r in listed["items"]] == ["1001/long-call.wav", "1001/note.txt"]
    cli.ok("storage", "delete", "recordings", "1001/note.txt")
    error = one_line_error(cli.fails(1, "storage", "get", "recordings", "1001/note.txt"))
    assert "not found" in error

    # many more, through the API, then switch recordings to S3
    admin = controller.admin()
    contents = {"1001/long-call.wav": big.read_bytes()}
    for i in range(OBJECTS):
        key = f"{2000 + i % 7}/call-{i:04d}.wav"
        contents[key] = os.urandom(300 + i * 13)
        admin.put(f"/api/v1/storage/recordings/resources/{key}", content=contents[key])
    bucket = moto.create_bucket("cli-recordings")
    cli.ok(
        "storage",
        "set",
        "recordings",
        "--backend",
        "s3",
        "--bucket",
        bucket,
        "--region",
        "us-east-1",
        "--endpoint-url",
        moto.endpoint_url,
        "--prefix",
        "calls",
        "--access-key-id",
        moto.access_key_id,
        "--secret-access-key-stdin",
        "--sse",
        stdin=moto.secret_access_key + "\n",
    )
    shown = cli.json("storage", "show")
    assert moto.secret_access_key not in str(shown)
    assert shown["recordings"]["pending_migration"] == len(contents)
    assert "ok" in cli.ok("storage", "test", "recordings").stdout

    # a wrong secret: the clear error, exit 1, no traceback
    cli.ok(
        "storage",
        "set",
        "voicemail",
        "--backend",
        "s3",
        "--bucket",
        "no-such-bucket",
        "--region",
        "us-east-1",
        "--endpoint-url",
        moto.endpoint_url,
        "--access-key-id",
        "AKIAEXAMPLE",
        "--secret-access-key-stdin",
        stdin="whatever\n",
    )
    error = one_line_error(cli.fails(1, "storage", "test", "voicemail"))
    assert "bucket no-such-bucket does not exist" in error

    # start, kill the controller halfway, restart: the migration shows interrupted
    started = cli.json("storage", "migrate", "recordings")
    assert started["status"] == "running"

    def progress() -> dict[str, Any]:
        answer: dict[str, Any] = admin.get("/api/v1/storage/recordings/migration").json()
        return answer

    wait_for(lambda: progress()["done"] >= len(contents) // 2, timeout=60, what="halfway")
    controller.kill()
    controller.start()
    admin = controller.admin()
    interrupted = cli.json("storage", "migrate", "recordings", "--status")
    assert interrupted["status"] == "interrupted"
    assert 0 < interrupted["done"] < interrupted["total"] == len(contents)
    shown_text = cli.ok("storage", "migrate", "recordings", "--status").stderr
    assert "interrupted" in shown_text
    assert "Resume it where it stopped: `voipcloud storage migrate recordings --follow`" in (
        " ".join(shown_text.split())
    )

    resumed = cli.ok("storage", "migrate", "recordings", "--follow", timeout=120)
    assert "completed" in resumed.stderr
    assert f"{len(contents)}/{len(contents)}" in resumed.stderr  # the progress bar's end
    final = progress()
    assert (final["status"], final["done"], final["failed"]) == ("completed", len(contents), 0)

    # every object in the bucket with the recorded checksum; nothing left on local disk
    s3 = moto.client()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="calls/")
    in_bucket = {o["Key"].removeprefix("calls/") for page in pages for o in page["Contents"]}
    assert in_bucket == set(contents)
    for key, data in contents.items():
        assert sha(s3.get_object(Bucket=bucket, Key=f"calls/{key}")["Body"].read()) == sha(data)
    listing = admin.get("/api/v1/storage/recordings/resources", params={"limit": 1000}).json()
    assert {r["key"]: r["sha256"] for r in listing["items"]} == {
        k: sha(v) for k, v in contents.items()
    }
    local_root = controller.data_dir / "storage" / "recordings"
    assert not [p for p in local_root.rglob("*") if p.is_file()]
    started_at = time.monotonic()
    assert cli.ok("storage", "get", "recordings", "1001/long-call.wav", "--file", str(copy))
    assert copy.read_bytes() == contents["1001/long-call.wav"]
    assert time.monotonic() - started_at < 60
