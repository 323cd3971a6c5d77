"""What every service needs: the database, the secret box, the clock and the tunables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from voipcloud.services.secrets_box import SecretBox
from voipcloud.store.database import Database
from voipcloud.store.types import utcnow


@dataclass(slots=True)
class Context:
    db: Database
    box: SecretBox
    clock: Callable[[], datetime] = field(default=utcnow)
    activation_timeout: float = 60.0  # seconds without a report before ActivateFailed
    token_ttl: float = 12 * 3600.0  # seconds an API token stays valid
    heartbeat_interval: float = 10.0  # seconds between agent heartbeats
    missed_beats: int = 3  # an agent is "lost" after this many missed heartbeats
    data_dir: Path | None = None  # where local files live (storage); None: ./voipcloud-data


def admin_actor(username: str) -> str:
    return f"admin:{username}"


def node_actor(node_id: int) -> str:
    return f"node:{node_id}"


CONTROLLER_ACTOR = "controller"
