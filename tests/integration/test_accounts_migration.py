"""Migration 0004 on a database of the first release (SQLite and PostgreSQL): the existing
`admin` becomes an enabled account of role admin and keeps its password; downgrade works."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from argon2 import PasswordHasher
from sqlalchemy import insert, text

from tests.support import databases
from voipcloud.domain.access import AccountRole
from voipcloud.services.auth import AuthService
from voipcloud.services.context import Context
from voipcloud.services.secrets_box import SecretBox, token_digest
from voipcloud.store import accounts
from voipcloud.store.database import Database, alembic_config, sqlite_url, upgrade
from voipcloud.store.tables import administrators, api_tokens

PASSWORD = "first-release-password"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    if not databases.postgres_available():
        pytest.skip("PostgreSQL unreachable")
    name = databases.create_database()
    yield databases.url_for(name)
    databases.drop_database(name)


def test_the_first_release_admin_becomes_role_admin(empty_url: str, tmp_path: Path) -> None:
    db = Database(empty_url)
    try:
        upgrade(db.engine, "0003")
        now = datetime.now(UTC)
        with db.engine.begin() as conn:  # rows as the first release wrote them
            admin_id = conn.execute(
                insert(administrators)
                .values(
                    username="admin", password_hash=PasswordHasher().hash(PASSWORD), created_at=now
                )
                .returning(administrators.c.id)
            ).scalar_one()
            conn.execute(
                insert(api_tokens).values(
                    digest=token_digest("old-session"),
                    administrator_id=admin_id,
                    created_at=now,
                    expires_at=now + timedelta(hours=1),
                )
            )
        db.migrate()
        with db.read() as conn:
            found = accounts.find_account(conn, "admin")
        assert found is not None
        assert found.role is AccountRole.ADMIN
        assert found.disabled is False
        auth = AuthService(Context(db=db, box=SecretBox.opened_in_data_dir(tmp_path / "d")))
        assert auth.principal("old-session").role is AccountRole.ADMIN  # sessions kept
        assert auth.check_password("admin", PASSWORD).id == admin_id
        # and back: the older schema again, the admin still there
        config = alembic_config()
        with db.engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0003")
            conn.commit()
        with db.engine.connect() as conn:
            names = conn.execute(text("SELECT username FROM administrators")).scalars().all()
        assert names == ["admin"]
    finally:
        db.dispose()
