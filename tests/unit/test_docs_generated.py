"""Generated documentation stays in step with the code it is generated from."""

from pathlib import Path

from voipcloud.domain import diagram

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_state_diagram_matches_the_lifecycle_table() -> None:
    written = (DOCS / "state-diagram.md").read_text()
    assert written == diagram.document(), (
        "docs/state-diagram.md is stale: run "
        "`python -m voipcloud.domain.diagram > docs/state-diagram.md`"
    )


def test_every_status_changing_transition_is_drawn() -> None:
    text = diagram.mermaid()
    assert "Online --> Damaged: configuration-changed (controller), mark-damaged" in text
    assert "DeactivatePending --> Deactivated: deactivation-completed (agent)" in text
    assert "StandBy --> Deactivated: deactivate" in text
