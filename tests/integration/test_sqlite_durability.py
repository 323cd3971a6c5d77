"""SQLite's `synchronous` mode: FULL by default (an acknowledged change survives a power cut),
NORMAL only when VOIPCLOUD_SQLITE_SYNCHRONOUS says so."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from voipcloud.api.app import build_controller
from voipcloud.config import Settings
from voipcloud.store.database import Database, sqlite_url

FULL, NORMAL = 2, 1  # what PRAGMA synchronous answers


def synchronous(db: Database) -> int:
    with db.read() as conn:
        value = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
    db.dispose()
    return int(value)


def test_commits_are_durable_by_default(tmp_path: Path) -> None:
    assert synchronous(Database(sqlite_url(tmp_path))) == FULL
    controller = build_controller(Settings.model_validate({"data_dir": tmp_path / "data"}))
    assert synchronous(controller.ctx.db) == FULL


@pytest.mark.parametrize(
    ("value", "expected"), [("normal", NORMAL), (" NORMAL ", NORMAL), ("Full", FULL)]
)
def test_the_setting_chooses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: int
) -> None:
    monkeypatch.setenv("VOIPCLOUD_SQLITE_SYNCHRONOUS", value)
    controller = build_controller(Settings.model_validate({"data_dir": tmp_path / "data"}))
    assert synchronous(controller.ctx.db) == expected


def test_other_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOIPCLOUD_SQLITE_SYNCHRONOUS", "off")
    with pytest.raises(pydantic.ValidationError, match="sqlite_synchronous"):
        Settings()
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        Database("sqlite+pysqlite:///:memory:", sqlite_synchronous="off")
