"""`voipcloud backup FILE` and `voipcloud restore FILE`: run on the controller's host, with
the same --data-dir / --database-url (VOIPCLOUD_DATA_DIR, VOIPCLOUD_DATABASE_URL) as
`voipcloud serve`. See `voipcloud.services.backup` for the archive and the checks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from voipcloud.cli.client import CliError

if TYPE_CHECKING:
    from voipcloud.services.backup import Target

DataDirOption = Annotated[
    Path | None,
    typer.Option(help="The controller's data directory (env VOIPCLOUD_DATA_DIR)."),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(help="The controller's SQLAlchemy URL (env VOIPCLOUD_DATABASE_URL)."),
]


def _target(data_dir: Path | None, database_url: str | None) -> Target:
    from voipcloud.config import Settings
    from voipcloud.services.backup import Target

    overrides = {
        key: value
        for key, value in {"data_dir": data_dir, "database_url": database_url}.items()
        if value is not None
    }
    settings = Settings.model_validate(overrides)
    brought = tuple(path for path in (settings.tls_cert, settings.tls_key) if path is not None)
    return Target(
        data_dir=settings.data_dir.resolve(),
        database_url=settings.resolved_database_url(),
        brought_tls=brought,
    )


def _describe(manifest: dict[str, object]) -> str:
    counts = manifest.get("counts")
    shown = (
        ", ".join(f"{n} {name}" for name, n in counts.items()) if isinstance(counts, dict) else ""
    )
    return (
        f"{manifest['dialect']} database at schema revision {manifest['schema_revision']}"
        f"{f' ({shown})' if shown else ''}, taken {manifest['created_at']}"
    )


def backup(
    file: Annotated[Path, typer.Argument(help="The archive to write (mode 0600).")],
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
) -> None:
    """Back up the whole controller state, online: the database and its encryption key."""
    from voipcloud.services.backup import BackupError, create_backup

    target = _target(data_dir, database_url)
    try:
        report = create_backup(target, file, overwrite=force)
    except BackupError as exc:
        raise CliError(f"backup refused: {exc}") from None
    typer.echo(f"wrote {report.file} ({report.size} bytes): {_describe(report.manifest)}")
    typer.echo(
        f"key {report.manifest['key_fingerprint']}; "
        f"{report.manifest['sealed_values']} sealed values checked with it"
    )
    typer.echo(
        "WARNING: this file holds the encryption key (secret.key). Anyone who has it can read "
        "every session key and secret parameter: keep it like a password (it is mode 0600).",
        err=True,
    )
    for files in report.local_files:
        typer.echo(
            f"note: {files.resources} {files.kind} resources are files under {files.path}, "
            "not in this archive: copy that directory too (its files are written once; a copy "
            "made after this backup holds them all)",
            err=True,
        )
    if report.tls_members:
        typer.echo(
            f"TLS: {len(report.tls_members)} files of {target.tls_path} "
            f"(CA {report.manifest.get('tls_ca_fingerprint') or 'none'}, with its private key): "
            "a restore keeps the CA agents pinned"
        )
    else:
        typer.echo(
            f"note: no {target.tls_path} (the controller has not served HTTPS with its own CA): "
            "no TLS files in this archive; a certificate brought with --tls-cert/--tls-key is "
            "never copied: back those files up yourself",
            err=True,
        )
    if report.tls_not_copied:
        typer.echo(
            f"note: the certificate you brought ({', '.join(map(str, report.tls_not_copied))}) "
            f"is outside {target.tls_path} and NOT in this archive: back those files up yourself",
            err=True,
        )


def restore(
    file: Annotated[Path, typer.Argument(help="An archive written by `voipcloud backup`.")],
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Restore a backup into a stopped controller (SQLite) or an empty database (PostgreSQL)."""
    from voipcloud.services.backup import BackupError, restore_backup

    target = _target(data_dir, database_url)
    try:
        report = restore_backup(target, file)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"restored {file} into {target.label}: {_describe(report.manifest)}")
    typer.echo(
        f"key {report.manifest['key_fingerprint']} placed at {target.key_path}; "
        f"it decrypts all {report.sealed_checked} sealed values"
    )
    if report.tls_members:
        typer.echo(
            f"TLS: {len(report.tls_members)} files placed in {target.tls_path}; CA "
            f"{report.manifest.get('tls_ca_fingerprint') or '(none)'}: agents pinned to it "
            "accept the restored controller"
        )
    elif target.tls_path.exists():
        typer.echo(
            f"note: the archive holds no TLS files; {target.tls_path} is left as it was",
            err=True,
        )
    else:
        typer.echo(
            "note: the archive holds no TLS files (made before they were included, or the "
            "controller had no CA of its own): HTTPS starts with a new CA, and agents pinned "
            "to the old one must be pinned again (docs/security.md)",
            err=True,
        )
    if report.moved_aside is not None:
        typer.echo(f"the files it replaced are kept in {report.moved_aside}")
    for files in report.local_files:
        typer.echo(
            f"note: {files.resources} {files.kind} resources are files expected under "
            f"{files.path}: restore that directory from your file backup",
            err=True,
        )
    typer.echo("start the controller: voipcloud serve")


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command()(restore)
