"""Resource store throughput against a local moto_server, and memory while moving a large object.

Starts a real `moto_server` on 127.0.0.1 and a `StorageService` on a temporary SQLite
database, then measures:

1. large object (default 200 MiB, from a file on disk): store through S3 (multipart), fetch
   (streamed into a sha256), migrate local → S3; for each, the time, MiB/s, the peak of Python
   allocations (tracemalloc) and the process's resident set before the phase and its
   high-water mark during it (VmHWM, reset before each phase through /proc/self/clear_refs);
2. small objects (default 400 x 16 KiB): store and fetch, objects/s and MiB/s, on the local
   backend and on S3;
3. the same small objects through the REST API (uvicorn on 127.0.0.1, httpx client).

Prints figures; never passes or fails. Usage:

    .venv/bin/python bench/storage_throughput.py [--large-mib 200] [--small 400] [--small-kib 16]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support
from tests.support.moto import moto_server
from tests.support.server import serve_in_thread

from voipcloud.api.app import create_app
from voipcloud.config import Settings
from voipcloud.domain.storage import ResourceKind
from voipcloud.services.context import Context
from voipcloud.services.secrets_box import SecretBox
from voipcloud.services.storage import StorageService
from voipcloud.store.database import Database, sqlite_url

MiB = 1024 * 1024
ACTOR = "admin:bench"


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the resident high-water mark (VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measured(name: str, size: int, work: Callable[[], Any]) -> None:
    """Run `work` once; print time, MiB/s, tracemalloc peak and the RSS high-water mark."""
    before = _status_mib("VmRSS")
    reset = reset_peak_rss()
    tracemalloc.start()
    started = time.perf_counter()
    work()
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    high = _status_mib("VmHWM")
    print(
        f"  {name:<32} {elapsed:6.2f} s {size / MiB / elapsed:7.1f} MiB/s   "
        f"Python peak {peak / MiB:5.1f} MiB   RSS {before:4.0f} MiB before, peak "
        f"{high:4.0f} MiB (+{high - before:.0f}){'' if reset else ' since start'}"
    )


def rate(name: str, count: int, size: int, work: Callable[[], Any]) -> None:
    started = time.perf_counter()
    work()
    elapsed = time.perf_counter() - started
    print(
        f"  {name:<34} {count / elapsed:8.0f} objects/s  {count * size / MiB / elapsed:7.1f} MiB/s"
        f"   ({count} × {size // 1024} KiB in {elapsed:.2f} s)"
    )


def s3_change(endpoint: str, bucket: str, key: str, secret: str) -> dict[str, Any]:
    return {
        "backend": "s3",
        "s3": {
            "bucket": bucket,
            "region": "us-east-1",
            "endpoint_url": endpoint,
            "prefix": "bench",
            "access_key_id": key,
            "secret_access_key": secret,
        },
    }


def large_object(storage: StorageService, work_dir: Path, moto: Any, size_mib: int) -> None:
    print(f"Large object: {size_mib} MiB (multipart threshold and part size 8 MiB)")
    source = work_dir / "large.bin"
    with source.open("wb") as out:
        for _ in range(size_mib):
            out.write(os.urandom(MiB))
    size = source.stat().st_size
    bucket = moto.create_bucket("bench-large")
    change = s3_change(moto.endpoint_url, bucket, moto.access_key_id, moto.secret_access_key)

    storage.configure(actor=ACTOR, changes={"recordings": change})

    def store() -> None:
        with source.open("rb") as content:
            storage.put(kind=ResourceKind.RECORDINGS, key="large/s3.bin", content=content)

    def fetch() -> None:
        _, chunks = storage.open(kind=ResourceKind.RECORDINGS, key="large/s3.bin")
        hasher = hashlib.sha256()
        for chunk in chunks:
            hasher.update(chunk)

    measured("store to S3 (multipart)", size, store)
    measured("fetch from S3 (streamed)", size, fetch)

    storage.configure(actor=ACTOR, changes={"faxes": {"backend": "local"}})
    with source.open("rb") as content:
        storage.put(kind=ResourceKind.FAXES, key="large/local.bin", content=content)
    storage.configure(actor=ACTOR, changes={"faxes": change})

    def migrate() -> None:
        progress = storage.migrations.start(actor=ACTOR, kind=ResourceKind.FAXES, wait=True)
        assert progress.status.value == "completed", progress

    measured("migrate local → S3 (verified)", size, migrate)
    source.unlink()


def small_objects(storage: StorageService, moto: Any, count: int, size_kib: int) -> None:
    print(f"Small objects through the service: {count} × {size_kib} KiB")
    payloads = [os.urandom(size_kib * 1024) for _ in range(count)]
    bucket = moto.create_bucket("bench-small")
    change = s3_change(moto.endpoint_url, bucket, moto.access_key_id, moto.secret_access_key)
    for backend, kind in (("local", ResourceKind.VOICEMAIL), ("s3", ResourceKind.VOICEMAIL)):
        if backend == "s3":
            storage.configure(actor=ACTOR, changes={kind.value: change})

        def store(backend: str = backend, kind: ResourceKind = kind) -> None:
            for i, data in enumerate(payloads):
                key = f"{backend}/{i % 50}/m{i}.wav"
                storage.put(kind=kind, key=key, content=io.BytesIO(data))

        def fetch(backend: str = backend, kind: ResourceKind = kind) -> None:
            for i in range(count):
                _, chunks = storage.open(kind=kind, key=f"{backend}/{i % 50}/m{i}.wav")
                for _ in chunks:
                    pass

        rate(f"store, {backend}", count, size_kib * 1024, store)
        rate(f"fetch, {backend}", count, size_kib * 1024, fetch)


def over_http(work_dir: Path, moto: Any, count: int, size_kib: int) -> None:
    import httpx

    print(f"Small objects through the REST API (uvicorn, one client): {count} × {size_kib} KiB")
    settings = Settings.model_validate(
        {
            "data_dir": work_dir / "http",
            "database_url": sqlite_url(work_dir),
            "admin_password": "bench-password",
            "max_body_bytes": 64 * MiB,
        }
    )
    payloads = [os.urandom(size_kib * 1024) for _ in range(count)]
    bucket = moto.create_bucket("bench-http")
    with serve_in_thread(create_app(settings)) as url:
        client = httpx.Client(base_url=url + "/api/v1", timeout=60)
        token = client.post("/auth/token", json={"username": "admin", "password": "bench-password"})
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        for backend in ("local", "s3"):
            if backend == "s3":
                change = s3_change(
                    moto.endpoint_url, bucket, moto.access_key_id, moto.secret_access_key
                )
                client.put("/storage", json={"faxes": change}).raise_for_status()

            def store(backend: str = backend) -> None:
                for i, data in enumerate(payloads):
                    path = f"/storage/faxes/resources/{backend}/f{i}.tif"
                    client.put(path, content=data).raise_for_status()

            def fetch(backend: str = backend) -> None:
                for i in range(count):
                    client.get(f"/storage/faxes/resources/{backend}/f{i}.tif").raise_for_status()

            rate(f"PUT over HTTP, {backend}", count, size_kib * 1024, store)
            rate(f"GET over HTTP, {backend}", count, size_kib * 1024, fetch)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-mib", type=int, default=200)
    parser.add_argument("--small", type=int, default=400)
    parser.add_argument("--small-kib", type=int, default=16)
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, moto_server on 127.0.0.1")
    with tempfile.TemporaryDirectory(prefix="voipcloud-bench-") as tmp:
        work_dir = Path(tmp)
        db = Database(sqlite_url(work_dir / "service"))
        (work_dir / "service").mkdir()
        db.migrate()
        storage = StorageService(
            Context(db=db, box=SecretBox.in_data_dir(work_dir / "service")),
            data_dir=work_dir / "service",
        )
        with moto_server(work_dir / "moto") as moto:
            print(f"RSS after start-up: {_status_mib('VmRSS'):.0f} MiB")
            large_object(storage, work_dir, moto, args.large_mib)
            small_objects(storage, moto, args.small, args.small_kib)
            over_http(work_dir, moto, args.small, args.small_kib)
        db.dispose()


if __name__ == "__main__":
    main()
