"""The events a webhook may subscribe to (API.md): their names, in the documented order, and
what each means in words. Pure data: the service, the API, the web page and the CLI (whose
`--help` must not load the database layer) read them here."""

from __future__ import annotations

STATUS_CHANGED = "node.status_changed"
HEALTH_CHANGED = "node.health_changed"
AGENT_LOST = "node.agent_lost"
AGENT_BACK = "node.agent_back"
ROLLOUT_FINISHED = "rollout.finished"
ROLLOUT_STOPPED = "rollout.stopped"
EVENT_NAMES: tuple[str, ...] = (
    STATUS_CHANGED,
    HEALTH_CHANGED,
    AGENT_LOST,
    AGENT_BACK,
    ROLLOUT_FINISHED,
    ROLLOUT_STOPPED,
)
EVENT_TITLES = {
    STATUS_CHANGED: "a node's status changed",
    HEALTH_CHANGED: "a role's health changed",
    AGENT_LOST: "a node's agent was lost",
    AGENT_BACK: "a node's agent is back",
    ROLLOUT_FINISHED: "a rollout finished",
    ROLLOUT_STOPPED: "a rollout stopped",
}
