"""Agents in network namespaces reach `voipcloud serve` over HTTPS at a non-loopback address.

The controller listens on the lab's bridge address (10.200.77.1, or another range while a
concurrent lab holds that one): not loopback, so it serves HTTPS with its own CA without being
asked. Each agent runs in its own namespace, started with
the command the enrolment answer shows (controller's https:// address, `--ca-fingerprint`,
the key read from a file). Proven here: the right pin goes Online; a wrong pin exits 2 and
the controller never sees the session key; a man in the middle (another certificate at the
controller's address, with or without a copy of the real CA certificate in its chain) gets
not one byte, from a new agent or from a connected one; server certificates rotated while
agents are connected keep them connected, and a restarted agent trusts the rotated one.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import node, voipcloud_executable, wait_for, wait_status
from tests.support.tls_netns import (
    HttpsController,
    Impostor,
    NodeAgent,
    TlsLab,
    agent_argv,
    impostor_certificates,
    netns_unavailable,
    presented_leaf,
)
from voipcloud import protocol
from voipcloud.services import tls

pytestmark = [pytest.mark.e2e]

ROTATIONS = 3


@pytest.fixture
def lab() -> Iterator[TlsLab]:
    why = netns_unavailable()
    if why:
        pytest.skip(why)
    opened = TlsLab().open()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def controller(lab: TlsLab, tmp_path: Path) -> Iterator[HttpsController]:
    started = HttpsController(data_dir=tmp_path / "controller", host=lab.host_address).start()
    yield started
    started.stop()


@pytest.fixture
def agents() -> Iterator[list[NodeAgent]]:
    running: list[NodeAgent] = []
    yield running
    for agent in running:
        agent.stop()


def enrol(admin: httpx.Client, hostname: str, address: str) -> tuple[int, str, dict]:
    created = admin.post("/api/v1/nodes", json={"hostname": hostname, "private_ip": address})
    assert created.status_code == 201, created.text
    node_id = created.json()["node_id"]
    assigned = admin.post(f"/api/v1/nodes/{node_id}/roles", json={"role": "wk"})
    assert assigned.status_code == 201, assigned.text
    body = assigned.json()
    return node_id, body["session_key"], body["enrolment"]


def start_agent(
    lab: TlsLab, tmp_path: Path, name: str, key: str, command: str, agents: list[NodeAgent]
) -> NodeAgent:
    ns = lab.add()
    state_dir = tmp_path / f"agent-{name}"
    state_dir.mkdir()
    (state_dir / "agent.toml").write_text("")
    key_file = state_dir / "session-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    agent = NodeAgent(ns, agent_argv(command, key_file=key_file, state_dir=state_dir), state_dir)
    agents.append(agent.start())
    return agent


def events(admin: httpx.Client) -> list[dict]:
    return admin.get("/api/v1/events", params={"limit": 500}).json()["items"]


def joins(admin: httpx.Client) -> list[dict]:
    return [e for e in events(admin) if e["operation"].startswith("agent-join")]


def connected(admin: httpx.Client, node_id: int) -> dict:
    return wait_for(
        lambda: (n := node(admin, node_id))["connectivity"] == "connected" and n,
        timeout=30,
        what=f"node {node_id}'s agent to connect",
    )


def reconnected(admin: httpx.Client, node_id: int) -> dict:
    """After the controller's restart: within the agents' reconnect cap, plus a margin."""
    return wait_for(
        lambda: (n := node(admin, node_id))["connectivity"] == "connected" and n,
        timeout=protocol.RECONNECT_CAP + 15,
        what=f"node {node_id}'s agent to reconnect",
    )


def test_pinned_agents_go_online_and_stay_connected_through_rotations(
    lab: TlsLab, controller: HttpsController, agents: list[NodeAgent], tmp_path: Path
) -> None:
    admin = controller.admin()
    fingerprint = controller.fingerprint()
    started = []
    for n in (1, 2):
        node_id, key, joining = enrol(admin, f"tls-node-{n}", f"10.200.{lab.net}.{n + 1}")
        assert joining["controller_url"] == controller.url.rstrip("/")
        assert joining["controller_url"].startswith(f"https://{lab.host_address}:")
        assert joining["ca_fingerprint"] == fingerprint
        command = joining["agent_command"]
        assert f"--ca-fingerprint {fingerprint}" in command
        assert "--session-key-file" in command
        assert key not in command
        agent = start_agent(lab, tmp_path, f"n{n}", key, command, agents)
        started.append((node_id, agent))
    for node_id, _ in started:
        connected(admin, node_id)
        admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    for node_id, agent in started:
        wait_status(admin, node_id, "Online", timeout=30)
        kept = (agent.state_dir / "controller-ca.pem").read_text()
        assert tls.cert_fingerprint(tls.load_pem_certs(kept)[0]) == fingerprint
    channels = [agent.log().count("channel open") for _, agent in started]
    assert channels == [1, 1], [a.log()[-2000:] for _, a in started]

    serials = {presented_leaf(lab.host_address, controller.port).serial_number}
    for cycle in range(ROTATIONS):
        done = subprocess.run(
            [voipcloud_executable(), "tls", "rotate", "--data-dir", str(controller.data_dir)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        leaf = wait_for(
            lambda: (
                (c := presented_leaf(lab.host_address, controller.port)).serial_number
                not in serials
                and c
            ),
            timeout=10,
            what=f"rotation {cycle + 1} to be served",
        )
        serials.add(leaf.serial_number)
        assert (
            leaf.issuer.rfc4514_string()
            == tls.load_pem_certs(controller.ca_file.read_bytes())[0].subject.rfc4514_string()
        )
        time.sleep(1.5)  # three heartbeats on the old channels
        for node_id, _ in started:
            shown = node(admin, node_id)
            assert shown["connectivity"] == "connected", shown
            assert shown["status"] == "Online", shown
    assert len(serials) == ROTATIONS + 1
    # the channels opened before the rotations are the ones still open: no reconnect
    assert [agent.log().count("channel open") for _, agent in started] == [1, 1]
    assert controller.fingerprint() == fingerprint  # the CA did not change

    # a restarted agent makes a new handshake: the rotated certificate, same pinned CA
    node_id, agent = started[0]
    agent.stop()
    agent.start()
    wait_for(lambda: agent.log().count("channel open") == 2, timeout=30, what="reconnection")
    connected(admin, node_id)
    assert node(admin, node_id)["status"] == "Online"
    assert "refused" not in agent.log()


def test_wrong_fingerprint_exits_and_the_controller_never_sees_the_key(
    lab: TlsLab, controller: HttpsController, agents: list[NodeAgent], tmp_path: Path
) -> None:
    admin = controller.admin()
    node_id, key, joining = enrol(admin, "tls-wrong", f"10.200.{lab.net}.2")
    right = joining["ca_fingerprint"]
    wrong = "sha256:" + ("ab" * 32)
    command = joining["agent_command"].replace(right, wrong)
    assert wrong in command
    agent = start_agent(lab, tmp_path, "wrong", key, command, agents)
    # time for one retry: on a loaded machine a first handshake can time out (10 s), seen in
    # a full run as "unreachable (timed out); retrying", and the agent then backs off
    assert agent.wait(timeout=90) == 2, agent.log()
    log = agent.log()
    assert "refused the controller" in log
    assert right in log
    assert wrong in log
    assert not (agent.state_dir / "controller-ca.pem").exists()  # nothing pinned
    # the controller never received a join: no event, no inventory, never seen
    assert joins(admin) == []
    shown = node(admin, node_id)
    assert shown["last_seen"] is None, shown
    assert shown["os"] in (None, ""), shown
    assert key not in controller.log()


def test_a_man_in_the_middle_gets_no_session_key_and_no_credential(
    lab: TlsLab, controller: HttpsController, agents: list[NodeAgent], tmp_path: Path
) -> None:
    admin = controller.admin()
    fingerprint = controller.fingerprint()
    # a connected, Online node first
    node_id, key, joining = enrol(admin, "tls-mitm-1", f"10.200.{lab.net}.2")
    online = start_agent(lab, tmp_path, "online", key, joining["agent_command"], agents)
    connected(admin, node_id)
    admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    wait_status(admin, node_id, "Online", timeout=30)
    fresh_id, fresh_key, fresh_joining = enrol(admin, "tls-mitm-2", f"10.200.{lab.net}.3")
    copied_id, copied_key, copied_joining = enrol(admin, "tls-mitm-3", f"10.200.{lab.net}.4")
    admin.close()

    controller.stop()  # the impostor takes the controller's address and port
    received = b""
    for copy in (False, True):
        cert, private = impostor_certificates(
            lab.host_address,
            tmp_path,
            copy_ca=controller.ca_file if copy else None,
        )
        impostor = Impostor(lab.host_address, controller.port, cert, private).start()
        try:
            if not copy:
                # the agent that was connected: it retries and refuses each time
                wait_for(
                    lambda impostor=impostor: impostor.connections >= 2,  # type: ignore[misc]
                    timeout=40,
                    what="the connected agent to try the impostor twice",
                )
                # (an attempt may also time out on a loaded machine before the check that
                # refuses: the refusal is waited for, not assumed from the count)
                wait_for(
                    lambda: f"refused the controller at {controller.url}" in online.log(),
                    timeout=40,
                    what="the connected agent to refuse the impostor",
                )
                assert online.process is not None
                assert online.process.poll() is None
                assert impostor.fingerprint() in online.log()
                assert fingerprint in online.log()
                name, new_key, new_joining = "fresh", fresh_key, fresh_joining
            else:
                name, new_key, new_joining = "copied", copied_key, copied_joining
            # a new agent with the right pin, meeting the impostor first
            before = impostor.connections
            newcomer = start_agent(
                lab, tmp_path, name, new_key, new_joining["agent_command"], agents
            )
            assert newcomer.wait(timeout=30) == 2, newcomer.log()
            assert impostor.connections > before
            assert "refused the controller" in newcomer.log()
            assert fingerprint in newcomer.log()
            time.sleep(0.5)
            assert bytes(impostor.received) == b"", bytes(impostor.received[:200])
        finally:
            impostor.stop()
            received += bytes(impostor.received)
    assert received == b""
    for secret in (key, fresh_key, copied_key):
        assert secret.encode() not in received

    # the real controller comes back: the connected agent reconnects, still pinned
    controller.start()
    admin = controller.admin()
    reconnected(admin, node_id)
    assert node(admin, node_id)["status"] == "Online"
    assert online.process is not None
    assert online.process.poll() is None
    # neither newcomer ever reached the controller
    assert [e for e in joins(admin) if e["node_id"] in (fresh_id, copied_id)] == []
