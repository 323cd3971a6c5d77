"""Replacing the controller's CA without losing a node (docs/security.md, "Replacing the CA").

    voipcloud tls ca begin    the next CA is announced at GET /api/v1/agent/trust; pinned
                              agents fetch it over their verified, authenticated link
    voipcloud tls ca switch   the next CA signs the server certificate (old one still trusted)
    voipcloud tls ca retire   the old CA is no longer announced; agents drop it

A real `voipcloud serve --tls on` and a real agent pinned with the old fingerprint: it stays
connected through all three steps, a restart with the same command line (old fingerprint)
reconnects through the new CA, and a newcomer pinned to the old CA is refused after the switch.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import node, voipcloud_executable, wait_for, wait_status
from tests.support.tls_netns import HttpsController, presented_leaf
from voipcloud.agent.trust import TRUST_FILE
from voipcloud.services import tls

pytestmark = pytest.mark.e2e


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[HttpsController]:
    started = HttpsController(data_dir=tmp_path / "controller", env={"VOIPCLOUD_TLS": "on"})
    yield started.start()
    started.stop()


def tls_command(controller: HttpsController, *args: str) -> str:
    done = subprocess.run(
        [voipcloud_executable(), "tls", *args, "--data-dir", str(controller.data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class Agent:
    def __init__(self, controller: HttpsController, key: str, pin: str, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "key").write_text(key)
        self.state_dir = state_dir
        self.argv = [
            voipcloud_executable(),
            "agent",
            "--controller",
            controller.url,
            "--ca-fingerprint",
            pin,
            "--session-key-file",
            str(state_dir / "key"),
            "--state-dir",
            str(state_dir),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Agent:
        env = {**os.environ, "VOIPCLOUD_TRUST_REFRESH": "0.5"}
        with (self.state_dir / "agent.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def log(self) -> str:
        return (self.state_dir / "agent.log").read_text(errors="replace")

    def trusted(self) -> set[str]:
        kept = (self.state_dir / TRUST_FILE).read_text()
        return {tls.cert_fingerprint(c) for c in tls.load_pem_certs(kept)}

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


def test_the_ca_is_replaced_while_the_agent_stays_connected(
    controller: HttpsController, tmp_path: Path
) -> None:
    admin = controller.admin()
    old = controller.fingerprint()
    created = admin.post("/api/v1/nodes", json={"hostname": "ca-1", "private_ip": "10.4.0.2"})
    node_id = created.json()["node_id"]
    key = admin.post(f"/api/v1/nodes/{node_id}/roles", json={"role": "wk"}).json()["session_key"]
    agent = Agent(controller, key, old, tmp_path / "agent").start()
    try:
        wait_for(lambda: node(admin, node_id)["connectivity"] == "connected", timeout=30)
        admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
        wait_status(admin, node_id, "Online", timeout=30)
        assert agent.trusted() == {old}

        begun = tls_command(controller, "ca", "begin")
        new = begun.split("Next CA: ")[1].split(".")[0]
        assert new.startswith("sha256:")
        assert new != old
        wait_for(lambda: agent.trusted() == {old, new}, timeout=15, what="the agent to trust both")
        assert "up to date" in tls_command(controller, "ca", "status")

        tls_command(controller, "ca", "switch")
        assert controller.fingerprint() == new
        issuer = tls.load_pem_certs(controller.ca_file.read_bytes())[0].subject
        wait_for(
            lambda: presented_leaf("127.0.0.1", controller.port).issuer == issuer,
            timeout=10,
            what="the server certificate from the new CA",
        )
        # the test's own clients trust the new CA from now on
        admin = controller.admin()
        assert node(admin, node_id)["connectivity"] == "connected"

        # restarted with the same command line (the old fingerprint): trusts the new CA
        agent.stop()
        agent.start()
        wait_for(lambda: agent.log().count("channel open") == 2, timeout=30, what="reconnect")
        assert "refused" not in agent.log()

        # a newcomer pinned to the old CA is refused: the controller no longer presents it
        newcomer = Agent(controller, key, old, tmp_path / "newcomer").start()
        assert newcomer.process is not None
        assert newcomer.process.wait(timeout=30) == 2
        assert "refused the controller" in newcomer.log()

        tls_command(controller, "ca", "retire")
        wait_for(lambda: agent.trusted() == {new}, timeout=15, what="the old CA to be dropped")
        assert node(admin, node_id)["connectivity"] == "connected"
        assert node(admin, node_id)["status"] == "Online"
        agent.stop()
        agent.start()  # still starts with --ca-fingerprint OLD: re-pinned through the controller
        wait_for(lambda: agent.log().count("channel open") == 3, timeout=30, what="reconnect")
        wait_for(lambda: node(admin, node_id)["connectivity"] == "connected", timeout=30)
    finally:
        agent.stop()
