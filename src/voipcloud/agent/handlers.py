"""Role handlers: how a role is applied, checked and stopped on this node. Pluggable.

A package can provide a handler for a role through the entry point group
`voipcloud.role_handlers` (name: the role code, or `default` for every role without its
own). A handler factory takes the agent's state dir and configuration and returns an
object with `apply(role, config)` and `stop(role)`, raising HandlerError with a reason, and
optionally `health(role, config) -> Health` (without it the role's health is "unknown").

Which handler a role gets, first match:
1. an entry point named after the role;
2. a `[roles.<code>]` section in the agent's configuration file: the command handler;
3. the built-in software handler of the role (sip, jabber, que, sql, web, pbx:
   src/voipcloud/agent/roles/, docs/roles.md), unless `[software] enabled = false`;
4. the `default` entry point, else the command handler.

The command handler writes the role's effective configuration to `roles/<code>.json` in
the state dir and runs the role's apply / check / stop commands from the agent's
configuration file (none by default); its health is the check command.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

ENTRY_POINT_GROUP = "voipcloud.role_handlers"
OUTPUT_TAIL = 1500


class HandlerError(Exception):
    """A role could not be applied or stopped; the message is the reason shown to admins."""


HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Health:
    state: str  # healthy / unhealthy / unknown
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.state != UNHEALTHY


@dataclass(frozen=True)
class NodeInfo:
    """The node's addresses, from the controller (desired.node)."""

    private_ip: str | None = None
    public_ip: str | None = None
    hostname: str = ""
    controller_url: str = ""  # the controller this agent talks to (web: the portal upstream)


@dataclass(frozen=True)
class SoftwareConfig:
    enabled: bool = True  # run the built-in software handlers (docs/roles.md)
    install: bool = False  # apt-get install missing packages (else: fail naming them)
    supervisor: str = "auto"  # auto (systemd when PID 1 is systemd), systemd, agent
    startup_timeout: float = 30.0  # seconds for the first health check to pass after apply
    web_upstream: str | None = None  # the users' portal nginx serves; default: the controller
    web_certificate: str | None = None  # PEM files: with both, nginx also serves HTTPS
    web_key: str | None = None


@dataclass(frozen=True)
class RoleCommands:
    apply: str | None = None
    check: str | None = None
    stop: str | None = None
    timeout: float = 300.0


@dataclass(frozen=True)
class AgentConfig:
    roles: dict[str, RoleCommands] = field(default_factory=dict)
    software: SoftwareConfig = field(default_factory=SoftwareConfig)
    health_interval: float = 15.0  # seconds between role health checks

    @classmethod
    def load(cls, path: Path | None) -> AgentConfig:
        if path is None or not path.exists():
            return cls()
        data = tomllib.loads(path.read_text())
        unknown_top = set(data) - {"roles", "software", "health_interval"}
        if unknown_top:
            raise ValueError(f"{path}: unknown keys {sorted(unknown_top)}")
        roles = {}
        for code, spec in data.get("roles", {}).items():
            unknown = set(spec) - {"apply", "check", "stop", "timeout"}
            if unknown:
                raise ValueError(f"{path}: roles.{code}: unknown keys {sorted(unknown)}")
            roles[code] = RoleCommands(**spec)
        software = data.get("software", {})
        unknown = set(software) - {
            "enabled",
            "install",
            "supervisor",
            "startup_timeout",
            "web_upstream",
            "web_certificate",
            "web_key",
        }
        if unknown:
            raise ValueError(f"{path}: software: unknown keys {sorted(unknown)}")
        if software.get("supervisor", "auto") not in ("auto", "systemd", "agent"):
            raise ValueError(f"{path}: software.supervisor: auto, systemd or agent")
        interval = float(data.get("health_interval", 15.0))
        if not 0.1 <= interval <= 3600:
            raise ValueError(f"{path}: health_interval: between 0.1 and 3600 seconds")
        return cls(roles=roles, software=SoftwareConfig(**software), health_interval=interval)

    def commands(self, role: str) -> RoleCommands:
        return self.roles.get(role) or self.roles.get("default") or RoleCommands()


class RoleHandler(Protocol):
    def apply(self, role: str, config: Mapping[str, Any]) -> None: ...

    def stop(self, role: str) -> None: ...


HandlerFactory = Callable[[Path, AgentConfig], RoleHandler]


class CommandHandler:
    """The built-in handler: configuration file per role plus configured commands."""

    def __init__(self, state_dir: Path, config: AgentConfig) -> None:
        self.roles_dir = state_dir / "roles"
        self.config = config

    def config_path(self, role: str) -> Path:
        return self.roles_dir / f"{role}.json"

    def apply(self, role: str, config: Mapping[str, Any]) -> None:
        self.roles_dir.mkdir(parents=True, exist_ok=True)
        path = self.config_path(role)
        temporary = path.with_suffix(".tmp")
        # it holds credentials: readable by the agent's user only
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"role": role, "parameters": dict(config)}, handle, indent=2, sort_keys=True)
        os.replace(temporary, path)
        commands = self.config.commands(role)
        self._run(role, "apply", commands.apply, commands.timeout)
        self._run(role, "check", commands.check, commands.timeout)

    def stop(self, role: str) -> None:
        commands = self.config.commands(role)
        self._run(role, "stop", commands.stop, commands.timeout)
        self.config_path(role).unlink(missing_ok=True)

    def health(self, role: str, config: Mapping[str, Any]) -> Health:
        commands = self.config.commands(role)
        if not commands.check:
            return Health(UNKNOWN, "no check command configured")
        try:
            self._run(role, "check", commands.check, commands.timeout)
        except HandlerError as exc:
            return Health(UNHEALTHY, str(exc))
        return Health(HEALTHY)

    def _run(self, role: str, step: str, command: str | None, timeout: float) -> None:
        if not command:
            return
        env = {
            **os.environ,
            "VOIPCLOUD_ROLE": role,
            "VOIPCLOUD_ROLE_CONFIG": str(self.config_path(role)),
        }
        try:
            result = subprocess.run(  # noqa: S603 - the administrator's configured command
                ["/bin/sh", "-c", command],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HandlerError(f"{role}: {step} command timed out after {timeout:g} s") from None
        except OSError as exc:
            raise HandlerError(f"{role}: {step} command could not start: {exc}") from None
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-OUTPUT_TAIL:]
            raise HandlerError(
                f"{role}: {step} command exited with status {result.returncode}: {output}"
            )


def builtin_factory(state_dir: Path, config: AgentConfig) -> RoleHandler:
    return CommandHandler(state_dir, config)


class HandlerRegistry:
    """Picks each role's handler (see the module's docstring for the order)."""

    def __init__(self, state_dir: Path, config: AgentConfig) -> None:
        factories: dict[str, HandlerFactory] = {}
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            factories[entry.name] = entry.load()
        self._factories = factories
        self._state_dir = state_dir
        self._config = config
        self._made: dict[str, RoleHandler] = {}
        self.node = NodeInfo()  # updated from every desired state
        self._software: Any = None  # the built-in software handlers' shared context

    def _software_factory(self, role: str) -> Callable[[], RoleHandler] | None:
        if not self._config.software.enabled or role in self._config.roles:
            return None
        from voipcloud.agent import roles as software_roles

        handler_class = software_roles.BUILTIN.get(role)
        if handler_class is None:
            return None
        if self._software is None:
            self._software = software_roles.SoftwareContext(
                self._state_dir, self._config.software, lambda: self.node
            )
        context = self._software
        return lambda: handler_class(context)

    def for_role(self, role: str) -> RoleHandler:
        if role in self._factories:
            name = role
        elif role in self._config.roles:
            name = f"commands:{role}"
        elif self._software_factory(role) is not None:
            name = f"software:{role}"
        else:
            name = "default"
        if name not in self._made:
            if name.startswith("software:"):
                make = self._software_factory(role)
                assert make is not None
                self._made[name] = make()
            elif name.startswith("commands:"):
                self._made[name] = builtin_factory(self._state_dir, self._config)
            else:
                factory = self._factories.get(name, builtin_factory)
                self._made[name] = factory(self._state_dir, self._config)
        return self._made[name]

    def health(self, role: str, config: Mapping[str, Any]) -> Health:
        """The role's health check; a handler without one, or one that fails oddly: said."""
        handler = self.for_role(role)
        check = getattr(handler, "health", None)
        if check is None:
            return Health(UNKNOWN, "the role's handler has no health check")
        try:
            result = check(role, config)
        except Exception as exc:  # a plug-in's surprise is an unhealthy role, said so
            return Health(UNHEALTHY, f"health check failed: {type(exc).__name__}: {exc}")
        if not isinstance(result, Health):
            return Health(UNKNOWN, "the health check answered nothing usable")
        return result

    def tick(self) -> None:
        """Restart supervised programs whose backoff delay is over."""
        if self._software is not None:
            self._software.supervisor.restart_due()

    def next_restart(self) -> float | None:
        return None if self._software is None else self._software.supervisor.next_restart()
