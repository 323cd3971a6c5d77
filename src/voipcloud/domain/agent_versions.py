"""Is a node's agent older than its controller? (the listing's flag, Quick info, the CLI)

Versions compare as Python package versions (PEP 440: `0.1.0 < 0.1.1 < 0.2.0rc1 < 0.2.0`).
Not flagged: a node whose agent has not reported a version yet, a version that is not PEP 440
(nothing honest can be said about its age), an agent newer than the controller (the controller
is upgraded last as often as first), and a Deleted node (it has no agent any more).
"""

from __future__ import annotations

from functools import lru_cache

from packaging.version import InvalidVersion, Version

from voipcloud.domain.statuses import NodeStatus


@lru_cache(maxsize=256)  # a fleet reports few versions; every listing row asks (two a row)
def parse(version: str | None) -> Version | None:
    if not version:
        return None
    try:
        return Version(version)
    except InvalidVersion:
        return None


def is_outdated(
    agent_version: str | None, controller_version: str, *, status: NodeStatus | None = None
) -> bool:
    """True when the agent reported a version older than the controller's."""
    if status is NodeStatus.DELETED:
        return False
    agent, controller = parse(agent_version), parse(controller_version)
    return agent is not None and controller is not None and agent < controller
