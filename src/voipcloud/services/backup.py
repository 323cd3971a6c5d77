"""Whole-state backup and restore: the database and the key that opens it, in one archive.

The archive is a gzip'd tar of exactly these members:

- `manifest.json`: format and version, the voipcloud version, `created_at`, the `dialect`,
  the `schema_revision`, the `key_fingerprint`, row counts, and the size and sha256 of every
  other member;
- `database.sqlite3` (SQLite: a copy made with SQLite's online backup API, one consistent
  snapshot even while the controller writes) or `database.pgdump` (PostgreSQL: `pg_dump -Fc`
  of an exported snapshot, the same snapshot the key is checked against);
- `secret.key`: the key every sealed value needs. So the archive is written with mode 0600;
- `tls/...` (format 2, when the controller has its own CA): every regular file of
  `DATA_DIR/tls` (`voipcloud.services.tls`: the CA's certificate and key, the server
  certificate and key, a next or retired CA during a CA replacement), each with its mode in
  the manifest, copied under the TLS directory's lock (one consistent set). Its `.lock` and
  the temporaries of an atomic write (dot files) are left out. A certificate brought with
  `--tls-cert`/`--tls-key` outside `DATA_DIR/tls` is not copied (the command says so).

A backup refuses to run without the key, or with a key that does not open the data. A restore
verifies the archive (manifest, sizes, sha256, the key's fingerprint), refuses a running
controller (the data dir's lock, `instance_lock`) and a non-empty PostgreSQL database, checks
that the key decrypts every sealed value of the restored data, and only then puts the files in
place; the files it replaces are moved aside, never deleted. On any failure nothing is changed.
With `tls/` members, `DATA_DIR/tls` is replaced as one directory (0700, keys 0600): the restored
controller keeps its CA, so agents pinned with `--ca-fingerprint` accept it. An archive of
format 1 (no `tls/` members) restores as before and leaves `DATA_DIR/tls` as it is.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.engine import URL, make_url

from voipcloud import __version__
from voipcloud.services import instance_lock, key_guard, tls
from voipcloud.services.secrets_box import KEY_FILE, SecretBox, key_fingerprint
from voipcloud.store import tables
from voipcloud.store.database import alembic_config

FORMAT = "voipcloud-backup"
FORMAT_VERSION = 2  # 2: the tls/ members; 1 (without them) is still read
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
SQLITE_MEMBER = "database.sqlite3"
POSTGRES_MEMBER = "database.pgdump"
KEY_MEMBER = "secret.key"
DATABASE_MEMBERS = {"sqlite": SQLITE_MEMBER, "postgresql": POSTGRES_MEMBER}
TLS_MEMBER_DIR = tls.TLS_DIR  # members "tls/<path>", as in DATA_DIR
MAX_MANIFEST_BYTES = 1 << 20
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
COUNTED = ("nodes", "role_assignments", "events", "administrators", "extensions")
PG_TIMEOUT = 3600.0  # seconds a pg_dump / pg_restore may take


class BackupError(Exception):
    """A backup or restore refused or failed; nothing was changed. The message says why."""


@dataclass(frozen=True)
class Target:
    """Where the controller keeps its state: the data dir and the database URL."""

    data_dir: Path
    database_url: str
    brought_tls: tuple[Path, ...] = ()  # --tls-cert / --tls-key as configured, if any

    @property
    def url(self) -> URL:
        return make_url(self.database_url)

    @property
    def dialect(self) -> str:
        name = self.url.get_backend_name()
        if name not in DATABASE_MEMBERS:
            raise BackupError(f"unsupported database {name!r}: SQLite and PostgreSQL only")
        return name

    @property
    def sqlite_path(self) -> Path:
        database = self.url.database
        if not database or database == ":memory:":
            raise BackupError("the SQLite URL names no database file")
        return Path(database).resolve()

    @property
    def key_path(self) -> Path:
        return (self.data_dir / KEY_FILE).resolve()

    @property
    def tls_path(self) -> Path:
        return tls.tls_dir(self.data_dir.resolve())

    @property
    def label(self) -> str:
        return key_guard.database_label(self.database_url)


@dataclass
class LocalFiles:
    kind: str
    path: str
    resources: int


@dataclass
class BackupReport:
    file: Path
    size: int
    manifest: dict[str, Any]
    local_files: list[LocalFiles] = field(default_factory=list)
    tls_members: list[str] = field(default_factory=list)
    # configured certificate files outside DATA_DIR/tls: not in the archive
    tls_not_copied: list[Path] = field(default_factory=list)


@dataclass
class RestoreReport:
    manifest: dict[str, Any]
    sealed_checked: int
    moved_aside: Path | None
    local_files: list[LocalFiles] = field(default_factory=list)
    tls_members: list[str] = field(default_factory=list)  # placed in DATA_DIR/tls


# --- backup -------------------------------------------------------------------------------


def create_backup(target: Target, file: Path, *, overwrite: bool = False) -> BackupReport:
    """Write the archive `file` (0600) atomically: a temporary file renamed into place."""
    dialect = target.dialect
    box = _data_dir_box(target)
    file = file.resolve()
    if file.exists() and not overwrite:
        raise BackupError(f"{file} exists; choose another name, or --force to replace it")
    if not file.parent.is_dir():
        raise BackupError(f"no such directory: {file.parent}")
    with _scratch(file.parent, ".voipcloud-backup-") as scratch:
        database = scratch / DATABASE_MEMBERS[dialect]
        if dialect == "sqlite":
            facts = _snapshot_sqlite(target, database, box)
        else:
            facts = _snapshot_postgres(target, database, box)
        key_copy = scratch / KEY_MEMBER
        key_copy.write_bytes(target.key_path.read_bytes())
        tls_copies = _copy_tls(target, scratch)
        members = [database, key_copy, *tls_copies]
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "voipcloud_version": __version__,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "dialect": dialect,
            "schema_revision": facts.revision,
            "key_fingerprint": box.fingerprint,
            "sealed_values": facts.sealed,
            "counts": facts.counts,
            "tls_ca_fingerprint": tls.own_ca_fingerprint(scratch) if tls_copies else None,
            "members": {
                _arcname(scratch, path): _describe(path, mode=path in tls_copies)
                for path in members
            },
        }
        _write_archive(file, manifest, scratch, members, overwrite=overwrite)
    tls_dir = target.tls_path
    return BackupReport(
        file=file,
        size=file.stat().st_size,
        manifest=manifest,
        local_files=facts.local_files,
        tls_members=[_arcname(scratch, path) for path in tls_copies],
        tls_not_copied=[
            path
            for path in target.brought_tls
            if not path.resolve().is_relative_to(tls_dir.resolve())
        ],
    )


def _arcname(scratch: Path, path: Path) -> str:
    return path.relative_to(scratch).as_posix()


def _copy_tls(target: Target, scratch: Path) -> list[Path]:
    """Every regular file of DATA_DIR/tls into scratch/tls, under the TLS lock (serve's
    renewal, `tls rotate` and `tls ca ...` write under it: the copy is one consistent set)."""
    source = target.tls_path
    if not source.is_dir():
        return []
    out = scratch / TLS_MEMBER_DIR
    out.mkdir(mode=tls.DIR_MODE)
    copies: list[Path] = []
    try:
        with tls.locked(target.data_dir.resolve()) as directory:
            for root, dirs, files in os.walk(directory):  # symbolic links are not followed
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    path = Path(root) / name
                    if name.startswith(".") or not stat.S_ISREG(path.lstat().st_mode):
                        continue  # .lock, an atomic write's temporary, a link
                    copy = out / path.relative_to(directory)
                    copy.parent.mkdir(parents=True, exist_ok=True, mode=tls.DIR_MODE)
                    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as sink:
                        sink.write(path.read_bytes())
                    os.chmod(copy, _member_mode(copy.name, stat.S_IMODE(path.lstat().st_mode)))
                    copies.append(copy)
    except OSError as exc:
        raise BackupError(
            f"could not read {source} ({exc.strerror or exc}): run the backup as the "
            "controller's user"
        ) from None
    return copies


def _member_mode(name: str, mode: int) -> int:
    """A private key is 0600 whatever it was; nothing else is executable or writable by
    others."""
    return tls.KEY_MODE if name.endswith(".key") else mode & 0o644


@dataclass
class _Facts:
    revision: str
    sealed: int
    counts: dict[str, int]
    local_files: list[LocalFiles]


def _data_dir_box(target: Target) -> SecretBox:
    path = target.key_path
    if not path.is_file():
        raise BackupError(
            f"no encryption key at {path}: a backup without it could not be read back "
            "(session keys, secret parameters and S3 keys are sealed with it). Run the backup "
            "with the controller's data dir (--data-dir or VOIPCLOUD_DATA_DIR), where its "
            "secret.key is"
        )
    try:
        return SecretBox(path.read_bytes())
    except ValueError:
        raise BackupError(f"{path} is not a voipcloud key (a Fernet key)") from None


def _facts(conn: Connection, box: SecretBox, *, where: str, key_path: Path) -> _Facts:
    present = set(sa.inspect(conn).get_table_names())
    if "alembic_version" not in present:
        raise BackupError(f"{where} holds no voipcloud schema: nothing to back up")
    revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    check = key_guard.check_key(conn, box)
    if not check.ok:
        raise BackupError(key_guard.mismatch_message(check, key_path=str(key_path), where=where))
    counts = {
        name: conn.execute(
            sa.select(sa.func.count()).select_from(tables.metadata.tables[name])
        ).scalar_one()
        for name in COUNTED
        if name in present
    }
    return _Facts(
        revision=str(revision),
        sealed=check.checked,
        counts=counts,
        local_files=_local_files(conn, present),
    )


def _local_files(conn: Connection, present: set[str]) -> list[LocalFiles]:
    """Stored resources held in local directories: files, not in the database."""
    if not {"storage_resources", "storage_config"} <= present:
        return []
    r, c = tables.storage_resources, tables.storage_config
    query = (
        sa.select(r.c.kind, c.c.local_path, sa.func.count())
        .select_from(r.outerjoin(c, c.c.kind == r.c.kind))
        .where(sa.or_(r.c.backend == "local", r.c.stale_backend == "local"))
        .group_by(r.c.kind, c.c.local_path)
    )
    return [
        LocalFiles(kind=kind, path=path or "DATA_DIR/storage/" + kind, resources=count)
        for kind, path, count in conn.execute(query)
    ]


def _sqlite_engine(path: Path) -> sa.Engine:
    """A plain engine on a copy: no WAL switch, no pragmas of the controller's engine."""
    return sa.create_engine(f"sqlite+pysqlite:///{path}", poolclass=sa.pool.NullPool)


def _snapshot_sqlite(target: Target, out: Path, box: SecretBox) -> _Facts:
    source_path = target.sqlite_path
    if not source_path.is_file():
        raise BackupError(f"no SQLite database at {source_path}")
    # read-write, though it only reads: a -wal left by a killed controller is recovered, not
    # skipped (a read-only connection cannot rebuild a missing -shm)
    source = sqlite3.connect(source_path, timeout=30)
    try:
        copy = sqlite3.connect(out)
        try:
            source.backup(copy)  # all pages in one step under one read transaction: a snapshot
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            verdict = copy.execute("PRAGMA quick_check").fetchone()
        finally:
            copy.close()
    finally:
        source.close()
    if verdict != ("ok",):
        raise BackupError(f"the copy of {source_path} fails SQLite's check: {verdict}")
    engine = _sqlite_engine(out)
    try:
        with engine.connect() as conn:
            return _facts(conn, box, where=f"the database {source_path}", key_path=target.key_path)
    finally:
        engine.dispose()


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without the password, and the environment that carries it."""
    env = {**os.environ}
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run_tool(command: list[str], env: dict[str, str], what: str) -> None:
    tool = shutil.which(command[0])
    if tool is None:
        raise BackupError(f"{command[0]} is not installed (the PostgreSQL client tools)")
    try:
        done = subprocess.run(  # noqa: S603 - fixed tool, arguments are ours
            [tool, *command[1:]], env=env, capture_output=True, timeout=PG_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise BackupError(f"{what} took longer than {PG_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        detail = " ".join(done.stderr.decode(errors="replace").split())[:800]
        raise BackupError(f"{what} failed: {detail}")


def _snapshot_postgres(target: Target, out: Path, box: SecretBox) -> _Facts:
    engine = sa.create_engine(target.database_url, poolclass=sa.pool.NullPool)
    uri, env = _libpq(target.url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
            facts = _facts(
                conn, box, where=f"the database {target.label}", key_path=target.key_path
            )
            # the dump reads the same snapshot the key was checked against
            _run_tool(
                [
                    "pg_dump",
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    f"--file={out}",
                    f"--dbname={uri}",
                ],
                env,
                "pg_dump",
            )
            conn.exec_driver_sql("COMMIT")
            return facts
    except sa.exc.SQLAlchemyError as exc:
        raise BackupError(
            f"the database {target.label} did not answer: {_first_line(exc)}"
        ) from None
    finally:
        engine.dispose()


def _describe(path: Path, *, mode: bool = False) -> dict[str, Any]:
    described: dict[str, Any] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    if mode:
        described["mode"] = f"{stat.S_IMODE(path.stat().st_mode):04o}"
    return described


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_archive(
    file: Path, manifest: dict[str, Any], scratch: Path, members: list[Path], *, overwrite: bool
) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".part", dir=file.parent)
    try:
        os.fchmod(fd, 0o600)  # it holds the key
        with os.fdopen(fd, "wb") as raw:
            with (
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as packed,
                tarfile.open(fileobj=packed, mode="w") as archive,
            ):
                _add_bytes(archive, MANIFEST, json.dumps(manifest, indent=2).encode())
                for member in members:
                    mode = stat.S_IMODE(member.stat().st_mode)
                    archive.add(
                        member,
                        arcname=_arcname(scratch, member),
                        filter=functools.partial(_plain, mode=mode),
                    )
            raw.flush()
            os.fsync(raw.fileno())
        if overwrite:
            os.replace(temporary, file)
        else:
            try:
                os.link(temporary, file)  # never over a file that appeared meanwhile
            except FileExistsError:
                raise BackupError(f"{file} appeared meanwhile; nothing written") from None
        _fsync_dir(file.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _plain(info: tarfile.TarInfo, mode: int = 0o600) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = mode
    return info


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(datetime.now(UTC).timestamp())
    archive.addfile(info, io.BytesIO(data))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _scratch(parent: Path, prefix: str) -> Iterator[Path]:
    """A private directory beside the destination (same file system: renames are atomic)."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))  # mode 0700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


# --- reading an archive -------------------------------------------------------------------


def read_archive(file: Path, into: Path) -> dict[str, Any]:
    """Verify `file` and extract its members into the directory `into`; the manifest."""
    if not file.is_file():
        raise BackupError(f"no such file: {file}")
    try:
        with tarfile.open(file, mode="r:*") as archive:
            members = {info.name: info for info in archive.getmembers()}
            manifest = _manifest(archive, members.get(MANIFEST), file)
            dialect = manifest["dialect"]
            expected = {DATABASE_MEMBERS[dialect], KEY_MEMBER}
            described = manifest["members"]
            if KEY_MEMBER not in described:
                raise BackupError(
                    f"{file} holds no {KEY_MEMBER}: without the key its session keys, secret "
                    "parameters and S3 keys cannot be decrypted; restore refused"
                )
            for name in sorted(expected):
                info = members.get(name)
                if info is None or name not in described or not info.isfile():
                    raise BackupError(
                        f"{file} is damaged or incomplete: {name} is missing; restore refused"
                    )
                _extract_checked(archive, info, into / name, described[name], file)
            for name in sorted(n for n in described if n.split("/", 1)[0] == TLS_MEMBER_DIR):
                _extract_tls(archive, members.get(name), name, into, described[name], file)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        if isinstance(exc, BackupError):
            raise
        raise BackupError(
            f"{file} is damaged or not a voipcloud backup ({exc}); restore refused"
        ) from None
    key = (into / KEY_MEMBER).read_bytes()
    if key_fingerprint(key) != manifest["key_fingerprint"]:
        raise BackupError(
            f"the key in {file} is not the key the backup was made with (fingerprint "
            f"{key_fingerprint(key)}, manifest {manifest['key_fingerprint']}); restore refused"
        )
    return manifest


def _manifest(archive: tarfile.TarFile, info: tarfile.TarInfo | None, file: Path) -> dict[str, Any]:
    if info is None or not info.isfile() or info.size > MAX_MANIFEST_BYTES:
        raise BackupError(f"{file} has no {MANIFEST}: not a voipcloud backup")
    handle = archive.extractfile(info)
    assert handle is not None
    try:
        manifest = json.loads(handle.read())
    except ValueError:
        raise BackupError(f"{file}: {MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{file} is not a voipcloud backup")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise BackupError(
            f"{file} is a backup of format {manifest.get('format_version')!r}; this voipcloud "
            f"reads formats {', '.join(map(str, READABLE_VERSIONS))}"
        )
    if manifest.get("dialect") not in DATABASE_MEMBERS or not isinstance(
        manifest.get("members"), dict
    ):
        raise BackupError(f"{file}: {MANIFEST} is incomplete")
    for name in ("schema_revision", "key_fingerprint", "created_at"):
        if not isinstance(manifest.get(name), str):
            raise BackupError(f"{file}: {MANIFEST} lacks {name}")
    return manifest


def _extract_checked(
    archive: tarfile.TarFile,
    info: tarfile.TarInfo,
    out: Path,
    described: Any,
    file: Path,
) -> None:
    if not isinstance(described, dict):
        raise BackupError(f"{file}: {MANIFEST} does not describe {info.name}")
    source = archive.extractfile(info)
    assert source is not None
    digest = hashlib.sha256()
    size = 0
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as sink:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            sink.write(chunk)
        sink.flush()
        os.fsync(sink.fileno())
    if size != described.get("size") or digest.hexdigest() != described.get("sha256"):
        raise BackupError(
            f"{file}: {info.name} does not match its sha256 in the manifest; the archive is "
            "damaged, restore refused"
        )


def _extract_tls(
    archive: tarfile.TarFile,
    info: tarfile.TarInfo | None,
    name: str,
    into: Path,
    described: Any,
    file: Path,
) -> None:
    """One `tls/...` member: a plain relative path, a regular file, its sha256, its mode."""
    parts = PurePosixPath(name).parts
    if (
        name.startswith("/")
        or "\\" in name
        or len(parts) < 2
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise BackupError(f"{file}: {name!r} is not a path inside tls/; restore refused")
    if info is None or not info.isfile():
        raise BackupError(f"{file} is damaged or incomplete: {name} is missing; restore refused")
    out = into.joinpath(*parts)
    out.parent.mkdir(parents=True, exist_ok=True, mode=tls.DIR_MODE)
    _extract_checked(archive, info, out, described, file)
    recorded = described.get("mode") if isinstance(described, dict) else None
    try:
        mode = int(recorded, 8) if isinstance(recorded, str) else 0o600
    except ValueError:
        mode = 0o600
    os.chmod(out, _member_mode(out.name, mode))


# --- restore ------------------------------------------------------------------------------


def restore_backup(target: Target, file: Path) -> RestoreReport:
    """Restore `file` into the stopped controller of `target`; see the module docstring."""
    dialect = target.dialect
    file = file.resolve()
    if not file.is_file():
        raise BackupError(f"no such file: {file}")
    target.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = instance_lock.acquire(target.data_dir, purpose="restore")
    except instance_lock.AlreadyRunning as exc:
        raise BackupError(f"restore refused: {exc}") from None
    try:
        with _scratch(target.data_dir, ".restore-") as staging:
            manifest = read_archive(file, staging)
            if manifest["dialect"] != dialect:
                raise BackupError(
                    f"{file} is a {manifest['dialect']} backup and the target is {dialect}: "
                    f"restore it into a {manifest['dialect']} database"
                )
            _check_revision(manifest["schema_revision"], file)
            box = SecretBox((staging / KEY_MEMBER).read_bytes())
            if dialect == "sqlite":
                return _restore_sqlite(target, staging, manifest, box)
            return _restore_postgres(target, staging, manifest, box)
    finally:
        instance_lock.release(lock)


def _check_revision(revision: str, file: Path) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    try:
        known = scripts.get_revision(revision)
    except Exception:  # alembic raises several kinds for an unknown revision
        known = None
    if known is None:
        raise BackupError(
            f"{file} has schema revision {revision!r}, which this voipcloud ({__version__}) "
            "does not know: restore it with the version that made it, or a newer one"
        )


def _verified_copy(
    path: Path, box: SecretBox, *, where: str, key_path: str
) -> tuple[key_guard.KeyCheck, list[LocalFiles]]:
    """SQLite's own check, then the key against every sealed value of the copy."""
    engine = _sqlite_engine(path)
    try:
        with engine.connect() as conn:
            verdict = conn.exec_driver_sql("PRAGMA quick_check").scalar_one()
            if verdict != "ok":
                raise BackupError(f"{where} fails SQLite's check: {verdict}; restore refused")
            check = key_guard.check_key(conn, box)
            local = _local_files(conn, set(sa.inspect(conn).get_table_names()))
    finally:
        engine.dispose()
    if not check.ok:
        raise BackupError(
            key_guard.mismatch_message(check, key_path=key_path, where=where)
            + "; restore refused, nothing changed"
        )
    return check, local


def _restore_sqlite(
    target: Target, staging: Path, manifest: dict[str, Any], box: SecretBox
) -> RestoreReport:
    database = target.sqlite_path
    staged = staging / SQLITE_MEMBER
    check, local = _verified_copy(
        staged, box, where=f"the backup's database ({manifest['created_at']})", key_path=KEY_MEMBER
    )
    database.parent.mkdir(parents=True, exist_ok=True)
    if database.parent.stat().st_dev != staging.stat().st_dev:
        # the database lives on another file system than the data dir: stage it beside it
        beside = database.parent / f".{database.name}.restore"
        shutil.copyfile(staged, beside)
        staged = beside
    old = [database.with_name(database.name + s) for s in SQLITE_SUFFIXES] + [target.key_path]
    tls_members = _staged_tls(staging)
    if tls_members:
        old.append(target.tls_path)
    try:
        aside = _move_aside(target.data_dir, [p for p in old if os.path.lexists(p)])
    except BaseException:
        if staged.parent != staging:
            staged.unlink(missing_ok=True)
        raise
    placed: list[Path] = [] if staged.parent == staging else [staged]
    try:
        os.replace(staged, database)
        placed.append(database)
        os.replace(staging / KEY_MEMBER, target.key_path)
        placed.append(target.key_path)
        os.chmod(target.key_path, 0o600)
        _place_tls(target, staging, tls_members, placed)
        _fsync_dir(database.parent)
        _fsync_dir(target.key_path.parent)
        # the placed files, as the controller will open them, before declaring success
        _verified_copy(
            database,
            SecretBox(target.key_path.read_bytes()),
            where=str(database),
            key_path=str(target.key_path),
        )
    except BaseException:
        _remove(placed)
        _move_back(aside)
        raise
    return RestoreReport(
        manifest=manifest,
        sealed_checked=check.checked,
        moved_aside=aside[0] if aside else None,
        local_files=local,
        tls_members=tls_members,
    )


def _staged_tls(staging: Path) -> list[str]:
    """The `tls/...` members `read_archive` extracted (none from an archive of format 1)."""
    root = staging / TLS_MEMBER_DIR
    if not root.is_dir():
        return []
    return sorted(
        f"{TLS_MEMBER_DIR}/{path.relative_to(root).as_posix()}"
        for path in root.rglob("*")
        if path.is_file()
    )


def _place_tls(target: Target, staging: Path, members: list[str], placed: list[Path]) -> None:
    """The staged tls/ directory renamed into DATA_DIR/tls in one step (same file system:
    the staging directory is inside the data dir); the old one was moved aside before."""
    if not members:
        return
    staged = staging / TLS_MEMBER_DIR
    os.chmod(staged, tls.DIR_MODE)
    os.replace(staged, target.tls_path)
    placed.append(target.tls_path)
    _fsync_dir(target.tls_path)
    _fsync_dir(target.tls_path.parent)


def _remove(placed: list[Path]) -> None:
    """Undo the placed files (and the placed tls directory), newest first."""
    for path in reversed(placed):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _move_aside(data_dir: Path, paths: list[Path]) -> tuple[Path, list[tuple[Path, Path]]] | None:
    """The files a restore replaces go to DATA_DIR/before-restore-<time>/, never deleted (the
    old -wal and -shm must not stay beside the restored database)."""
    if not paths:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = data_dir / f"before-restore-{stamp}"
    aside.mkdir(mode=0o700)
    moved: list[tuple[Path, Path]] = []
    try:
        for path in paths:
            destination = aside / path.name
            os.replace(path, destination)
            moved.append((path, destination))
    except BaseException:
        _move_back((aside, moved))
        raise
    return aside, moved


def _move_back(aside: tuple[Path, list[tuple[Path, Path]]] | None) -> None:
    if aside is None:
        return
    directory, moved = aside
    for original, destination in reversed(moved):
        with contextlib.suppress(OSError):
            os.replace(destination, original)
    with contextlib.suppress(OSError):
        directory.rmdir()


def _restore_postgres(
    target: Target, staging: Path, manifest: dict[str, Any], box: SecretBox
) -> RestoreReport:
    engine = sa.create_engine(target.database_url, poolclass=sa.pool.NullPool)
    try:
        try:
            with engine.connect() as conn:
                existing = _user_tables(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise BackupError(
                f"the database {target.label} did not answer: {_first_line(exc)} (restore needs "
                "an existing, empty database: createdb NAME)"
            ) from None
        if existing:
            raise BackupError(
                f"the database {target.label} is not empty ({len(existing)} tables, e.g. "
                f"{', '.join(sorted(existing)[:3])}): restore refused. A restore never "
                "overwrites a database; create an empty one (createdb NAME) and restore into it"
            )
        uri, env = _libpq(target.url)
        _run_tool(
            [
                "pg_restore",
                "--single-transaction",
                "--exit-on-error",
                "--no-owner",
                "--no-privileges",
                f"--dbname={uri}",
                str(staging / POSTGRES_MEMBER),
            ],
            env,
            "pg_restore",
        )
        aside = None
        placed: list[Path] = []
        try:
            with engine.connect() as conn:
                check = key_guard.check_key(conn, box)
                local = _local_files(conn, set(sa.inspect(conn).get_table_names()))
            if not check.ok:
                raise BackupError(
                    key_guard.mismatch_message(
                        check, key_path=KEY_MEMBER, where=f"the backup ({manifest['created_at']})"
                    )
                    + "; restore refused, the database is left empty"
                )
            tls_members = _staged_tls(staging)
            replaced = [target.key_path] + ([target.tls_path] if tls_members else [])
            aside = _move_aside(target.data_dir, [p for p in replaced if os.path.lexists(p)])
            os.replace(staging / KEY_MEMBER, target.key_path)
            placed.append(target.key_path)
            os.chmod(target.key_path, 0o600)
            _place_tls(target, staging, tls_members, placed)
            _fsync_dir(target.key_path.parent)
        except BaseException:
            _empty(engine)
            _remove(placed)
            _move_back(aside)
            raise
    finally:
        engine.dispose()
    return RestoreReport(
        manifest=manifest,
        sealed_checked=check.checked,
        moved_aside=aside[0] if aside else None,
        local_files=local,
        tls_members=tls_members,
    )


def _user_tables(conn: Connection) -> list[str]:
    rows = conn.execute(
        sa.text(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
            "AND table_schema NOT LIKE 'pg_toast%' AND table_schema NOT LIKE 'pg_temp%'"
        )
    )
    return [str(name) for (name,) in rows]


def _empty(engine: sa.Engine) -> None:
    """Undo a restore into what was an empty database: drop what it created."""
    with contextlib.suppress(sa.exc.SQLAlchemyError), engine.begin() as conn:
        for name in _user_tables(conn):
            schema, table = name.split(".", 1)
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{schema}"."{table}" CASCADE')
        # the schema's own functions (e.g. the node counters' trigger function, migration
        # 0008) too, or a second restore into the database would fail creating them again;
        # functions of extensions (pg_trgm) stay with their extension
        for (signature,) in conn.execute(sa.text(_OWN_FUNCTIONS)).all():
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {signature} CASCADE")


_OWN_FUNCTIONS = (
    "SELECT p.oid::regprocedure::text FROM pg_proc p "
    "JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' "
    "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass "
    "AND d.objid = p.oid AND d.deptype = 'e')"
)
