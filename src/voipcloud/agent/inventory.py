"""What is on this node: OS, kernel, container id, this software's version, components."""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
from importlib.metadata import distributions
from pathlib import Path

from voipcloud import __version__
from voipcloud.protocol import MAX_COMPONENTS, ComponentInfo, Inventory

_CONTAINER_ID = re.compile(r"(?:docker|libpod|cri-containerd|crio|containers)[-/]([0-9a-f]{64})")


def os_name(root: Path = Path("/")) -> str:
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        path = root / candidate
        if path.is_file():
            fields = dict(
                line.split("=", 1) for line in path.read_text().splitlines() if "=" in line
            )
            return fields.get("PRETTY_NAME", fields.get("NAME", "")).strip().strip('"')
    return platform.system()


def kernel() -> str:
    uname = os.uname()
    return f"{uname.sysname} {uname.release}"


def container_id(root: Path = Path("/")) -> str:
    """The container this node runs in, if it can be told; empty otherwise."""
    for candidate in ("proc/self/cgroup", "proc/self/mountinfo"):
        path = root / candidate
        try:
            text = path.read_text()
        except OSError:
            continue
        match = _CONTAINER_ID.search(text)
        if match:
            return match.group(1)[:12]
    if (root / ".dockerenv").exists() or (root / "run/.containerenv").exists():
        return socket.gethostname()
    return ""


def debian_packages() -> list[ComponentInfo]:
    dpkg_query = shutil.which("dpkg-query")
    if dpkg_query is None:
        return []
    try:
        result = subprocess.run(  # noqa: S603 - a fixed command, no shell
            [dpkg_query, "-W", "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    packages = []
    for line in result.stdout.splitlines():
        name, _, rest = line.partition("\t")
        version, _, status = rest.partition("\t")
        if name and status.startswith("ii"):
            packages.append(ComponentInfo(name=name[:255], version=version[:255]))
    return packages


def python_distributions() -> list[ComponentInfo]:
    found = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            found[name.lower()] = ComponentInfo(
                name=f"{name} (Python)"[:255], version=dist.version[:255]
            )
    return [found[k] for k in sorted(found)]


def collect() -> Inventory:
    components = debian_packages() + python_distributions()
    return Inventory(
        os=os_name()[:255],
        kernel=kernel()[:255],
        container_id=container_id(),
        version=__version__,
        components=components[:MAX_COMPONENTS],
    )
