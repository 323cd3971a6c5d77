"""The events a webhook may subscribe to (API.md): their names, in the documented order, and
what each means in words; and the one rule of its test. Pure data: the service, the API, the
web page and the CLI (whose `--help` must not load the database layer) read them here."""

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

# A disabled webhook sends nothing, not even a test: a test of it is refused, not queued (it
# would wait, unsent, until the webhook is enabled). The service refuses with this rule; the
# web page greys out its Send test with the same reason.
TEST_REFUSED_RULE = "webhook-disabled"


def test_refusal(*, enabled: bool) -> str | None:
    """Why a test of the webhook is refused now; None when it may be sent."""
    if enabled:
        return None
    return "This webhook is disabled and sends nothing: enable it to send a test."
