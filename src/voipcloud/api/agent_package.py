"""What a node downloads to install its agent: public, unauthenticated, no secret in them.

    GET /agent/package      this controller's own voipcloud, as a wheel (py3-none-any)
    GET /agent/install.sh   the POSIX installer: a venv in /opt/voipcloud-agent, the wheel,
                            then `voipcloud agent install` (docs/operations.md, Enrolling)
    GET /agent/ca.der       the CA certificate agents pin (https only): the one-liner checks
                            its SHA-256 against the fingerprint before trusting it

The wheel is assembled from the installed package, not built from a source tree: an editable
install has a source tree but a regular install does not, and `pip wheel` would need the build
backend (and, with build isolation, a package index) on the controller. The package directory
(`voipcloud/`, with its templates, static files and migrations) is what runs here in both
cases; the metadata (dependencies, entry points) is the installed distribution's own. Built
once per process, at the first download, into DATA_DIR/cache (written atomically), so a
controller upgraded in place serves its new code after a restart.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import re
import threading
import zipfile
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

import voipcloud

DISTRIBUTION = "voipcloud"
CACHE_DIR = "cache"
SKIPPED_PARTS = {"__pycache__"}
SKIPPED_SUFFIXES = (".pyc", ".pyo")
FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # reproducible archives: same files, same bytes

_lock = threading.Lock()
_built: dict[Path, Path] = {}


def wheel_name(version: str) -> str:
    return f"{DISTRIBUTION}-{re.sub(r'[^A-Za-z0-9.+]+', '_', version)}-py3-none-any.whl"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def _package_files(package_dir: Path) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(package_dir.rglob("*")):
        relative = path.relative_to(package_dir)
        if not path.is_file() or SKIPPED_PARTS.intersection(relative.parts):
            continue
        if path.name.endswith(SKIPPED_SUFFIXES) or path.name.startswith(".#"):
            continue
        found.append((f"{DISTRIBUTION}/{relative.as_posix()}", path))
    return found


def assemble(target_dir: Path) -> Path:
    """Write the wheel of the running voipcloud into `target_dir`; its path."""
    dist = importlib.metadata.distribution(DISTRIBUTION)
    version = dist.version
    info = f"{DISTRIBUTION}-{version}.dist-info"
    members: list[tuple[str, bytes]] = [
        (name, path.read_bytes())
        for name, path in _package_files(Path(voipcloud.__file__).resolve().parent)
    ]
    metadata = dist.read_text("METADATA") or "Metadata-Version: 2.1\nName: voipcloud\n"
    members.append((f"{info}/METADATA", metadata.encode()))
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        members.append((f"{info}/entry_points.txt", entry_points.encode()))
    wheel = (
        "Wheel-Version: 1.0\nGenerator: voipcloud (assembled from the installed package)\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n"
    )
    members.append((f"{info}/WHEEL", wheel.encode()))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in members)
    members.append((f"{info}/RECORD", (record + f"{info}/RECORD,,\n").encode()))

    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / wheel_name(version)
    temporary = target.with_suffix(".part")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            entry = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    temporary.replace(target)
    return target


def wheel(data_dir: Path) -> Path:
    """The wheel in DATA_DIR/cache, assembled at the first call of this process."""
    cache = data_dir / CACHE_DIR
    with _lock:
        built = _built.get(cache)
        if built is None or not built.exists():
            built = _built[cache] = assemble(cache)
        return built


# --- the installer ---------------------------------------------------------------------------

INSTALL_SH = r"""#!/bin/sh
# The voipcloud agent installer, served by the controller (voipcloud @VERSION@).
#
#   sh install.sh --controller URL [--ca-fingerprint sha256:HEX] --session-key-file FILE
#                 [--state-dir DIR] [--unit-dir DIR] [--venv DIR] [--no-start]
#
# Creates a Python venv (default /opt/voipcloud-agent), installs the controller's own
# voipcloud wheel into it (its dependencies come from this node's package index), then runs
# `voipcloud agent install`, which keeps the session key in the state dir (0600) and writes
# and starts the systemd unit. The session key is read from FILE: it is never an argument of
# any command. Over https with --ca-fingerprint, nothing is downloaded before the CA
# certificate's SHA-256 matches the fingerprint. pip honours its usual PIP_* variables.
set -eu

WHEEL='@WHEEL@'

die() {
    echo "voipcloud install: $*" >&2
    exit 1
}

fetch() {  # fetch URL FILE, trusting only the pinned CA over https
    if [ -n "$ca_pem" ]; then
        curl -fsS --cacert "$ca_pem" -o "$2" "$1"
    else
        curl -fsS -o "$2" "$1"
    fi
}

pin_ca() {  # the controller's CA, checked against the fingerprint, as PEM in $tmp
    digest=$(printf '%s' "$fingerprint" | sed 's/^sha256://; s/://g' | tr 'A-F' 'a-f')
    case "$digest" in
        *[!0-9a-f]*|'') die "--ca-fingerprint is sha256: and 64 hex digits" ;;
    esac
    [ "${#digest}" -eq 64 ] || die "--ca-fingerprint is sha256: and 64 hex digits"
    curl -fsSk -o "$tmp/ca.der" "$controller/agent/ca.der" || die "cannot reach $controller"
    echo "$digest *$tmp/ca.der" | sha256sum -c --quiet >/dev/null 2>&1 ||
        die "$controller does not present the CA sha256:$digest; nothing was installed"
    openssl x509 -inform der -in "$tmp/ca.der" -out "$tmp/ca.pem" ||
        die "openssl is needed (apt-get install openssl)"
    ca_pem="$tmp/ca.pem"
}

need() {  # an option and its value
    [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"
}

main() {
    controller='' fingerprint='' key_file='' ca_pem=''
    state_dir=/var/lib/voipcloud-agent unit_dir=/etc/systemd/system
    venv=/opt/voipcloud-agent no_start=''
    while [ $# -gt 0 ]; do
        case "$1" in
            --controller) need "$@"; controller=$2; shift 2 ;;
            --ca-fingerprint) need "$@"; fingerprint=$2; shift 2 ;;
            --session-key-file) need "$@"; key_file=$2; shift 2 ;;
            --state-dir) need "$@"; state_dir=$2; shift 2 ;;
            --unit-dir) need "$@"; unit_dir=$2; shift 2 ;;
            --venv) need "$@"; venv=$2; shift 2 ;;
            --no-start) no_start=--no-start; shift ;;
            --session-key|--session-key=*)
                die "the session key never goes on a command line: save it in a file" \
                    "readable by root only and give --session-key-file FILE" ;;
            *) die "unknown argument: $1" ;;
        esac
    done
    controller=${controller%/}
    [ -n "$controller" ] || die "--controller URL is needed"
    [ -n "$key_file" ] || die "--session-key-file FILE is needed (never the key itself)"
    [ -r "$key_file" ] || die "cannot read the session key file $key_file"
    command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install curl)"

    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT INT TERM
    case "$controller" in
        https://*) [ -z "$fingerprint" ] || pin_ca ;;
        *) [ -z "$fingerprint" ] || die "--ca-fingerprint needs an https:// controller" ;;
    esac

    if [ ! -x "$venv/bin/python" ]; then
        if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
            command -v apt-get >/dev/null 2>&1 || die "python3 with venv is needed"
            echo "voipcloud install: installing python3-venv"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
        fi
        python3 -m venv "$venv"
    fi
    echo "voipcloud install: the agent package from $controller"
    fetch "$controller/agent/package" "$tmp/$WHEEL" || die "cannot download the agent package"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "$tmp/$WHEEL"

    set -- --controller "$controller" --session-key-file "$key_file" \
        --state-dir "$state_dir" --unit-dir "$unit_dir"
    [ -z "$fingerprint" ] || set -- "$@" --ca-fingerprint "$fingerprint"
    [ -z "$no_start" ] || set -- "$@" --no-start
    "$venv/bin/voipcloud" agent install "$@"
}

main "$@"
"""


def install_script(version: str) -> str:
    return INSTALL_SH.replace("@VERSION@", version).replace("@WHEEL@", wheel_name(version))


def served_ca(transport: object) -> bytes | None:
    """The DER of the certificate agents pin: our own CA, or the top of a brought chain."""
    from voipcloud.services import tls

    if transport is None or getattr(transport, "context", None) is None:
        return None
    ca_file = getattr(transport, "ca_file", None)
    if ca_file is not None:
        certs = tls.load_pem_certs(Path(ca_file).read_bytes())[:1]
    else:
        watcher = getattr(transport, "watcher", None)
        if watcher is None:
            return None
        certs = tls.load_pem_certs(watcher.files.cert_file.read_bytes())[-1:]
    from cryptography.hazmat.primitives.serialization import Encoding

    return certs[0].public_bytes(Encoding.DER) if certs else None


# --- routes (plain Starlette: public downloads, outside the API and its OpenAPI) ------------


async def package(request: Request) -> Response:
    data_dir: Path = request.app.state.controller.ctx.data_dir
    built = await run_in_threadpool(wheel, data_dir)
    return FileResponse(
        built,
        media_type="application/zip",
        filename=built.name,
        headers={"Cache-Control": "no-cache"},
    )


async def install_sh(request: Request) -> Response:
    return PlainTextResponse(
        install_script(importlib.metadata.version(DISTRIBUTION)),
        media_type="text/x-shellscript",
        headers={"Cache-Control": "no-cache"},
    )


async def ca_der(request: Request) -> Response:
    der = await run_in_threadpool(served_ca, getattr(request.app.state, "transport", None))
    if der is None:
        return PlainTextResponse("This controller serves plain HTTP: no CA.\n", status_code=404)
    return Response(der, media_type="application/pkix-cert")


def install(app: FastAPI) -> None:
    app.router.routes[0:0] = [
        Route("/agent/package", package, methods=["GET"]),
        Route("/agent/install.sh", install_sh, methods=["GET"]),
        Route("/agent/ca.der", ca_der, methods=["GET"]),
    ]
