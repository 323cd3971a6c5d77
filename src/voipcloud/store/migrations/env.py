"""Alembic environment: migrations run on the connection voipcloud hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from voipcloud.store.tables import include_name, include_object_for, metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # `alembic` command line, with sqlalchemy.url set in the config
    engine = engine_from_config(
        config.get_section(config.config_ini_section) or {},
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=metadata,
            render_as_batch=True,
            include_name=include_name,
            include_object=include_object_for(conn.dialect.name),
        )
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        include_name=include_name,
        include_object=include_object_for(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()
