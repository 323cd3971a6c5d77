"""What every built-in software handler does; a role module fills in the specifics.

apply:  install check → node addresses → configuration rendered (templates, written
        atomically, only when changed, the old copy kept as `<file>.old`) → start (nothing
        else may listen on its ports), or reload/restart when the configuration changed →
        health check until it passes (startup_timeout) → after-start setup; a changed
        configuration that does not come up healthy is rolled back to the old copy.
health: the program runs (else: unhealthy, restarted with backoff) and the role's check.
stop:   the program stopped (systemd: disabled); its configuration and data are kept.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from voipcloud.agent.handlers import (
    HEALTHY,
    UNHEALTHY,
    HandlerError,
    Health,
    NodeInfo,
    SoftwareConfig,
)
from voipcloud.agent.supervise import Supervisor, systemd_running

Params = Mapping[str, Any]


class SoftwareContext:
    def __init__(
        self, state_dir: Path, config: SoftwareConfig, node: Callable[[], NodeInfo]
    ) -> None:
        self.state_dir = state_dir
        self.config = config
        self.node = node
        self.supervisor = Supervisor(state_dir, mode=config.supervisor)


def socket_path(directory: Path, name: str) -> str:
    """A unix socket's path: `name` in `directory`, or in /tmp when that path is too long for
    a socket address (108 bytes on Linux; the tests' temporary dirs are)."""
    path = directory / name
    if len(str(path)) < 100:
        return str(path)
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return f"/tmp/voipcloud-{digest}-{name}"  # noqa: S108 - unix socket paths are short


@dataclass(frozen=True)
class Listen:
    protocol: str  # "tcp" or "udp"
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.protocol} {self.address}:{self.port}"


def package_installed(package: str) -> bool:
    result = subprocess.run(  # noqa: S603
        ["dpkg-query", "-W", "-f=${Status}", package],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and "install ok installed" in result.stdout


def write_if_changed(path: Path, text: str, mode: int = 0o600) -> bool:
    """Atomically (temporary file, fsync, rename); the previous content kept as `.old`."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    if path.exists():
        shutil.copy2(path, path.with_name(path.name + ".old"))
    os.replace(temporary, path)
    return True


def port_taken(listen: Listen) -> bool:
    kind = socket.SOCK_DGRAM if listen.protocol == "udp" else socket.SOCK_STREAM
    family = socket.AF_INET6 if ":" in listen.address else socket.AF_INET
    with socket.socket(family, kind) as probe:
        try:
            probe.bind((listen.address, listen.port))
        except OSError:
            return True
    return False


def _socket_inodes(listen: Listen) -> set[str]:
    """Inodes of this network namespace's sockets bound to the port (/proc/net/*)."""
    inodes = set()
    for table in (listen.protocol, listen.protocol + "6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            port = int(fields[1].rsplit(":", 1)[1], 16)
            listening = listen.protocol == "udp" or fields[3] == "0A"  # TCP_LISTEN
            if port == listen.port and listening:
                inodes.add(fields[9])
    return inodes


def holder(listen: Listen) -> str:
    """The process holding the port as " (program, pid N)", when /proc tells; else ""."""
    inodes = {f"socket:[{inode}]" for inode in _socket_inodes(listen)}
    if not inodes:
        return ""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target in inodes:
                try:
                    name = (proc / "comm").read_text().strip()
                except OSError:
                    name = "?"
                return f" ({name}, pid {proc.name})"
    return ""


APT_POLICY = Path("/usr/sbin/policy-rc.d")  # makes the packages' scripts not start services


def apt_install(packages: list[str]) -> str | None:
    """`apt-get install` the packages without starting their services (the agent starts the
    software itself); after a failure the package lists are updated and it is tried once
    more. None on success, else what apt-get said."""
    argv = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    made_policy = False
    try:
        if not APT_POLICY.exists():
            APT_POLICY.write_text("#!/bin/sh\n# voipcloud agent: installing\nexit 101\n")
            APT_POLICY.chmod(0o755)
            made_policy = True
        result = _run_apt(argv, env)
        if result.returncode != 0:
            _run_apt(["apt-get", "update", "-q"], env)
            result = _run_apt(argv, env)
    except OSError as exc:
        return f"{' '.join(argv)} could not run: {exc}"
    finally:
        if made_policy:
            APT_POLICY.unlink(missing_ok=True)
    if result.returncode == 0:
        return None
    tail = (result.stdout + result.stderr).strip()[-500:]
    return f"{' '.join(argv)} failed (status {result.returncode}): {tail}"


def _run_apt(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - apt-get with the role's package names
            argv, capture_output=True, text=True, timeout=1800, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", "timed out after 1800 s")


def address_bound(address: str | None) -> bool:
    """Whether this node (its network namespace) holds the address (public IPs often not)."""
    if not address:
        return False
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


class SoftwareRole:
    code: ClassVar[str]
    software: ClassVar[str]  # the program's name, for messages
    packages: ClassVar[tuple[str, ...]]  # Debian packages
    binary: ClassVar[str]  # its executable: present means installed
    reload_signal: ClassVar[int | None] = None  # None: a changed configuration restarts it
    # the distribution's own systemd unit(s) of the software: active means not ours
    distro_units: ClassVar[tuple[str, ...]] = ()
    # the unix sockets the program makes (names in `short_path`): removed once it has stopped
    sockets: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: SoftwareContext) -> None:
        self.context = context
        self.supervisor = context.supervisor
        self.dir = context.state_dir / "roles" / self.code

    # what a role module provides
    def render(self, params: Params, node: NodeInfo) -> dict[str, str]:
        """File name (relative to the role's dir) → content."""
        raise NotImplementedError

    def command(self, params: Params, node: NodeInfo) -> tuple[list[str], dict[str, str]]:
        """The program in the foreground, and its environment."""
        raise NotImplementedError

    def listens(self, params: Params, node: NodeInfo) -> list[Listen]:
        raise NotImplementedError

    def check(self, params: Params, node: NodeInfo) -> str | None:
        """The role's own health check: None when it answers, else what is wrong."""
        raise NotImplementedError

    def ready(self, params: Params, node: NodeInfo) -> str | None:
        """The program answers (before after_start); by default the role's check."""
        return self.check(params, node)

    def prepare(self, params: Params, node: NodeInfo) -> None:
        """Before the first start (e.g. create a data dir)."""

    def after_start(self, params: Params, node: NodeInfo) -> None:
        """Once healthy (e.g. create users)."""

    def missing(self) -> str | None:
        """Why the software cannot run here, naming what to install; None when it can."""
        if shutil.which(self.binary) is not None:
            return None
        absent = [p for p in self.packages if not package_installed(p)]
        if self.context.config.install and absent:
            failure = apt_install(absent)
            if failure is None and shutil.which(self.binary) is not None:
                return None
            return failure or (
                f"apt-get install {' '.join(absent)} succeeded but {self.binary} is still not found"
            )
        names = " ".join(absent or self.packages)
        return (
            f"{self.software} is not installed ({self.binary} not found): install the Debian "
            f"package(s) {names}, or allow the agent to (software.install = true)"
        )

    def outside_service(self) -> str | None:
        """The distribution's own service of this software, when systemd runs it."""
        if not self.distro_units or not systemd_running():
            return None
        for unit in self.distro_units:
            state = self.run(["systemctl", "is-active", unit], timeout=10).stdout.strip()
            if state in ("active", "activating", "reloading"):
                return unit
        return None

    # the framework
    @property
    def name(self) -> str:
        return self.code

    def short_path(self, name: str) -> str:
        """A unix socket's path in the role's dir, or in /tmp when that is too long."""
        return socket_path(self.dir, name)

    def run(
        self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(  # noqa: S603 - the role's own tools
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, **(env or {})},
                check=False,
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout:g} s")
        except OSError as exc:
            return subprocess.CompletedProcess(argv, 127, "", str(exc))

    def node(self) -> NodeInfo:
        node = self.context.node()
        if not node.private_ip:
            raise HandlerError(
                f"{self.code}: the controller did not send the node's addresses "
                "(a controller older than this agent?)"
            )
        return node

    def apply(self, role: str, config: Params) -> None:
        node = self.node()
        missing = self.missing()
        if missing:
            raise HandlerError(f"{role}: {missing}")
        files = self.render(config, node)
        changed = [name for name, text in files.items() if write_if_changed(self.dir / name, text)]
        argv, env = self.command(config, node)
        running = self.supervisor.running(self.name) or self.supervisor.adopt(self.name, argv, env)
        if not running:
            unit = self.outside_service()
            if unit:
                raise HandlerError(
                    f"{role}: {self.software} already runs on this node outside voipcloud "
                    f"(systemd unit {unit} is active); stop and disable it (systemctl disable "
                    f"--now {unit}): voipcloud does not take over software it did not start"
                )
            taken = [
                f"{listen}{holder(listen)}"
                for listen in self.listens(config, node)
                if port_taken(listen)
            ]
            if taken:
                raise HandlerError(
                    f"{role}: something outside voipcloud already listens on "
                    f"{', '.join(taken)}; stop it (voipcloud does not take over {self.software} "
                    "it did not start)"
                )
            self.prepare(config, node)
            self.supervisor.start(self.name, argv, env)
        elif changed:
            self._reload(argv, env)
        problem = self._wait_healthy(config, node)
        if problem and changed and running:
            for name in changed:
                old = self.dir / (name + ".old")
                if old.exists():
                    os.replace(old, self.dir / name)
            self._reload(argv, env)
            raise HandlerError(
                f"{role}: {self.software} did not come up healthy with the new configuration "
                f"({problem}); the previous configuration was restored"
            )
        if problem:
            tail = self._log_tail()
            raise HandlerError(f"{role}: {self.software} is not healthy: {problem}{tail}")
        self.after_start(config, node)
        problem = self.check(config, node)
        if problem:
            raise HandlerError(f"{role}: {self.software} is not healthy: {problem}")

    def _reload(self, argv: list[str], env: dict[str, str]) -> None:
        if self.reload_signal is not None:
            self.supervisor.reload(self.name, self.reload_signal)
        else:
            self.supervisor.stop(self.name)
            self.supervisor.start(self.name, argv, env)

    def _wait_healthy(self, config: Params, node: NodeInfo) -> str | None:
        deadline = time.monotonic() + self.context.config.startup_timeout
        problem: str | None = "not checked"
        while time.monotonic() < deadline:
            problem = self.supervisor.problem(self.name)
            if problem and not self.supervisor.running(self.name):
                return problem  # it died at start: no point waiting
            problem = problem or self.ready(config, node)
            if problem is None:
                return None
            time.sleep(0.2)
        return problem

    def _log_tail(self) -> str:
        try:
            lines = self.supervisor.log_path(self.name).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "; log: " + " | ".join(lines[-5:])[-800:] if lines else ""

    def stop(self, role: str) -> None:
        self.supervisor.stop(self.name)
        # the program is gone: its sockets too (one in /tmp would outlive the role's dir)
        for name in self.sockets:
            Path(self.short_path(name)).unlink(missing_ok=True)

    def health(self, role: str, config: Params) -> Health:
        try:
            node = self.node()
        except HandlerError as exc:
            return Health(UNHEALTHY, str(exc))
        argv, env = self.command(config, node)
        if not self.supervisor.running(self.name) and not self.supervisor.adopt(
            self.name, argv, env
        ):
            problem = self.supervisor.problem(self.name)
            if problem and problem.endswith("is not running"):
                # applied before this agent started and not running: start it again
                self.supervisor.start(self.name, argv, env)
            return Health(UNHEALTHY, problem)
        problem = self.check(config, node)
        return Health(UNHEALTHY, problem) if problem else Health(HEALTHY)
