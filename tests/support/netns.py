"""Several real nodes on one machine: network namespaces on a bridge, 10.200.x.x only.

    host: bridge vcb<id> 10.200.<net>.1/24 ── veth ── namespace vc<id>-<n>: 10.200.<net>.<n+1>

The controller listens on the bridge address; each namespace runs a real `voipcloud agent`
(and the role software it starts). Cleanup kills every process `ip netns pids` lists, then
deletes the namespaces, the host-side veths and the bridge. `netns_unavailable()` says why
the kernel refuses (tests skip loudly then).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import pytest

from tests.support.processes import AgentProcess, Controller
from voipcloud.agent.roles import BUILTIN
from voipcloud.agent.roles.base import socket_path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_unavailable(probe_prefix: str = "vcprobe") -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"{probe_prefix}{secrets.token_hex(3)}"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"the kernel refused a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


@dataclass
class Namespace:
    name: str
    address: str
    host_veth: str
    # the state dirs of the agents run in it: where their role software made its sockets
    agent_dirs: list[Path] = field(default_factory=list)

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.exec_argv(argv), capture_output=True, text=True, timeout=timeout, check=False
        )

    def pids(self) -> list[int]:
        listed = _ip("netns", "pids", self.name, check=False).stdout.split()
        return [int(p) for p in listed if p.isdigit()]

    def kill_all(self) -> None:
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        # killed, the role software could not remove its sockets: a socket too long a path for
        # the agent's state dir is in /tmp, where nothing else would (agent/roles/base.py)
        for directory in self.agent_dirs:
            for path in software_sockets(directory):
                path.unlink(missing_ok=True)


# the lock the pytest workers of a run take turns on to claim a lab's address range
_CLAIMS = Path(tempfile.gettempdir()) / "voipcloud-test-labs.lock"


def nets_in_use() -> set[int]:
    """The <net> of every 10.200.<net>.x address on this host's interfaces."""
    listed = _ip("-o", "-4", "addr", "show").stdout
    return {int(net) for net in re.findall(r"\binet 10\.200\.(\d+)\.", listed)}


@dataclass
class Lab:
    """A bridge and namespaces on it; `close()` removes everything it made.

    Subclasses pick their own address range (`net`, another free one if it is taken:
    `open()`) and interface names (`bridge_name`, `names`), so labs of different tests never
    collide."""

    net: int = field(default_factory=lambda: 100 + secrets.randbelow(150))
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    namespaces: list[Namespace] = field(default_factory=list)
    bridge: str = ""

    @property
    def host_address(self) -> str:
        return f"10.200.{self.net}.1"

    def bridge_name(self) -> str:
        return f"vcb{self.tag}"

    def names(self, n: int) -> tuple[str, str, str]:
        """Namespace, host-side veth and namespace-side veth of the n-th namespace."""
        return f"vc{self.tag}-{n}", f"vh{self.tag}{n}", f"vn{self.tag}{n}"

    def open(self) -> Self:
        """The bridge, on an address range no other open lab holds: the pytest workers of a
        run take turns (a file lock) to pick a range no interface of the host has, and the
        bridge's address is the claim. Two labs on one range both route 10.200.<net>.0/24: the
        host then reached only one of them (a controller in the other never answered its
        health check, CI 2026-12-01)."""
        self.bridge = self.bridge_name()
        with _CLAIMS.open("a") as claims:
            fcntl.flock(claims, fcntl.LOCK_EX)  # released when the file closes
            used = nets_in_use()
            if self.net in used:
                free = [n for n in range(100, 250) if n not in used]
                if not free:
                    raise RuntimeError("every test address range 10.200.100-249.x is in use")
                self.net = secrets.choice(free)
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.host_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add(self) -> Namespace:
        n = len(self.namespaces) + 1
        name, host_veth, peer = self.names(n)
        ns = Namespace(name, f"10.200.{self.net}.{n + 1}", host_veth)
        self.namespaces.append(ns)
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.host_veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns.name)
        _ip("link", "set", ns.host_veth, "master", self.bridge)
        _ip("link", "set", ns.host_veth, "up")
        _ip("netns", "exec", ns.name, "ip", "addr", "add", f"{ns.address}/24", "dev", peer)
        _ip("netns", "exec", ns.name, "ip", "link", "set", peer, "up")
        _ip("netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
        return ns

    def close(self) -> None:
        for ns in self.namespaces:
            ns.kill_all()
            _ip("netns", "del", ns.name, check=False)
            _ip("link", "del", ns.host_veth, check=False)
        if self.bridge:
            _ip("link", "del", self.bridge, check=False)


@dataclass
class BridgeController(Controller):
    """`voipcloud serve` listening on the lab's bridge address."""

    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BridgeController:
        # beyond loopback serve is HTTPS by default (issue 17): these tests speak plain HTTP
        self.env = {"VOIPCLOUD_TLS": "off", **self.env, "VOIPCLOUD_HOST": self.host}
        super().start()
        return self


@dataclass
class NamespacedController(BridgeController):
    """`voipcloud serve` (and its IC node's agent) run inside a namespace, listening on the
    namespace's address: the role software its agent starts never meets the machine's own."""

    namespace: Namespace | None = None

    def wrap(self, argv: list[str]) -> list[str]:
        assert self.namespace is not None
        ic_agent_dir = self.data_dir / "ic-agent"
        if self.ic_agent and ic_agent_dir not in self.namespace.agent_dirs:
            self.namespace.agent_dirs.append(ic_agent_dir)
        return self.namespace.exec_argv(argv)


@dataclass
class NamespacedAgent(AgentProcess):
    """A real `voipcloud agent` run inside a namespace (`ip netns exec`)."""

    namespace: Namespace | None = None

    def wrap(self, argv: list[str]) -> list[str]:
        assert self.namespace is not None
        if self.state_dir not in self.namespace.agent_dirs:
            self.namespace.agent_dirs.append(self.state_dir)
        return self.namespace.exec_argv(argv)


def software_sockets(agent_dir: Path) -> list[Path]:
    """Where the role software of the agent with this state dir makes its unix sockets."""
    return [
        Path(socket_path(agent_dir / "roles" / code, name))
        for code, role in BUILTIN.items()
        for name in role.sockets
    ]


def state_dir(base: Path, name: str) -> Path:
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def role_lab(refusal: str | None, programs: Iterable[str]) -> Iterator[Lab]:
    """A lab for role-software tests: skipped loudly without namespaces, failed when a
    program the roles run is not installed; closed afterwards."""
    if refusal:
        pytest.skip(f"NETWORK NAMESPACES UNAVAILABLE: {refusal}")
    absent = [p for p in programs if shutil.which(p) is None]
    if absent:
        pytest.fail(f"{', '.join(absent)} not installed: run scripts/install-role-software")
    made = Lab().open()
    try:
        yield made
    finally:
        made.close()


@contextlib.contextmanager
def bridge_controller(
    lab: Lab, data_dir: Path, *, activation_timeout: int
) -> Iterator[BridgeController]:
    """A started controller on the lab's bridge address; stopped afterwards."""
    started = BridgeController(
        data_dir=data_dir,
        host=lab.host_address,
        env={"VOIPCLOUD_ACTIVATION_TIMEOUT": str(activation_timeout)},
    ).start()
    try:
        yield started
    finally:
        started.stop()
