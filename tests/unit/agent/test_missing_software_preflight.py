"""An activation whose software is missing starts nothing: every role's program is checked
before any role is applied, and the reason names every missing package at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.unit.agent.test_agent_worker import make_agent
from voipcloud import protocol
from voipcloud.agent.roles import base

ABSENT = {"kamailio", "prosody"}


@pytest.fixture
def without_kamailio_and_prosody(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which

    def which(name: str, *args: object, **kwargs: object) -> str | None:
        return None if Path(name).name in ABSENT else real_which(name)

    monkeypatch.setattr(base.shutil, "which", which)
    monkeypatch.setattr(base, "package_installed", lambda package: package not in ABSENT)


def activation(*codes: str) -> protocol.Desired:
    return protocol.Desired(
        node_id=5,
        hostname="edge",
        status="ActivatePending",
        generation=3,
        operation=protocol.PendingOperation(id="op-1", kind="activate"),
        roles=[protocol.DesiredRole(code=c, name=c, parameters={}) for c in codes],
    )


@pytest.mark.usefixtures("without_kamailio_and_prosody")
def test_a_missing_program_starts_no_role_at_all(tmp_path: Path) -> None:
    started = tmp_path / "wk-started"
    agent = make_agent(tmp_path, f'[roles.wk]\napply = "touch {started}"\n')

    ok, reason = agent._apply_all(activation("wk", "sip"))

    assert not ok
    assert reason is not None
    assert "sip: " in reason
    assert "kamailio" in reason
    assert not started.exists(), "the worker role was started although sip cannot run"
    assert agent.state.applied == {}


@pytest.mark.usefixtures("without_kamailio_and_prosody")
def test_every_missing_package_is_named_in_one_reason(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, "")

    ok, reason = agent._apply_all(activation("sip", "jabber"))

    assert not ok
    assert reason is not None
    assert "install the Debian package(s) kamailio" in reason
    assert "install the Debian package(s) prosody" in reason


def test_roles_without_software_are_applied_as_before(tmp_path: Path) -> None:
    started = tmp_path / "wk-started"
    agent = make_agent(tmp_path, f'[roles.wk]\napply = "touch {started}"\ncheck = "true"\n')

    ok, reason = agent._apply_all(activation("wk"))

    assert (ok, reason) == (True, None)
    assert started.exists()
