"""Running a role's software: under systemd when the node runs it, else supervised here.

Agent supervision (containers without systemd): each program is a child process in its own
session (so a signal to the agent does not reach it), with a pid file in `run/` and its
output appended to `logs/<name>.log` in the state dir. An agent that restarts adopts a
program still running from its pid file (pid and start time must match). A program that
dies is noticed by the next health check, reported unhealthy, and started again after
1, 2, 4 … 60 s (the count starts again once it has run for 60 s).

systemd: a unit `voipcloud-<name>.service` per role instance in /etc/systemd/system
(`Restart=on-failure`), `systemctl enable --now`, `reload` (or `restart`) on a changed
configuration, `disable --now` to stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("voipcloud.agent.supervise")

RESTART_BASE = 1.0
RESTART_CAP = 60.0
STABLE_AFTER = 60.0
STOP_TIMEOUT = 15.0
SYSTEMD_UNIT_DIR = Path("/etc/systemd/system")


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields and fields[0] == "Z":  # a zombie is dead
        return None
    return fields[19] if len(fields) > 19 else None


@dataclass
class Program:
    name: str
    argv: list[str]
    env: dict[str, str]
    pid: int = 0
    start_time: str | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    exit_status: int | None = None
    restart_at: float | None = None
    history: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(self, state_dir: Path, *, mode: str = "auto") -> None:
        self.run_dir = state_dir / "run"
        self.log_dir = state_dir / "logs"
        self.mode = ("systemd" if systemd_running() else "agent") if mode == "auto" else mode
        self._programs: dict[str, Program] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _pid_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    # starting and stopping
    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        env = dict(env or {})
        if self.mode == "systemd":
            self._systemd_start(name, argv, env)
            return
        program = self._programs.get(name) or Program(name, argv, env)
        program.argv, program.env = argv, env
        self._programs[name] = program
        self._spawn(program)

    def _spawn(self, program: Program) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(program.name).open("ab") as output:
            output.write(f"\n--- voipcloud: starting {shlex.join(program.argv)}\n".encode())
            output.flush()
            process = subprocess.Popen(  # noqa: S603 - the role's program, argv from its handler
                program.argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **program.env},
                start_new_session=True,
            )
        program.process, program.pid = process, process.pid
        program.start_time = _start_time(process.pid)
        program.started_at = time.monotonic()
        program.exit_status, program.restart_at = None, None
        self._pid_path(program.name).write_text(f"{process.pid} {program.start_time}\n")
        log.info("%s started (pid %d)", program.name, process.pid)

    def adopt(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> bool:
        """A program left running by an earlier agent process: take it back. True if so."""
        if self.mode == "systemd" or name in self._programs:
            return self.running(name)
        try:
            pid_text, start = self._pid_path(name).read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return False
        if _start_time(pid) != start:
            return False
        self._programs[name] = Program(
            name, argv, dict(env or {}), pid=pid, start_time=start, started_at=time.monotonic()
        )
        log.info("%s adopted (pid %d)", name, pid)
        return True

    def stop(self, name: str) -> None:
        if self.mode == "systemd":
            self._systemd_stop(name)
            return
        program = self._programs.pop(name, None)
        if program is None:
            try:
                pid_text, start = self._pid_path(name).read_text().split()
                program = Program(name, [], {}, pid=int(pid_text), start_time=start)
            except (OSError, ValueError):
                return
        if self._alive(program):
            self._signal(program, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while self._alive(program) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._alive(program):
                self._signal(program, signal.SIGKILL)
                while self._alive(program) and time.monotonic() < deadline + 5:
                    time.sleep(0.05)
        self._pid_path(name).unlink(missing_ok=True)
        log.info("%s stopped", name)

    def restart(self, name: str) -> None:
        if self.mode == "systemd":
            self._systemctl("restart", name)
            return
        program = self._programs.get(name)
        if program is None:
            raise KeyError(name)
        argv, env = program.argv, program.env
        self.stop(name)
        self.start(name, argv, env)

    def reload(self, name: str, signum: int) -> None:
        if self.mode == "systemd":
            self._systemctl("reload", name)
            return
        program = self._programs.get(name)
        if program is not None and self._alive(program):
            os.kill(program.pid, signum)

    # state
    def running(self, name: str) -> bool:
        if self.mode == "systemd":
            return self._systemctl("is-active", name, check=False) == 0
        program = self._programs.get(name)
        return program is not None and self._alive(program)

    def pid(self, name: str) -> int | None:
        program = self._programs.get(name)
        return program.pid if program is not None and self._alive(program) else None

    def problem(self, name: str) -> str | None:
        """None while the program runs; else why not, and when it is started again."""
        if self.mode == "systemd":
            return None if self.running(name) else f"systemd unit voipcloud-{name} is not active"
        program = self._programs.get(name)
        if program is None:
            return f"{name} is not running"
        if self._alive(program):
            return None
        now = time.monotonic()
        if program.restart_at is None:  # just noticed: schedule the restart
            if now - program.started_at >= STABLE_AFTER:
                program.failures = 0
            program.failures += 1
            delay = min(RESTART_CAP, RESTART_BASE * 2.0 ** (program.failures - 1))
            program.restart_at = now + delay
            status = program.exit_status
            program.history.append(f"exited ({status})")
            log.warning("%s exited (status %s); restarting in %g s", name, status, delay)
        what = f"status {program.exit_status}" if program.exit_status is not None else "gone"
        return (
            f"{name} exited ({what}); the agent restarts it in "
            f"{max(0.0, program.restart_at - now):.0f} s (restart {program.failures})"
        )

    def next_restart(self) -> float | None:
        due = [p.restart_at for p in self._programs.values() if p.restart_at is not None]
        return min(due) if due else None

    def restart_due(self) -> list[str]:
        """Start again every program whose restart time has come; their names."""
        now = time.monotonic()
        started = []
        for program in list(self._programs.values()):
            if program.restart_at is not None and now >= program.restart_at:
                self._spawn(program)
                started.append(program.name)
        return started

    def _alive(self, program: Program) -> bool:
        if program.process is not None:
            status = program.process.poll()
            if status is not None:
                program.exit_status = status
                return False
            return True
        return program.pid > 0 and _start_time(program.pid) == program.start_time

    def _signal(self, program: Program, signum: int) -> None:
        try:
            os.killpg(program.pid, signum)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(program.pid, signum)

    # systemd
    def unit_text(self, name: str, argv: list[str], env: dict[str, str]) -> str:
        """The unit of one role instance; its program by absolute path (as systemd wants)."""
        program = argv[0] if os.path.isabs(argv[0]) else (shutil.which(argv[0]) or argv[0])
        lines = [
            "[Unit]",
            f"Description=voipcloud role {name}",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=simple",
            f"ExecStart={shlex.join([program, *argv[1:]])}",
            "ExecReload=/bin/kill -HUP $MAINPID",
            *(f"Environment={shlex.quote(f'{k}={v}')}" for k, v in sorted(env.items())),
            "Restart=on-failure",
            "RestartSec=2",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
        return "\n".join(lines)

    def _systemd_start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        unit = SYSTEMD_UNIT_DIR / f"voipcloud-{name}.service"
        text = self.unit_text(name, argv, env)
        if not unit.exists() or unit.read_text() != text:
            unit.write_text(text)
            self._systemctl("daemon-reload", None)
        self._systemctl("enable", name)
        self._systemctl("restart", name)

    def _systemd_stop(self, name: str) -> None:
        unit = SYSTEMD_UNIT_DIR / f"voipcloud-{name}.service"
        if unit.exists():
            self._systemctl("disable", name, "--now", check=False)

    def _systemctl(self, verb: str, name: str | None, *extra: str, check: bool = True) -> int:
        argv = ["systemctl", verb, *([f"voipcloud-{name}.service"] if name else []), *extra]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if check and result.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)}: {(result.stderr or result.stdout).strip()}")
        return result.returncode
