"""Role handlers: how a role is applied, checked and stopped on this node. Pluggable.

A package can provide a handler for a role through the entry point group
`voipcloud.role_handlers` (name: the role code, or `default` for every role without its
own). A handler factory takes the agent's state dir and configuration and returns an
object with `apply(role, config)` and `stop(role)`, raising HandlerError with a reason.

The built-in handler writes the role's effective configuration to `roles/<code>.json` in
the state dir and runs the role's apply / check / stop commands from the agent's
configuration file (none by default).
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


@dataclass(frozen=True)
class RoleCommands:
    apply: str | None = None
    check: str | None = None
    stop: str | None = None
    timeout: float = 300.0


@dataclass(frozen=True)
class AgentConfig:
    roles: dict[str, RoleCommands] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> AgentConfig:
        if path is None or not path.exists():
            return cls()
        data = tomllib.loads(path.read_text())
        roles = {}
        for code, spec in data.get("roles", {}).items():
            unknown = set(spec) - {"apply", "check", "stop", "timeout"}
            if unknown:
                raise ValueError(f"{path}: roles.{code}: unknown keys {sorted(unknown)}")
            roles[code] = RoleCommands(**spec)
        return cls(roles=roles)

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
    """Picks each role's handler: its own entry point, else `default`, else the built-in."""

    def __init__(self, state_dir: Path, config: AgentConfig) -> None:
        factories: dict[str, HandlerFactory] = {}
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            factories[entry.name] = entry.load()
        self._factories = factories
        self._state_dir = state_dir
        self._config = config
        self._made: dict[str, RoleHandler] = {}

    def for_role(self, role: str) -> RoleHandler:
        name = role if role in self._factories else "default"
        if name not in self._made:
            factory = self._factories.get(name, builtin_factory)
            self._made[name] = factory(self._state_dir, self._config)
        return self._made[name]
