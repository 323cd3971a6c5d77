"""Does this key open this database? Checked at start, by `voipcloud backup` and by restore.

The values sealed with the data dir's `secret.key`: node session keys, secret role parameters,
secret Infrastructure Properties, the S3 keys of Storage Configuration and webhook secrets.
A key that opens none of them would make the controller read them as empty and send empty
passwords to agents, so a mismatch is refused, like a missing key over existing data
(`SecretBox.settle`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from voipcloud.domain.errors import DatabaseUnavailable
from voipcloud.services.context import Context
from voipcloud.services.secrets_box import ENCRYPTED, KEY_FILE, SecretBox
from voipcloud.store import tables

MAX_NAMED_FAILURES = 5


class KeyMismatch(OSError):
    """The key does not decrypt the values sealed in the database."""


@dataclass
class KeyCheck:
    checked: int = 0
    failed: list[str] = field(default_factory=list)  # where, for the first few
    failures: int = 0

    @property
    def ok(self) -> bool:
        return self.failures == 0


def _present(conn: Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


def _json_sealed(stored: Any) -> Iterator[tuple[str, bytes]]:
    if isinstance(stored, dict):
        for name, value in stored.items():
            if isinstance(value, dict) and isinstance(value.get(ENCRYPTED), str):
                yield name, value[ENCRYPTED].encode()


def sealed_values(conn: Connection) -> Iterator[tuple[str, bytes]]:
    """(where, token) of every value sealed with the key, in the tables that exist."""
    present = _present(conn)
    if "nodes" in present:
        n = tables.nodes
        query = sa.select(n.c.id, n.c.session_key_encrypted).where(
            n.c.session_key_encrypted.is_not(None)
        )
        for node_id, token in conn.execute(query):
            yield f"node {node_id}'s session key", bytes(token)
    if "role_assignments" in present:
        r = tables.role_assignments
        for node_id, role, parameters in conn.execute(
            sa.select(r.c.node_id, r.c.role, r.c.parameters)
        ):
            for name, token in _json_sealed(parameters):
                yield f"role {role} of node {node_id}: {name}", token
    if "infrastructure" in present:
        for (properties,) in conn.execute(sa.select(tables.infrastructure.c.properties)):
            for name, token in _json_sealed(properties):
                yield f"infrastructure property {name}", token
    if "storage_config" in present:
        s = tables.storage_config
        for kind, access, secret in conn.execute(
            sa.select(s.c.kind, s.c.s3_access_key_encrypted, s.c.s3_secret_key_encrypted)
        ):
            for what, token in (("access key", access), ("secret key", secret)):
                if token is not None:
                    yield f"storage {kind}: S3 {what}", bytes(token)
    if "webhooks" in present:
        w = tables.webhooks
        for webhook_id, token in conn.execute(sa.select(w.c.id, w.c.secret_encrypted)):
            yield f"webhook {webhook_id}'s secret", bytes(token)


def check_key(conn: Connection, box: SecretBox) -> KeyCheck:
    """Try the key on every sealed value."""
    result = KeyCheck()
    for where, token in sealed_values(conn):
        result.checked += 1
        if box.decrypt(token) is None:
            result.failures += 1
            if len(result.failed) < MAX_NAMED_FAILURES:
                result.failed.append(where)
    return result


def data_found(conn: Connection) -> str | None:
    """What the database holds that a key belongs to (None: nothing, a first start)."""
    present = _present(conn)
    counts = []
    for name in ("administrators", "nodes"):
        if name in present:
            table = tables.metadata.tables[name]
            count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            if count:
                counts.append(f"{count} {name}")
    if any(True for _ in sealed_values(conn)):
        counts.append("sealed values")
    return ", ".join(counts) or None


def mismatch_message(check: KeyCheck, *, key_path: str, where: str) -> str:
    named = "; ".join(check.failed)
    more = (
        f" and {check.failures - len(check.failed)} more"
        if check.failures > len(check.failed)
        else ""
    )
    return (
        f"the key {key_path} does not decrypt {check.failures} of the {check.checked} values "
        f"sealed in {where} ({named}{more}): it is not the key this data was written with"
    )


def ensure_key(conn: Connection, box: SecretBox, *, key_path: str, where: str) -> KeyCheck:
    """At start: write a first key only over an empty database; refuse a missing or wrong one."""
    box.settle(data_found=data_found(conn))
    check = check_key(conn, box)
    if not check.ok:
        raise KeyMismatch(
            mismatch_message(check, key_path=key_path, where=where)
            + ". Refusing to start: put the right secret.key in place, or restore a backup "
            "with `voipcloud restore FILE`."
        )
    return check


def database_label(url: str) -> str:
    """The database's URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def check_data_key(ctx: Context, data_dir: Path) -> KeyCheck:
    """The controller's start: its key settled and checked against its database."""
    with ctx.db.read() as conn:
        return ensure_key(
            conn,
            ctx.box,
            key_path=str((data_dir / KEY_FILE).resolve()),
            where=f"the database {database_label(ctx.db.url)}",
        )


def preflight(ctx: Context, data_dir: Path) -> None:
    """`voipcloud serve` before listening: a missing or wrong key ends it with one line.
    A database that does not answer yet is left for the start-up to report (and wait for)."""
    try:
        check_data_key(ctx, data_dir)
    except (sa.exc.SQLAlchemyError, DatabaseUnavailable):  # store/errors.py translates outages
        return
