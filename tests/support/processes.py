"""Real `voipcloud serve` and `voipcloud agent` processes over 127.0.0.1, for end-to-end tests
and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import httpx

from tests.support.server import free_port

ADMIN_PASSWORD = "e2e-admin-password"
T = TypeVar("T")

# The built-in role software handlers are on by default (docs/roles.md): an agent given a sip
# role runs Kamailio. Tests of the lifecycle only (not of the software) turn them off here,
# explicitly; the role-software tests ask for them (`software=True`, or a [software] section).
SOFTWARE_OFF = "\n[software]\nenabled = false\n"


def lifecycle_only(config: str) -> str:
    """The agent configuration `config` with the software handlers off, unless it says."""
    return config if "[software]" in config else config + SOFTWARE_OFF


def voipcloud_executable() -> str:
    found = Path(sys.executable).with_name("voipcloud")
    if found.exists():
        return str(found)
    located = shutil.which("voipcloud")
    if located is None:
        raise RuntimeError("the voipcloud console script is not installed")
    return located


def interruptible() -> None:
    """`preexec_fn` for a process a test will stop with Ctrl-C (SIGINT): whatever the test
    runner's process did with SIGINT (a blocked or ignored signal is inherited across exec),
    the child starts with it unblocked and at its default, so Python turns it into
    KeyboardInterrupt as in a terminal."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 15.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll until `probe` returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


@dataclass
class Controller:
    """A `voipcloud serve` process, restartable on the same data dir and port."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    ic_agent: bool = False
    # the IC agent runs the role software (the product's default); False: lifecycle only
    software: bool = False
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs `argv` (subclasses run it elsewhere)."""
        return argv

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "serve.log"
        env = {
            **os.environ,
            "VOIPCLOUD_DATA_DIR": str(self.data_dir),
            "VOIPCLOUD_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "VOIPCLOUD_HEARTBEAT_INTERVAL": "0.5",
            "VOIPCLOUD_MISSED_BEATS": "3",
            "VOIPCLOUD_ACTIVATION_TIMEOUT": "20",
            **self.env,
        }
        command = [voipcloud_executable(), "serve", "--port", str(self.port)]
        if not self.ic_agent:
            command.append("--no-ic-agent")
        elif not self.software:
            config = self.data_dir / "ic-agent" / "agent.toml"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(lifecycle_only(config.read_text() if config.exists() else ""))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.wrap(command), env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for(self._healthy, timeout=60, what=f"voipcloud serve on {self.url}")
        except BaseException:  # never leave a controller running behind a failed start
            self.stop()
            raise
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"voipcloud serve exited: {self.log()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path else ""

    def verify(self) -> ssl.SSLContext | bool:
        """How clients check the server's certificate (plain HTTP here: nothing to check)."""
        return True

    def admin(self) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30, verify=self.verify())
        answer = client.post(
            "/api/v1/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        answer.raise_for_status()
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        return client


class AgentLog:
    """`log`, `wait` and `stop` of a process that writes `state_dir/agent.log`."""

    state_dir: Path
    process: subprocess.Popen[bytes] | None
    log_tail: ClassVar[int | None] = 4000  # how much of the log `log()` returns (None: all)

    def log(self) -> str:
        text = (self.state_dir / "agent.log").read_text(errors="replace")
        return text if self.log_tail is None else text[-self.log_tail :]

    def wait(self, timeout: float = 15) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class AgentProcess(AgentLog):
    controller_url: str
    session_key: str
    state_dir: Path
    config: str = ""  # TOML for the agent configuration file
    process: subprocess.Popen[bytes] | None = None
    software: bool = False  # True: the role software handlers as by default; False: off

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs `argv` (subclasses run it elsewhere)."""
        return argv

    def start(self) -> Self:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.state_dir / "agent.toml"
        config_file.write_text(self.config if self.software else lifecycle_only(self.config))
        env = {**os.environ, "VOIPCLOUD_SESSION_KEY": self.session_key}
        argv = [
            voipcloud_executable(),
            "agent",
            "--controller",
            self.controller_url,
            "--state-dir",
            str(self.state_dir),
            "--config",
            str(config_file),
        ]
        with (self.state_dir / "agent.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.wrap(argv), env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self


def node(client: httpx.Client, node_id: int) -> dict[str, Any]:
    answer = client.get(f"/api/v1/nodes/{node_id}")
    answer.raise_for_status()
    data: dict[str, Any] = answer.json()
    return data


def wait_status(client: httpx.Client, node_id: int, status: str, timeout: float = 15) -> dict:
    return wait_for(
        lambda: (
            (n := node(client, node_id))["status"] == status and not n["pending_operation"] and n
        ),
        timeout=timeout,
        what=f"node {node_id} to settle in {status}",
    )
