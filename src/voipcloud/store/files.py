"""File modes of the data dir: the secret key, the SQLite database and its WAL are the
controller's alone (directory 0700, files 0600), from the first start on."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from sqlalchemy.engine import make_url

DATA_DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")

log = logging.getLogger("voipcloud")


def sqlite_path(database_url: str) -> Path | None:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def secure_data_dir(data_dir: Path, database_url: str) -> None:
    """Create the data dir 0700 (or tighten it), and the SQLite file 0600 before SQLite opens
    it: SQLite gives its WAL and shared-memory files the mode of the database file."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=DATA_DIR_MODE)
    _tighten(data_dir, DATA_DIR_MODE)
    database = sqlite_path(database_url)
    if database is None:
        return
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for suffix in SQLITE_COMPANIONS:
        companion = database.with_name(database.name + suffix)
        if companion.exists():
            _tighten(companion, FILE_MODE)


def _tighten(path: Path, mode: int) -> None:
    try:
        if path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)
    except PermissionError:  # not ours to change: say so, do not refuse to start
        log.warning("could not set mode %o on %s (owned by another user)", mode, path)
