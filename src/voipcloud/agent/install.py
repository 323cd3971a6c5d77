"""`voipcloud agent install`: keep the session key, write the systemd unit, start it.

key     read from a file or standard input (never an argument: a command line is visible
        to every user of the machine, and stays in shell history), kept as
        STATE_DIR/session-key (0600, in the 0700 state dir). The unit names the file,
        never the key.
trust   over https://, the controller's CA is pinned now (--ca-fingerprint, first contact,
        voipcloud.agent.trust): a wrong fingerprint fails the install, not the service.
unit    voipcloud-agent.service: ExecStart= this environment's own `voipcloud agent` with
        the controller, the pin and the state dir; Restart=always. Hardening that still
        lets the agent do its work: it installs packages (apt-get), writes the roles'
        configuration under /etc and their units under /etc/systemd/system, and starts and
        stops their software, so the file system and privileges are not restricted; only
        what no role needs (the clock, the host name, kernel logs, cgroup writes, foreign
        personalities and address families) is.
start   `systemctl daemon-reload`, `enable`, `restart` (restart: a reinstall upgrades a
        running agent) when systemd runs (/run/systemd/system); otherwise how to start it
        is printed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from voipcloud.agent import trust
from voipcloud.services import tls

UNIT_NAME = "voipcloud-agent.service"
DEFAULT_STATE_DIR = Path("/var/lib/voipcloud-agent")
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
KEY_FILE = "session-key"
MAX_KEY_LENGTH = 512

HARDENING = (
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "LockPersonality=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "SystemCallArchitectures=native",
)


class InstallProblem(Exception):
    """Something the operator must fix before the agent can be installed (one line)."""


@dataclass(frozen=True)
class Plan:
    controller: str
    ca_fingerprint: str | None
    state_dir: Path
    unit_dir: Path
    executable: Path

    @property
    def key_file(self) -> Path:
        return self.state_dir / KEY_FILE

    @property
    def unit_file(self) -> Path:
        return self.unit_dir / UNIT_NAME

    def exec_start(self) -> list[str]:
        argv = [str(self.executable), "agent", "--controller", self.controller]
        if self.ca_fingerprint:
            argv += ["--ca-fingerprint", self.ca_fingerprint]
        return [
            *argv,
            "--session-key-file",
            str(self.key_file),
            "--state-dir",
            str(self.state_dir),
        ]


def this_executable() -> Path:
    """The `voipcloud` console script of the environment running now (the agent's venv)."""
    beside = Path(sys.executable).with_name("voipcloud")
    if beside.exists():
        return beside.absolute()
    found = shutil.which("voipcloud")
    if found is None:
        raise InstallProblem("the voipcloud console script is not installed in this environment")
    return Path(found).absolute()


def check_key(key: str) -> str:
    key = key.strip()
    if not key:
        raise InstallProblem("no session key given (an empty file or standard input)")
    if len(key) > MAX_KEY_LENGTH or any(c.isspace() or not c.isprintable() for c in key):
        raise InstallProblem("that is not a session key (one line, no spaces)")
    return key


def _unit_word(word: str) -> str:
    """One ExecStart= argument: systemd expands % and $ and splits on blanks."""
    escaped = word.replace("%", "%%").replace("$", "$$")
    if escaped and not any(c.isspace() or c in "\"'\\;" for c in escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(plan: Plan) -> str:
    exec_start = " ".join(_unit_word(w) for w in plan.exec_start())
    hardening = "\n".join(HARDENING)
    return f"""# written by `voipcloud agent install`; the session key is in {plan.key_file} (0600)
[Unit]
Description=voipcloud agent (controller {plan.controller})
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart={exec_start}
Restart=always
RestartSec=5
Environment=PYTHONUNBUFFERED=1
# the agent installs packages, writes role configuration under /etc, units under
# /etc/systemd/system and runs role software: no ProtectSystem=, NoNewPrivileges= or
# RestrictSUIDSGID= (package scripts need them); only what no role needs is taken away
{hardening}

[Install]
WantedBy=multi-user.target
"""


def store_key(plan: Plan, key: str) -> None:
    plan.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(plan.state_dir, 0o700)
    tls.write_atomically(plan.key_file, (key + "\n").encode(), 0o600)


def pin(plan: Plan) -> None:
    """First contact over https: the CA is kept in the state dir now. InstallProblem for a
    controller that must not be trusted; an unreachable one is left to the service."""
    try:
        trust.establish(
            plan.controller, fingerprint=plan.ca_fingerprint, ca_file=None, state_dir=plan.state_dir
        )
    except trust.Untrusted as exc:
        raise InstallProblem(str(exc)) from None
    except OSError as exc:
        print(f"note: {plan.controller} is unreachable now ({exc}); the agent will keep trying")


def write_unit(plan: Plan) -> None:
    plan.unit_dir.mkdir(parents=True, exist_ok=True)
    tls.write_atomically(plan.unit_file, unit_text(plan).encode(), 0o644)


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def start(plan: Plan) -> None:
    for argv in (
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", UNIT_NAME],
        ["systemctl", "restart", UNIT_NAME],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            said = " ".join((done.stderr or done.stdout).split())[:300]
            raise InstallProblem(f"{' '.join(argv)} failed: {said}")


def install(plan: Plan, key: str, *, start_now: bool) -> list[str]:
    """Key, pin, unit, start; the lines to tell the operator."""
    key = check_key(key)
    if plan.ca_fingerprint:
        try:
            plan = Plan(
                plan.controller,
                tls.parse_fingerprint(plan.ca_fingerprint),
                plan.state_dir,
                plan.unit_dir,
                plan.executable,
            )
        except ValueError as exc:
            raise InstallProblem(f"--ca-fingerprint: {exc}") from None
    store_key(plan, key)
    pin(plan)
    write_unit(plan)
    told = [
        f"session key kept in {plan.key_file} (0600); delete the copy you gave, if any",
        f"unit written: {plan.unit_file}",
    ]
    if not start_now:
        start_it = f"systemctl daemon-reload && systemctl enable --now {UNIT_NAME}"
        return [*told, f"start it with: {start_it}"]
    if systemd_running():
        start(plan)
        return [*told, f"started: systemctl status {UNIT_NAME}"]
    command = " ".join(_shell_word(w) for w in plan.exec_start())
    return [
        *told,
        "systemd is not running here: start the agent yourself (e.g. under your supervisor):",
        f"  {command}",
    ]


def _shell_word(word: str) -> str:
    return shlex.quote(word)
