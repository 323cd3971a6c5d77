"""The agent's parts on their own: inventory, role handlers, state dir, backoff."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from voipcloud import protocol
from voipcloud.agent import inventory
from voipcloud.agent.handlers import (
    AgentConfig,
    CommandHandler,
    HandlerError,
    HandlerRegistry,
    SoftwareConfig,
)
from voipcloud.agent.runner import Agent, Backoff, deactivate_retry_delay
from voipcloud.agent.state import AgentState, SavedOutcome, StateStore


def test_os_name_from_os_release(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text(
        'NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
    )
    assert inventory.os_name(tmp_path) == "Debian GNU/Linux 12 (bookworm)"


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        ("0::/system.slice/docker-" + "a" * 64 + ".scope\n", "a" * 12),
        ("12:pids:/docker/" + "b" * 64 + "\n", "b" * 12),
        ("0::/kubepods/besteffort/pod1/cri-containerd-" + "c" * 64 + ".scope\n", "c" * 12),
        ("0::/user.slice/user-0.slice/session-1.scope\n", ""),
    ],
)
def test_container_id_from_cgroup(tmp_path: Path, cgroup: str, expected: str) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    assert inventory.container_id(tmp_path) == expected


def test_container_id_from_dockerenv_is_the_hostname(tmp_path: Path) -> None:
    (tmp_path / ".dockerenv").write_text("")
    assert inventory.container_id(tmp_path) != ""


def test_inventory_lists_python_distributions_of_its_environment() -> None:
    collected = inventory.collect()
    names = {c.name for c in collected.components}
    assert "fastapi (Python)" in names
    assert collected.kernel.split()[0] == "Linux"
    assert len(collected.components) <= protocol.MAX_COMPONENTS


def test_command_handler_writes_config_and_runs_commands(tmp_path: Path) -> None:
    log = tmp_path / "log"
    config = AgentConfig.load(None)
    assert config.commands("sip").apply is None
    toml = tmp_path / "agent.toml"
    toml.write_text(
        f'[roles.sip]\napply = "echo apply $VOIPCLOUD_ROLE >> {log}"\nstop = "echo stop >> {log}"\n'
    )
    handler = CommandHandler(tmp_path / "state", AgentConfig.load(toml))
    handler.apply("sip", {"sip_port": 5060, "password": "s3cret-pass"})
    written = handler.config_path("sip")
    assert '"sip_port": 5060' in written.read_text()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    handler.stop("sip")
    assert not written.exists()
    assert log.read_text().split("\n")[:2] == ["apply sip", "stop"]


def test_failing_command_reason_has_exit_status_and_output_tail(tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text('[roles.default]\ncheck = "echo port 5060 busy; exit 9"\n')
    handler = CommandHandler(tmp_path / "state", AgentConfig.load(toml))
    with pytest.raises(HandlerError) as failure:
        handler.apply("pbx", {})
    assert str(failure.value) == "pbx: check command exited with status 9: port 5060 busy"


def test_command_timeout_is_a_clear_failure(tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text('[roles.wk]\napply = "sleep 5"\ntimeout = 0.2\n')
    handler = CommandHandler(tmp_path / "state", AgentConfig.load(toml))
    with pytest.raises(HandlerError, match=r"timed out after 0\.2 s"):
        handler.apply("wk", {})


def test_unknown_config_keys_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text('[roles.wk]\napplly = "true"\n')
    with pytest.raises(ValueError, match="unknown keys"):
        AgentConfig.load(toml)


def test_registry_falls_back_to_the_builtin_handler(tmp_path: Path) -> None:
    # the role software is on by default (docs/roles.md); a role without software (wk) and
    # every role with the software turned off get the command handler
    registry = HandlerRegistry(tmp_path, AgentConfig())
    assert not isinstance(registry.for_role("sip"), CommandHandler)
    assert isinstance(registry.for_role("wk"), CommandHandler)
    off = AgentConfig(software=SoftwareConfig(enabled=False))
    assert isinstance(HandlerRegistry(tmp_path, off).for_role("sip"), CommandHandler)


def test_state_round_trips_atomically_with_private_permissions(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    state = AgentState(node_id=3, agent_token="t", applied={"sip": "abc"}, generation=4)
    state.outcomes["op-1"] = SavedOutcome(success=False, reason="boom")
    store.save(state)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert store.load() == state
    assert not store.path.with_suffix(".tmp").exists()


def test_an_operation_cut_short_by_a_restart_is_reported_failed_not_redone(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state")
    store.save(AgentState(node_id=3, agent_token="t", started="op-7"))
    agent = Agent(
        controller_url="http://127.0.0.1:9",
        session_key="k",
        state_dir=tmp_path / "state",
        collect_inventory=protocol.Inventory,
    )
    saved = agent.state.outcomes["op-7"]
    assert saved.success is False
    assert "interrupted" in (saved.reason or "")
    assert agent.state.started is None
    assert [o.operation_id for o in agent._unacked()] == ["op-7"]


def test_backoff_grows_with_full_jitter_and_is_capped() -> None:
    backoff = Backoff()
    assert (backoff.base, backoff.cap) == (protocol.RECONNECT_BASE, protocol.RECONNECT_CAP)
    ceilings = []
    for _ in range(12):
        ceilings.append(backoff.ceiling())
        assert 0 <= backoff.next_delay() <= ceilings[-1]
    assert ceilings[:6] == [1, 2, 4, 8, 16, 30]
    assert ceilings[-1] == 30
    backoff.attempt = 10_000  # no overflow however long the controller stays away
    assert backoff.next_delay() <= 30
    backoff.reset()
    assert backoff.ceiling() == 1


def test_a_fleet_reconnecting_after_an_outage_spreads_out() -> None:
    """200 agents lose the controller at the same moment; it is back after 20 s. With full
    jitter their first tries after it is back are spread over many seconds, not one burst."""
    arrivals = []
    for _ in range(200):
        backoff, clock = Backoff(), 0.0
        while clock < 20:
            clock += backoff.next_delay()
        arrivals.append(clock - 20)
    arrivals.sort()
    assert arrivals[-1] <= protocol.RECONNECT_CAP
    in_first_second = sum(1 for a in arrivals if a < 1)
    assert in_first_second < 40  # a burst would be all 200 within the first second
    assert arrivals[150] - arrivals[50] > 3  # the middle half spans seconds


def test_deactivation_retry_delays_double_from_2_s_to_5_min() -> None:
    for attempts, ceiling in [(1, 2), (2, 4), (3, 8), (5, 32), (8, 256), (9, 300), (60, 300)]:
        delay = deactivate_retry_delay(attempts)
        assert ceiling * 0.75 - 1 <= delay <= ceiling
        assert delay == int(delay)  # whole seconds: the status reason shows them
