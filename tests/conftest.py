"""Fixtures shared by every test: databases (SQLite and PostgreSQL) and a live API."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import databases
from tests.support.server import serve_in_thread
from voipcloud.api.app import create_app
from voipcloud.config import Settings
from voipcloud.services.context import Context
from voipcloud.services.controller import Controller
from voipcloud.services.secrets_box import SecretBox
from voipcloud.store.database import Database, sqlite_url

ADMIN_PASSWORD = "correct-horse-battery"
_pg_state: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    _pg_state["available"] = databases.postgres_available()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """How `pytest -n N --dist loadgroup` (scripts/test) shares the tests out: a module's tests
    stay together on one worker (its module-scoped controller starts once, its tests run in
    their order), and every test that builds network namespaces (the `lab` fixture) runs on
    one worker, one at a time: their labs, role software and fixed ports never meet."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        fixtures = getattr(item, "fixturenames", ())
        group = "netns" if "lab" in fixtures else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _pg_state.get("available"):
        terminalreporter.write_sep("!", "PostgreSQL UNREACHABLE", red=True, bold=True)
        terminalreporter.write_line(
            f"PostgreSQL tests were SKIPPED: {databases.unreachable_reason}. Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`.",
            red=True,
            bold=True,
        )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test copies it instead of migrating again."""
    directory = tmp_path_factory.mktemp("sqlite-template")
    db = Database(sqlite_url(directory))
    db.migrate()
    db.dispose()
    return directory / "voipcloud.sqlite3"


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    if not _pg_state.get("available"):
        pytest.skip(f"PostgreSQL unreachable: {databases.unreachable_reason}")
    name = databases.create_database()
    db = Database(databases.url_for(name))
    db.migrate()
    db.dispose()
    yield name
    databases.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of each kind."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copy(template, tmp_path / "voipcloud.sqlite3")
        yield sqlite_url(tmp_path)
        return
    name = databases.create_database(template=request.getfixturevalue("postgres_template"))
    yield databases.url_for(name)
    databases.drop_database(name)


@dataclass
class LiveApi:
    base_url: str
    client: httpx.Client  # authenticated as admin
    settings: Settings

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    return Settings.model_validate(
        {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "admin_password": ADMIN_PASSWORD,
            **overrides,
        }
    )


def login(base_url: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=30)
    answer = client.post(
        "/api/v1/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    answer.raise_for_status()
    client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return client


@pytest.fixture
def services(database_url: str, tmp_path: Path) -> Iterator[Controller]:
    """The controller's services on a fresh database of each kind, bootstrapped (no server)."""
    db = Database(database_url)
    built = Controller.build(Context(db=db, box=SecretBox.in_data_dir(tmp_path / "data")))
    built.bootstrap(admin_password="x" * 12)
    yield built
    db.dispose()


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[LiveApi]:
    """`voipcloud`'s app on a real HTTP server over 127.0.0.1, on each database."""
    settings = make_settings(tmp_path, database_url)
    app = create_app(settings)
    with serve_in_thread(app) as base_url:
        client = login(base_url)
        try:
            yield LiveApi(base_url=base_url, client=client, settings=settings)
        finally:
            client.close()
