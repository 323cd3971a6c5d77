"""`voipcloud backup` / `voipcloud restore` between real `voipcloud serve` processes, on
SQLite and on PostgreSQL (a fresh database per test on the shared server).

- a backup taken while a writer thread adds nodes, restored into a new data dir / an empty
  database, answers every API read exactly as the original did at the backup's moment, and
  its sealed values (session keys, secret parameters, S3 keys) still decrypt;
- a restore without the key, or with another key, is refused and changes nothing;
- a restore over a running controller, or into a non-empty database, is refused;
- a controller whose secret.key is missing (or wrong) over existing data refuses to start;
- the stale-WAL trap: a restore over a data dir left with -wal/-shm by a killed controller;
- DATA_DIR/tls travels with the archive: a controller restored onto a fresh data dir serves the
  same CA, so a client pinned to the old fingerprint connects; an archive of format 1 (no tls
  members) still restores; a damaged or escaping tls member is refused and changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import ssl
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.support import databases
from tests.support.processes import ADMIN_PASSWORD, Controller, voipcloud_executable
from voipcloud.api.app import build_controller
from voipcloud.config import Settings
from voipcloud.services import tls
from voipcloud.services.secrets_box import key_fingerprint

pytestmark = pytest.mark.e2e
API = "/api/v1"
SQL_PASSWORD = "sql-secret-0123456789"
DD_PASSWORD = "dd-secret-9876543210"
QUEUE_PASSWORD = "queue-shared-secret-42"
S3_ACCESS = "AKIABACKUPTEST000042"
S3_SECRET = "s3-secret-" + "x" * 24
MAX_WRITER_NODES = 3000
WRITER_SECONDS = 60.0


@dataclass
class Site:
    """One controller's state: its data dir and, for PostgreSQL, its database."""

    data_dir: Path
    database_url: str | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {"VOIPCLOUD_DATA_DIR": str(self.data_dir)}
        if self.database_url:
            env["VOIPCLOUD_DATABASE_URL"] = self.database_url
        return env

    def controller(self) -> Controller:
        return Controller(data_dir=self.data_dir, env=self.env)


class Sites:
    def __init__(self, dialect: str, root: Path) -> None:
        self.dialect = dialect
        self.root = root
        self.databases: list[str] = []

    def new(self, name: str) -> Site:
        if self.dialect == "sqlite":
            return Site(self.root / name)
        database = databases.create_database()  # empty: no template
        self.databases.append(database)
        return Site(self.root / name, databases.url_for(database))

    def drop(self) -> None:
        for database in self.databases:
            databases.drop_database(database)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sites(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sites]:
    if request.param == "postgresql" and not databases.postgres_available():
        pytest.skip(f"PostgreSQL unreachable: {databases.unreachable_reason}")
    made = Sites(request.param, tmp_path)
    try:
        yield made
    finally:
        made.drop()


@pytest.fixture
def running() -> Iterator[list[Controller]]:
    """Controllers to stop at the end, whatever happens."""
    started: list[Controller] = []
    yield started
    for controller in started:
        controller.stop()


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VOIPCLOUD_")}
    return subprocess.run(
        [voipcloud_executable(), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def ok(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json()


def paged(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in range(100):
        body = ok(client.get(path, params={**params, "limit": 500, "offset": page * 500}))
        items.extend(body["items"])
        if len(items) >= body["total"] or not body["items"]:
            return items
    raise AssertionError(f"{path}: more than 100 pages")


def populate(client: httpx.Client, local_dir: Path) -> dict[str, int]:
    """Nodes in several states with roles and secret parameters, properties, storage."""

    def add(hostname: str, **extra: Any) -> int:
        body = {"hostname": hostname, "private_ip": "10.0.0.5", **extra}
        return int(ok(client.post(f"{API}/nodes", json=body), 201)["node_id"])

    def assign(node_id: int, role: str, parameters: dict[str, Any]) -> None:
        ok(
            client.post(
                f"{API}/nodes/{node_id}/roles", json={"role": role, "parameters": parameters}
            ),
            201,
        )

    ok(client.put(f"{API}/infrastructure/properties", json={"queue_password": QUEUE_PASSWORD}))
    nodes = {
        "sql": add("db-1", container_id="ctr-sql-1"),
        "dd": add("dd-1"),
        "que": add("queue-1"),
        "sip": add("sip-1", public_ip="203.0.113.7"),
        "standby": add("spare-1"),
        "deleted": add("gone-1"),
    }
    assign(nodes["sql"], "sql", {"password": SQL_PASSWORD, "max_connections": 77})
    assign(nodes["dd"], "dd", {"password": DD_PASSWORD})
    assign(nodes["que"], "que", {})  # its password is the shared property
    assign(nodes["sip"], "sip", {"sip_port": 5070})
    assign(nodes["standby"], "wk", {"max_jobs": 3})
    ok(client.post(f"{API}/nodes/{nodes['standby']}/actions/standby", json={"reason": "spare"}))
    ok(client.delete(f"{API}/nodes/{nodes['deleted']}"))
    ok(client.patch(f"{API}/nodes/{nodes['sip']}", json={"hostname": "sip-edge-1"}))
    ok(client.post(f"{API}/extensions", json={"number": "1001", "label": "reception"}), 201)
    ok(
        client.put(
            f"{API}/storage",
            json={
                "faxes": {
                    "s3": {
                        "bucket": "pbx-faxes",
                        "region": "eu-west-1",
                        "endpoint_url": "http://127.0.0.1:9",
                        "prefix": "faxes",
                        "access_key_id": S3_ACCESS,
                        "secret_access_key": S3_SECRET,
                    }
                },
                "recordings": {"local": {"path": str(local_dir)}},
            },
        )
    )
    return nodes


class Writer(threading.Thread):
    """Adds nodes one request at a time until stopped (bounded in count and time)."""

    def __init__(self, controller: Controller) -> None:
        super().__init__(name="backup-writer", daemon=True)
        self.client = controller.admin()
        self.stopping = threading.Event()
        self.created: list[int] = []
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + WRITER_SECONDS
        try:
            for i in range(MAX_WRITER_NODES):
                if self.stopping.is_set() or time.monotonic() > deadline:
                    return
                body = {"hostname": f"w-{i:04d}", "private_ip": f"10.9.{i // 250}.{i % 250 + 1}"}
                answer = self.client.post(f"{API}/nodes", json=body)
                if answer.status_code != 201:
                    self.error = answer.text
                    return
                self.created.append(int(answer.json()["node_id"]))
        finally:
            self.client.close()


def last_event_id(site: Site) -> int:
    import sqlalchemy as sa

    url = site.database_url or f"sqlite+pysqlite:///{site.data_dir / 'voipcloud.sqlite3'}"
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT max(id) FROM events")).scalar_one())
    finally:
        engine.dispose()


def revealed(site: Site, node_ids: list[int]) -> dict[int, dict[str, dict[str, Any]]]:
    """What each node's agent is sent: the effective parameters, secrets decrypted."""
    settings = Settings.model_validate(
        {"data_dir": site.data_dir, "database_url": site.database_url}
    )
    controller = build_controller(settings)
    try:
        return {
            node_id: {
                assigned.assignment.role: {
                    name: value.value for name, value in assigned.effective.items()
                }
                for assigned in controller.roles.assigned(node_id, reveal_secrets=True)
            }
            for node_id in node_ids
        }
    finally:
        controller.ctx.db.dispose()


def s3_keys(site: Site) -> tuple[str, str]:
    settings = Settings.model_validate(
        {"data_dir": site.data_dir, "database_url": site.database_url}
    )
    controller = build_controller(settings)
    try:
        faxes = next(c for k, c in controller.storage.configuration().items() if k.value == "faxes")
        return faxes.s3.access_key_id, faxes.s3.secret_access_key
    finally:
        controller.ctx.db.dispose()


def test_backup_under_writes_restores_field_by_field(
    sites: Sites, tmp_path: Path, running: list[Controller]
) -> None:
    source = sites.new("original")
    original = source.controller().start()
    running.append(original)
    client = original.admin()
    setup = populate(client, tmp_path / "recordings")

    writer = Writer(original)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while len(writer.created) < 20 and time.monotonic() < deadline and writer.is_alive():
            time.sleep(0.02)
        before = len(writer.created)
        archive = tmp_path / "backup.tar.gz"
        made = cli("backup", str(archive), env=source.env)
        after = len(writer.created)
    finally:
        writer.stopping.set()
        writer.join(timeout=30)
    assert writer.error is None, writer.error
    assert made.returncode == 0, made.stderr
    assert after > before, "the writer added no node while the backup ran"
    assert "holds the encryption key" in made.stderr
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600

    copy = sites.new("restored")
    restored_out = cli("restore", str(archive), env=copy.env)
    assert restored_out.returncode == 0, restored_out.stderr
    assert "decrypts all" in restored_out.stdout
    snapshot_last_event = last_event_id(copy)  # logging in below adds events of its own
    restored = copy.controller().start()
    running.append(restored)
    again = restored.admin()

    # the snapshot is consistent: the writer's nodes form an unbroken prefix, each complete
    nodes_restored = paged(again, f"{API}/nodes") + paged(again, f"{API}/nodes", status="Deleted")
    written = sorted(n["hostname"] for n in nodes_restored if n["hostname"].startswith("w-"))
    assert written == [f"w-{i:04d}" for i in range(len(written))]
    assert before <= len(written) <= len(writer.created)
    assert len(written) < len(writer.created) or after == len(writer.created)
    ids = sorted(n["node_id"] for n in nodes_restored)
    assert set(setup.values()) <= set(ids)
    for node_id in ids:  # every field of every node, as the original answers it
        assert ok(again.get(f"{API}/nodes/{node_id}")) == ok(client.get(f"{API}/nodes/{node_id}"))
    lost = [i for i in writer.created if i not in ids]
    for node_id in lost[:3]:  # written after the snapshot: not in the restore
        assert again.get(f"{API}/nodes/{node_id}").status_code == 404

    for path in ("/roles", "/infrastructure/properties", "/storage", "/extensions"):
        assert ok(again.get(API + path)) == ok(client.get(API + path)), path
    since = [e for e in paged(again, f"{API}/events") if e["id"] > snapshot_last_event]
    assert {e["operation"] for e in since} <= {"login"}, since  # ours, after the restore
    events_restored = [e for e in paged(again, f"{API}/events") if e["id"] <= snapshot_last_event]
    events_original = [e for e in paged(client, f"{API}/events") if e["id"] <= snapshot_last_event]
    assert events_restored == events_original
    assert {e["node_id"] for e in events_restored} - {None} == set(ids)
    for node_id in setup.values():
        path = f"{API}/nodes/{node_id}/events"
        assert ok(again.get(path)) == ok(client.get(path))

    # sealed values still decrypt: the agents get the same credentials
    wanted = list(setup.values())
    assert revealed(copy, wanted) == revealed(source, wanted)
    credentials = revealed(copy, wanted)
    assert credentials[setup["sql"]]["sql"]["password"] == SQL_PASSWORD
    assert credentials[setup["dd"]]["dd"]["password"] == DD_PASSWORD
    assert credentials[setup["que"]]["que"]["password"] == QUEUE_PASSWORD
    assert s3_keys(copy) == (S3_ACCESS, S3_SECRET)
    session_key = ok(again.get(f"{API}/nodes/{setup['sql']}"))["session_key"]
    assert session_key
    joined = httpx.post(
        f"{restored.url}{API}/agent/join", json={"session_key": session_key}, timeout=10
    )
    assert joined.status_code == 200, joined.text
    assert joined.json()["node_id"] == setup["sql"]
    client.close()
    again.close()


def rewrite(archive: Path, out: Path, *, key: bytes | None) -> None:
    """A copy of `archive` with another key (manifest made consistent), or with none."""
    with tarfile.open(archive, "r:*") as source:
        members = {m.name: source.extractfile(m).read() for m in source.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(members.pop("manifest.json"))
    members.pop("secret.key")
    manifest["members"].pop("secret.key")
    if key is not None:
        members["secret.key"] = key
        manifest["members"]["secret.key"] = {
            "size": len(key),
            "sha256": hashlib.sha256(key).hexdigest(),
        }
        manifest["key_fingerprint"] = key_fingerprint(key)
    with tarfile.open(out, "w:gz") as target:
        for name, data in [("manifest.json", json.dumps(manifest).encode()), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            target.addfile(info, io.BytesIO(data))


def untouched(site: Site) -> bool:
    """Nothing restored: no database file (SQLite) / no table (PostgreSQL), no key."""
    if (site.data_dir / "secret.key").exists():
        return False
    if site.database_url is None:
        return not (site.data_dir / "voipcloud.sqlite3").exists()
    import sqlalchemy as sa

    engine = sa.create_engine(site.database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return not sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()


def test_restores_refused_change_nothing(
    sites: Sites, tmp_path: Path, running: list[Controller]
) -> None:
    source = sites.new("original")
    original = source.controller().start()
    running.append(original)
    with closing(original.admin()) as client:
        populate(client, tmp_path / "recordings")
    archive = tmp_path / "backup.tar.gz"
    assert cli("backup", str(archive), env=source.env).returncode == 0

    # a second backup to the same name is refused unless --force
    again = cli("backup", str(archive), env=source.env)
    assert again.returncode == 1
    assert "exists" in again.stderr
    # a backup without the key is refused and says where the key should be
    keyless_dir = tmp_path / "keyless"
    keyless_dir.mkdir()
    keyless_env = {**source.env, "VOIPCLOUD_DATA_DIR": str(keyless_dir)}
    if source.database_url is None:
        keyless_env["VOIPCLOUD_DATABASE_URL"] = (
            f"sqlite+pysqlite:///{source.data_dir / 'voipcloud.sqlite3'}"
        )
    refused = cli("backup", str(tmp_path / "nokey.tar.gz"), env=keyless_env)
    assert refused.returncode == 1
    assert f"no encryption key at {keyless_dir.resolve() / 'secret.key'}" in refused.stderr
    assert not (tmp_path / "nokey.tar.gz").exists()

    without_key = tmp_path / "without-key.tar.gz"
    rewrite(archive, without_key, key=None)
    other_key = tmp_path / "other-key.tar.gz"
    rewrite(archive, other_key, key=Fernet.generate_key())
    damaged = tmp_path / "damaged.tar.gz"
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged.write_bytes(bytes(raw))

    target = sites.new("target")
    for file, says in (
        (without_key, "holds no secret.key"),
        (other_key, "does not decrypt"),
        (damaged, "damaged"),
    ):
        answer = cli("restore", str(file), env=target.env)
        assert answer.returncode == 1, answer.stdout
        assert says in answer.stderr, answer.stderr
        assert untouched(target), file.name
    # a refused restore leaves nothing behind that would stop the right one (on PostgreSQL:
    # the tables and the schema's own functions of the refused one are dropped again)
    restored = cli("restore", str(archive), env=target.env)
    assert restored.returncode == 0, restored.stderr

    # over the running controller: refused (its data dir is locked)
    over = cli("restore", str(archive), env=source.env)
    assert over.returncode == 1
    assert "is running on this data dir" in over.stderr, over.stderr
    if sites.dialect == "postgresql":
        # its database, from another data dir: not empty, refused, running or stopped
        elsewhere = {**source.env, "VOIPCLOUD_DATA_DIR": str(tmp_path / "elsewhere")}
        for _ in ("running", "stopped"):
            into_used = cli("restore", str(archive), env=elsewhere)
            assert into_used.returncode == 1
            assert "is not empty" in into_used.stderr, into_used.stderr
            assert not (tmp_path / "elsewhere" / "secret.key").exists()
            original.stop()
        original.start()
    # and the original still serves its own data
    with closing(original.admin()) as client:
        assert ok(client.get(f"{API}/nodes"))["total"] == 6  # 5 live + the IC node


def test_missing_or_wrong_key_refuses_to_start(sites: Sites, running: list[Controller]) -> None:
    site = sites.new("controller")
    controller = site.controller().start()
    running.append(controller)
    controller.stop()
    key = site.data_dir / "secret.key"
    original_key = key.read_bytes()
    key.unlink()
    with pytest.raises(AssertionError, match="voipcloud serve exited"):
        controller.start()
    log = controller.log()
    assert f"the encryption key {key.resolve()} is missing" in log
    assert "voipcloud restore FILE" in log
    assert not key.exists(), "a new key was written over existing data"

    key.write_bytes(Fernet.generate_key())
    with pytest.raises(AssertionError, match="voipcloud serve exited"):
        controller.start()
    assert "does not decrypt" in controller.log()

    key.write_bytes(original_key)
    controller.start()
    with closing(controller.admin()) as client:
        assert ok(client.get(f"{API}/nodes"))["total"] == 1


def test_restore_over_a_stale_wal(tmp_path: Path, running: list[Controller]) -> None:
    """The trap of copying a file over the database: the old -wal/-shm beside it."""
    source = Site(tmp_path / "source")
    started = source.controller().start()
    running.append(started)
    with closing(started.admin()) as client:
        for i in range(3):
            ok(
                client.post(
                    f"{API}/nodes", json={"hostname": f"kept-{i}", "private_ip": "10.0.0.1"}
                ),
                201,
            )
        expected = paged(client, f"{API}/nodes")
    archive = tmp_path / "backup.tar.gz"
    assert cli("backup", str(archive), env=source.env).returncode == 0
    started.stop()

    old = Site(tmp_path / "old")
    killed = old.controller().start()
    running.append(killed)
    with closing(killed.admin()) as client:
        for i in range(40):
            ok(
                client.post(
                    f"{API}/nodes", json={"hostname": f"old-{i}", "private_ip": "10.0.0.2"}
                ),
                201,
            )
    killed.kill()  # no checkpoint: the last changes live only in the -wal
    wal = old.data_dir / "voipcloud.sqlite3-wal"
    assert wal.exists()
    assert wal.stat().st_size > 0
    assert (old.data_dir / "voipcloud.sqlite3-shm").exists()
    # a backup of it (of a copy: the backup's connection checkpoints the -wal when it closes)
    # holds what only the -wal held, where a copy of the database file alone would not
    twin = Site(tmp_path / "old-twin")
    shutil.copytree(old.data_dir, twin.data_dir)
    of_old = tmp_path / "old.tar.gz"
    assert cli("backup", str(of_old), env=twin.env).returncode == 0
    with tarfile.open(of_old, "r:*") as packed:
        manifest = json.loads(packed.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest["counts"]["nodes"] == 41  # the IC node and the 40 written before the kill

    answer = cli("restore", str(archive), env=old.env)
    assert answer.returncode == 0, answer.stderr
    assert not wal.exists()
    assert not (old.data_dir / "voipcloud.sqlite3-shm").exists()
    [aside] = list(old.data_dir.glob("before-restore-*"))
    assert {p.name for p in aside.iterdir()} >= {"voipcloud.sqlite3", "voipcloud.sqlite3-wal"}

    revived = old.controller().start()
    running.append(revived)
    with closing(revived.admin()) as client:
        assert paged(client, f"{API}/nodes") == expected
        for _ in range(3):  # and it keeps working: writes, restarts, reads back
            ok(
                client.post(
                    f"{API}/nodes", json={"hostname": f"new-{_}", "private_ip": "10.0.0.3"}
                ),
                201,
            )
    revived.stop()
    revived.start()
    with closing(revived.admin()) as client:
        assert ok(client.get(f"{API}/nodes"))["total"] == len(expected) + 3


# --- the controller's TLS material (DATA_DIR/tls) ------------------------------------------

TLS_FILES = {  # after `tls ca begin`: the CA, the server pair and the announced next CA
    "tls/ca.pem": 0o644,
    "tls/ca.key": 0o600,
    "tls/server.pem": 0o644,
    "tls/server.key": 0o600,
    "tls/next-ca.pem": 0o644,
    "tls/next-ca.key": 0o600,
}


def tls_modes(data_dir: Path) -> dict[str, int]:
    root = data_dir / "tls"
    return {
        f"tls/{path.name}": stat.S_IMODE(path.stat().st_mode)
        for path in root.iterdir()
        if path.is_file() and not path.name.startswith(".")
    }


def repack(
    archive: Path,
    out: Path,
    *,
    drop_tls: bool = False,
    change: dict[str, bytes] | None = None,
    rename: tuple[str, str] | None = None,
) -> None:
    """A copy of `archive` rewritten: without its tls/ members as a format 1 archive (what a
    voipcloud before them wrote), a member's bytes changed (manifest untouched: damaged), or a
    member renamed in both the manifest and the tar."""
    with tarfile.open(archive, "r:*") as source:
        members = {m.name: source.extractfile(m).read() for m in source.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(members.pop("manifest.json"))
    if drop_tls:
        for name in [n for n in members if n.startswith("tls/")]:
            members.pop(name)
            manifest["members"].pop(name)
        manifest["format_version"] = 1
        manifest.pop("tls_ca_fingerprint")
    for name, data in (change or {}).items():
        members[name] = data
    if rename is not None:
        members[rename[1]] = members.pop(rename[0])
        manifest["members"][rename[1]] = manifest["members"].pop(rename[0])
    with tarfile.open(out, "w:gz") as target:
        for name, data in [("manifest.json", json.dumps(manifest).encode()), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            target.addfile(info, io.BytesIO(data))


def shown_fingerprint(data_dir: Path) -> str:
    shown = cli("tls", "show", "--data-dir", str(data_dir), env={})
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.startswith("CA fingerprint: "))
    return line.removeprefix("CA fingerprint: ")


def test_restore_keeps_the_ca_agents_pinned(
    sites: Sites, tmp_path: Path, running: list[Controller]
) -> None:
    from tests.e2e.cli_support import Cli
    from tests.support.tls_netns import HttpsController

    source = sites.new("original")
    original = HttpsController(data_dir=source.data_dir, env={**source.env, "VOIPCLOUD_TLS": "on"})
    running.append(original.start())
    pinned = shown_fingerprint(source.data_dir)
    assert pinned == original.fingerprint()
    old_ca = tmp_path / "old-ca.pem"  # what a pinned client kept: the old CA, nothing else
    old_ca.write_bytes((source.data_dir / "tls" / "ca.pem").read_bytes())
    with closing(original.admin()) as client:
        ok(client.post(f"{API}/nodes", json={"hostname": "kept-1", "private_ip": "10.0.0.9"}), 201)
    # a CA replacement under way: the next CA is announced, its key must come along too
    begun = cli("tls", "ca", "begin", "--data-dir", str(source.data_dir), env={})
    assert begun.returncode == 0, begun.stderr
    assert tls_modes(source.data_dir) == TLS_FILES
    originals = {n: (source.data_dir / n).read_bytes() for n in TLS_FILES}

    archive = tmp_path / "backup.tar.gz"
    brought = {"VOIPCLOUD_TLS_CERT": "/etc/ssl/elsewhere/fullchain.pem"}
    made = cli("backup", str(archive), env={**source.env, **brought})
    assert made.returncode == 0, made.stderr
    assert f"TLS: {len(TLS_FILES)} files of {source.data_dir.resolve() / 'tls'}" in made.stdout
    assert pinned in made.stdout
    assert "/etc/ssl/elsewhere/fullchain.pem) is outside" in made.stderr
    with tarfile.open(archive, "r:*") as packed:
        manifest = json.loads(packed.extractfile("manifest.json").read())  # type: ignore[union-attr]
        in_tar = {m.name: m for m in packed.getmembers()}
        for name, data in originals.items():
            assert packed.extractfile(name).read() == data, name  # type: ignore[union-attr]
    assert manifest["format_version"] == 2
    assert manifest["tls_ca_fingerprint"] == pinned
    for name, mode in TLS_FILES.items():
        described = manifest["members"][name]
        assert described["sha256"] == hashlib.sha256(originals[name]).hexdigest(), name
        assert described["size"] == len(originals[name])
        assert described["mode"] == f"{mode:04o}"
        assert stat.S_IMODE(in_tar[name].mode) == mode
    assert "tls/.lock" not in in_tar
    original.stop()

    # a damaged or misplaced tls member: refused, nothing of it restored
    target = sites.new("refused")
    damaged = tmp_path / "damaged-key.tar.gz"
    repack(archive, damaged, change={"tls/ca.key": b"not the key"})
    escaping = tmp_path / "escaping.tar.gz"
    repack(archive, escaping, rename=("tls/ca.key", "tls/../ca.key"))
    for file, says in ((damaged, "tls/ca.key does not match"), (escaping, "not a path inside")):
        answer = cli("restore", str(file), env=target.env)
        assert answer.returncode == 1, answer.stdout
        assert says in answer.stderr, answer.stderr
        assert untouched(target), file.name
        assert not (target.data_dir / "tls").exists()
        assert not (target.data_dir / "ca.key").exists()

    # into a fresh data dir (a new host): the same CA, keys 0600, directory 0700
    copy = sites.new("restored")
    answer = cli("restore", str(archive), env=copy.env)
    assert answer.returncode == 0, answer.stderr
    assert f"TLS: {len(TLS_FILES)} files placed" in answer.stdout
    assert pinned in answer.stdout
    assert stat.S_IMODE((copy.data_dir / "tls").stat().st_mode) == 0o700
    assert tls_modes(copy.data_dir) == TLS_FILES
    assert {n: (copy.data_dir / n).read_bytes() for n in TLS_FILES} == originals
    restored = HttpsController(data_dir=copy.data_dir, env={**copy.env, "VOIPCLOUD_TLS": "on"})
    running.append(restored.start())
    assert shown_fingerprint(copy.data_dir) == pinned
    # an https client trusting only the old CA file
    trusting_old = ssl.create_default_context(cafile=str(old_ca))
    health = httpx.get(f"{restored.url}/healthz", verify=trusting_old, timeout=10)
    assert health.status_code == 200
    # the operator's CLI pinned to the old fingerprint logs in and reads the restored data
    operator = Cli(config_dir=tmp_path / "operator")
    login = operator.run(
        "login",
        "--controller",
        restored.url,
        "--password-stdin",
        "--ca-fingerprint",
        pinned,
        stdin=ADMIN_PASSWORD + "\n",
    )
    assert login.returncode == 0, login.stderr
    assert "kept-1" in operator.ok("node", "list").stdout
    restored.stop()

    # an archive from before the tls members (format 1): restores; no CA comes with it
    legacy = tmp_path / "format-1.tar.gz"
    repack(archive, legacy, drop_tls=True)
    older = sites.new("from-format-1")
    answer = cli("restore", str(legacy), env=older.env)
    assert answer.returncode == 0, answer.stderr
    assert "holds no TLS files" in answer.stderr
    assert not (older.data_dir / "tls").exists()
    fresh = HttpsController(data_dir=older.data_dir, env={**older.env, "VOIPCLOUD_TLS": "on"})
    running.append(fresh.start())
    with closing(fresh.admin()) as client:
        names = {n["hostname"] for n in paged(client, f"{API}/nodes")}
    assert "kept-1" in names
    new_ca = fresh.fingerprint()
    assert new_ca != pinned  # a new CA: what the tls members are for
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{fresh.url}/healthz", verify=trusting_old, timeout=10)
    fresh.stop()
    if sites.dialect == "sqlite":
        # the same data dir, now restored from the archive with tls: its new CA moves aside
        answer = cli("restore", str(archive), env=older.env)
        assert answer.returncode == 0, answer.stderr
        [aside] = list(older.data_dir.glob("before-restore-*"))
        assert tls.chain_fingerprint(aside / "tls" / "ca.pem") == new_ca
        assert shown_fingerprint(older.data_dir) == pinned
        assert tls_modes(older.data_dir) == TLS_FILES
