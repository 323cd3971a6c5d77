"""Run the real `voipcloud` executable as an operator would, with its own config dir."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import ADMIN_PASSWORD, Controller, voipcloud_executable

# variables of the operator's shell that would change what the CLI does
_OPERATOR_ENV = ("VOIPCLOUD_PROFILE", "VOIPCLOUD_PASSWORD", "VOIPCLOUD_CONTROLLER")


@dataclass
class Cli:
    config_dir: Path

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _OPERATOR_ENV}
        env.update({"VOIPCLOUD_CONFIG_DIR": str(self.config_dir), "COLUMNS": "160"})
        env.update(extra or {})
        return env

    def run(
        self, *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [voipcloud_executable(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(env),
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        done = self.run(*args, **kwargs)
        assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
        return done

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, "--output", "json", **kwargs).stdout)

    def fails(self, code: int, *args: str, **kwargs: Any) -> str:
        """Run a command that must fail with `code`; its one-line error (stderr)."""
        done = self.run(*args, **kwargs)
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        return done.stderr.strip()

    def login(self, controller: Controller, *extra: str) -> None:
        self.ok(
            "login",
            "--controller",
            controller.url,
            "--password-stdin",
            *extra,
            stdin=ADMIN_PASSWORD + "\n",
        )


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]
