"""The eight node statuses of the seed, each with its label, colour and meaning.

One definition serves the API documentation, the web badges and the CLI colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class NodeStatus(StrEnum):
    OFFLINE = "Offline"
    STANDBY = "StandBy"
    ACTIVATE_FAILED = "ActivateFailed"
    DAMAGED = "Damaged"
    ONLINE = "Online"
    DELETED = "Deleted"
    DEACTIVATED = "Deactivated"
    DEACTIVATE_PENDING = "DeactivatePending"


@dataclass(frozen=True, slots=True)
class StatusInfo:
    status: NodeStatus
    label: str
    colour: str  # a CSS/Rich colour name
    meaning: str


STATUS_INFO: dict[NodeStatus, StatusInfo] = {
    info.status: info
    for info in (
        StatusInfo(
            NodeStatus.OFFLINE,
            "Offline",
            "grey",
            "The initial status of the node when added.",
        ),
        StatusInfo(
            NodeStatus.STANDBY,
            "StandBy",
            "blue",
            "Set administratively: the node exists on stand-by but has not been activated yet.",
        ),
        StatusInfo(
            NodeStatus.ACTIVATE_FAILED,
            "ActivateFailed",
            "red",
            "Set automatically when the activation of the node fails or times out.",
        ),
        StatusInfo(
            NodeStatus.DAMAGED,
            "Damaged",
            "orange",
            "The node is known to have problems, typically after an infrastructure change.",
        ),
        StatusInfo(
            NodeStatus.ONLINE,
            "Online",
            "green",
            "Set automatically when the node reports a successful activation.",
        ),
        StatusInfo(
            NodeStatus.DELETED,
            "Deleted",
            "black",
            "The node was deleted administratively; kept for history only.",
        ),
        StatusInfo(
            NodeStatus.DEACTIVATED,
            "Deactivated",
            "purple",
            "The node is deactivated in the system, without being deleted.",
        ),
        StatusInfo(
            NodeStatus.DEACTIVATE_PENDING,
            "DeactivatePending",
            "yellow",
            "The node is being deactivated but has not signed the completion yet.",
        ),
    )
}

LIVE_STATUSES = frozenset(s for s in NodeStatus if s is not NodeStatus.DELETED)
