"""`voipcloud tls`: the controller's certificates, on the controller host (its data dir).

voipcloud tls show                 the CA fingerprint agents pin, the server certificate
voipcloud tls rotate               a new server certificate from the same CA; the running
                                   controller loads it within VOIPCLOUD_TLS_RELOAD_INTERVAL
voipcloud tls ca begin|status|switch|retire   replacing the CA (docs/security.md)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from voipcloud.cli.client import CliError, UsageProblem

app = typer.Typer(no_args_is_help=True, help="The controller's TLS certificates (data dir).")
ca_app = typer.Typer(no_args_is_help=True, help="Replace the controller's CA, re-pinning agents.")
app.add_typer(ca_app, name="ca")

DataDirOption = Annotated[
    Path | None, typer.Option(help="The controller's data dir (env VOIPCLOUD_DATA_DIR).")
]
AGENTS_FILE = "agents-trust.json"


def _data_dir(data_dir: Path | None) -> Path:
    from voipcloud.config import Settings

    path = data_dir or Settings().data_dir
    if not path.is_dir():
        raise UsageProblem(f"{path} is not a controller's data dir")
    return path


def _describe(cert_file: Path) -> list[str]:
    from voipcloud.services import tls

    certs = tls.load_pem_certs(cert_file.read_bytes())
    leaf = certs[0]
    return [
        f"server certificate: {tls.cert_fingerprint(leaf)} serial {leaf.serial_number:x}",
        f"  valid until {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
        f"  names: {', '.join(sorted(tls.cert_names(leaf)))}",
    ]


@app.command("show")
def show(data_dir: DataDirOption = None) -> None:
    """The CA fingerprint agents and `voipcloud login` pin, and the server certificate."""
    from voipcloud.services import tls

    directory = tls.tls_dir(_data_dir(data_dir))
    fingerprint = tls.own_ca_fingerprint(directory.parent)
    if fingerprint is None:
        raise CliError(f"{directory} holds no CA: the controller has not served TLS yet")
    typer.echo(f"CA fingerprint: {fingerprint}")
    server = directory / tls.SERVER_CERT
    if server.exists():
        for line in _describe(server):
            typer.echo(line)
    nxt = directory / tls.NEXT_CA_CERT
    if nxt.exists():
        typer.echo(f"next CA (announced to agents): {tls.chain_fingerprint(nxt)}")


@app.command("rotate")
def rotate(
    data_dir: DataDirOption = None,
    name: Annotated[
        list[str] | None,
        typer.Option("--name", help="Another host name or address for the certificate."),
    ] = None,
) -> None:
    """Issue a new server certificate (and key) from the same CA.

    The running controller loads it without a restart: new connections get the new
    certificate, connected agents keep their channels. Agents pin the CA, which does not
    change, so nothing is needed on the nodes.
    """
    from voipcloud.services import tls

    path = _data_dir(data_dir)
    try:
        cert = tls.rotate(path, name or [])
    except tls.TlsError as exc:
        raise CliError(str(exc)) from None
    typer.echo(
        f"New server certificate {tls.cert_fingerprint(cert)} serial {cert.serial_number:x}, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d}, from the CA "
        f"{tls.own_ca_fingerprint(path)}."
    )
    typer.echo(
        "The running controller switches to it within its reload interval "
        "(VOIPCLOUD_TLS_RELOAD_INTERVAL, 5 s by default); connected agents stay connected."
    )


def _agents_file(path: Path) -> Path:
    from voipcloud.services import tls

    return tls.tls_dir(path) / AGENTS_FILE


def agents_trusting(path: Path) -> dict[str, dict[str, object]]:
    """node id → {"fingerprints": [...], "at": epoch}: what each agent last fetched."""
    try:
        data = json.loads(_agents_file(path).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@ca_app.command("begin")
def ca_begin(data_dir: DataDirOption = None) -> None:
    """Step 1: create the next CA; agents fetch it over their verified link and trust both."""
    from voipcloud.services import tls

    try:
        nxt = tls.ca_begin(_data_dir(data_dir))
    except tls.TlsError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"Next CA: {nxt.fingerprint}. Agents fetch it within their refresh interval.")
    typer.echo("Check with `voipcloud tls ca status`, then run `voipcloud tls ca switch`.")


@ca_app.command("status")
def ca_status(data_dir: DataDirOption = None) -> None:
    """Which agents already trust the announced CAs (as of their last fetch)."""
    from voipcloud.services import tls

    path = _data_dir(data_dir)
    announced = [tls.cert_fingerprint(c) for c in tls.announced(path)]
    typer.echo(f"announced: {', '.join(announced) or 'nothing'}")
    now = time.time()
    for node_id, entry in sorted(agents_trusting(path).items()):
        fps = entry.get("fingerprints") or []
        missing = [fp for fp in announced if fp not in fps]  # type: ignore[operator]
        at = entry.get("at")
        age = f"{now - at:.0f} s ago" if isinstance(at, int | float) else "?"
        state = "up to date" if not missing else f"missing {', '.join(missing)}"
        typer.echo(f"node {node_id}: {state} (fetched {age})")


@ca_app.command("switch")
def ca_switch(data_dir: DataDirOption = None) -> None:
    """Step 2: the next CA becomes the CA and signs a new server certificate."""
    from voipcloud.services import tls

    try:
        new = tls.ca_switch(_data_dir(data_dir))
    except tls.TlsError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"The CA is now {new.fingerprint}; the old CA stays announced until retired.")
    typer.echo(
        "New agents and `voipcloud login` pin the new fingerprint; then run "
        "`voipcloud tls ca retire`."
    )


@ca_app.command("retire")
def ca_retire(data_dir: DataDirOption = None) -> None:
    """Step 3: stop announcing the old CA; agents drop it at their next fetch."""
    from voipcloud.services import tls

    retired = tls.ca_retire(_data_dir(data_dir))
    if retired is None:
        typer.echo("No retired CA was still announced; nothing to do.")
        return
    typer.echo(f"The old CA {retired} is no longer announced.")
