"""The Alembic migrations build exactly the schema `store/tables.py` declares, on both
databases, and the newest one goes down and up again without loss of the schema."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from voipcloud.store.database import alembic_config
from voipcloud.store.tables import metadata


def _differences(database_url: str) -> list[object]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            return [d for d in compare_metadata(context, metadata) if not _ignorable(d)]
    finally:
        engine.dispose()


def _ignorable(diff: object) -> bool:
    # alembic's own bookkeeping table is not in the metadata
    return (
        isinstance(diff, tuple)
        and diff[0] == "remove_table"
        and (diff[1].name == "alembic_version")
    )


def test_migrations_match_the_declared_tables(database_url: str) -> None:
    assert _differences(database_url) == []


def test_fleet_migration_down_and_up(database_url: str) -> None:
    engine = create_engine(database_url)
    config = alembic_config()
    try:
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0006")
            conn.commit()
            command.upgrade(config, "head")
            conn.commit()
    finally:
        engine.dispose()
    assert _differences(database_url) == []
