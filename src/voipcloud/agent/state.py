"""The agent's state dir: its credential, applied roles and operation outcomes.

Written atomically (temporary file, fsync, rename), so a crash leaves the old or the new
state, never half of one. An activation or fix is marked started before it is carried out and
its outcome saved before it is sent: after a restart the agent never carries it out again (it
reports it failed, "interrupted"). A deactivation is not marked: stopping roles is repeated
until it succeeds, and only its success is saved as an outcome; `retries` counts its failed
attempts so that the count (and the backoff) goes on across restarts.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
KEEP_OUTCOMES = 200


@dataclass
class SavedOutcome:
    success: bool
    reason: str | None
    acked: bool = False


@dataclass
class AgentState:
    controller: str = ""
    node_id: int | None = None
    agent_token: str | None = None
    heartbeat_interval: float = 10.0
    applied: dict[str, str] = field(default_factory=dict)  # role code -> config digest
    generation: int = 0
    started: str | None = None  # activation or fix being carried out
    outcomes: dict[str, SavedOutcome] = field(default_factory=dict)  # operation id -> outcome
    retries: dict[str, int] = field(default_factory=dict)  # deactivation id -> failed attempts

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentState:
        outcomes = {k: SavedOutcome(**v) for k, v in data.pop("outcomes", {}).items()}
        return cls(**data, outcomes=outcomes)


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / STATE_FILE
        state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)

    def load(self) -> AgentState:
        try:
            return AgentState.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return AgentState()

    def save(self, state: AgentState) -> None:
        if len(state.outcomes) > KEEP_OUTCOMES:
            for key in list(state.outcomes)[: len(state.outcomes) - KEEP_OUTCOMES]:
                del state.outcomes[key]
        temporary = self.path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(state.to_json(), handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
