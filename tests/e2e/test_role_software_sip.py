"""A real Kamailio run by a real agent inside a network namespace, driven through the API.

The node is Online only once Kamailio answers OPTIONS; a SIP client on the host (sipp from
Debian's sip-tester, and a raw UDP OPTIONS) gets 200 from the node's private IP; a changed
SIP domain makes the node Damaged and Fix makes the new domain answer; killing Kamailio
shows the role unhealthy within a check interval and the agent starts it again; Deactivate
leaves nothing answering.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.accounts_helpers import web_login
from tests.support.netns import (
    BridgeController,
    Lab,
    NamespacedAgent,
    bridge_controller,
    netns_unavailable,
    role_lab,
)
from tests.support.processes import ADMIN_PASSWORD, node, wait_for, wait_status
from voipcloud.agent.roles.sip import options_ping

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

HEALTH_INTERVAL = 1.0
SOFTWARE = (
    f'health_interval = {HEALTH_INTERVAL}\n[software]\nenabled = true\nsupervisor = "agent"\n'
)


@pytest.fixture(scope="module")
def refusal() -> str | None:
    why = netns_unavailable()
    if why:
        print(f"\n!!! SKIPPING the role-software e2e tests: {why} !!!\n")
    return why


@pytest.fixture
def lab(refusal: str | None) -> Iterator[Lab]:
    with role_lab(refusal, ("kamailio",)) as made:
        yield made


@pytest.fixture
def controller(lab: Lab, tmp_path: Path) -> Iterator[BridgeController]:
    with bridge_controller(lab, tmp_path / "controller", activation_timeout=60) as started:
        yield started


def add_node(
    client: httpx.Client, hostname: str, address: str, roles: list[str]
) -> tuple[int, str]:
    created = client.post(
        "/api/v1/nodes",
        json={"hostname": hostname, "private_ip": address, "public_ip": "203.0.113.50"},
    )
    assert created.status_code == 201, created.text
    node_id = created.json()["node_id"]
    key = ""
    for role in roles:
        assigned = client.post(f"/api/v1/nodes/{node_id}/roles", json={"role": role})
        assert assigned.status_code == 201, assigned.text
        key = assigned.json()["session_key"]
    return node_id, key


def sipp_options(address: str, domain: str) -> subprocess.CompletedProcess[str]:
    """One OPTIONS from sipp on the host side of the bridge; exit 0 only on a 200."""
    scenario = Path(__file__).with_name("sipp_options.xml")
    return subprocess.run(
        [
            "sipp",
            f"{address}:5060",
            "-sf",
            str(scenario),
            "-m",
            "1",
            "-key",
            "domain",
            domain,
            "-timeout",
            "10",
            "-timeout_error",
            "-nostdin",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def health(client: httpx.Client, node_id: int) -> dict[str, object]:
    return dict(node(client, node_id)["role_health"]["sip"])


def test_sip_node_online_answers_follows_the_domain_restarts_and_stops(
    lab: Lab, controller: BridgeController, tmp_path: Path
) -> None:
    admin = controller.admin()
    ns = lab.add()
    node_id, key = add_node(admin, "sip-ns", ns.address, ["sip"])
    agent = NamespacedAgent(
        controller_url=controller.url,
        session_key=key,
        state_dir=tmp_path / "agent-sip",
        config=SOFTWARE,
        namespace=ns,
    ).start()
    try:
        wait_for(lambda: node(admin, node_id)["connectivity"] == "connected", what="agent")
        started = time.monotonic()
        assert admin.post(f"/api/v1/nodes/{node_id}/actions/activate").status_code == 200
        online = wait_status(admin, node_id, "Online", timeout=60)
        latency = time.monotonic() - started
        print(f"\nActivate -> Online with a real Kamailio: {latency:.2f} s")
        assert online["role_health"]["sip"]["state"] in ("healthy", "unknown")
        wait_for(lambda: health(admin, node_id)["state"] == "healthy", what="sip healthy")

        # the catalogue states the ports; Quick info and the listing show health and ports
        catalogue = {r["code"]: r for r in admin.get("/api/v1/roles").json()}
        assert {"protocol": "udp", "purpose": "SIP", "parameter": "sip_port"}.items() <= (
            catalogue["sip"]["ports"][0].items()
        )
        web = web_login(controller.url, "admin", ADMIN_PASSWORD)
        info = web.get(f"/nodes/{node_id}/info").text
        assert 'id="info-health-sip">healthy<' in info
        assert f"listens on {ns.address}: udp 5060 (SIP), tcp 5060 (SIP)" in info
        assert f'id="n{node_id}-sip-health"' in web.get("/").text

        # a real SIP client from the host side gets 200 from the node's private IP
        domain = admin.get("/api/v1/infrastructure/properties").json()["system_domain"]
        assert options_ping(ns.address, 5060, domain).startswith("SIP/2.0 200")
        answered = sipp_options(ns.address, domain)
        assert answered.returncode == 0, answered.stdout[-2000:] + answered.stderr[-2000:]

        # the SIP domain changes: Damaged; Fix re-renders and restarts; the new domain answers
        changed = admin.put(
            "/api/v1/infrastructure/properties", json={"system_domain": "sip.example.net"}
        )
        assert changed.status_code == 200, changed.text
        assert wait_status(admin, node_id, "Damaged")["status"] == "Damaged"
        assert options_ping(ns.address, 5060, domain).startswith("SIP/2.0 200")  # old config
        assert admin.post(f"/api/v1/nodes/{node_id}/actions/fix").status_code == 200
        wait_status(admin, node_id, "Online", timeout=60)
        assert options_ping(ns.address, 5060, "sip.example.net").startswith("SIP/2.0 200")
        refused = options_ping(ns.address, 5060, domain)
        assert refused.startswith("SIP/2.0 403"), refused
        config = (agent.state_dir / "roles" / "sip" / "kamailio.cfg").read_text()
        assert 'alias="sip.example.net"' in config
        assert f"listen=udp:{ns.address}:5060 advertise 203.0.113.50:5060" in config
        old = (agent.state_dir / "roles" / "sip" / "kamailio.cfg.old").read_text()
        assert f'alias="{domain}"' in old

        # kill Kamailio: unhealthy within a check interval, then started again by the agent
        pid = int((agent.state_dir / "run" / "sip.pid").read_text().split()[0])
        killed_at = time.monotonic()
        os.killpg(pid, signal.SIGKILL)
        seen = wait_for(
            lambda: (h := health(admin, node_id))["state"] == "unhealthy" and h,
            timeout=HEALTH_INTERVAL * 3 + 2,
            interval=0.05,
            what="sip unhealthy",
        )
        noticed = time.monotonic() - killed_at
        print(f"killed Kamailio seen unhealthy after {noticed:.2f} s: {seen}")
        # "exited …; restarts it in …", or "no answer to OPTIONS" for a check under way
        assert "exited" in str(seen["message"]) or "no answer" in str(seen["message"])
        shown = web.get(f"/nodes/{node_id}/info").text
        assert 'id="info-health-sip">unhealthy<' in shown or 'info-health-sip">healthy<' in shown
        wait_for(lambda: health(admin, node_id)["state"] == "healthy", timeout=20, what="back")
        new_pid = int((agent.state_dir / "run" / "sip.pid").read_text().split()[0])
        assert new_pid != pid
        assert options_ping(ns.address, 5060, "sip.example.net").startswith("SIP/2.0 200")
        assert node(admin, node_id)["status"] == "Online"  # health never changes the status
        reasons = [
            e["reason"]
            for e in admin.get(f"/api/v1/nodes/{node_id}/events", params={"limit": 500}).json()[
                "items"
            ]
            if e["operation"] == "role-health"
        ]
        assert any("healthy → unhealthy" in r for r in reasons), reasons
        assert any("unhealthy → healthy" in r for r in reasons), reasons

        # the agent itself is killed and started again: Kamailio keeps running and is adopted
        assert agent.process is not None
        agent.process.kill()
        agent.process.wait(timeout=10)
        assert options_ping(ns.address, 5060, "sip.example.net").startswith("SIP/2.0 200")
        agent.start()
        wait_for(lambda: node(admin, node_id)["connectivity"] == "connected", what="agent back")
        wait_for(lambda: health(admin, node_id)["state"] == "healthy", timeout=20, what="adopted")
        assert int((agent.state_dir / "run" / "sip.pid").read_text().split()[0]) == new_pid

        # Deactivate: Kamailio stopped, nothing answers
        assert admin.post(f"/api/v1/nodes/{node_id}/actions/deactivate").status_code == 200
        wait_status(admin, node_id, "Deactivated", timeout=30)
        with pytest.raises(OSError):  # noqa: PT011 - timed out or refused: either is silence
            options_ping(ns.address, 5060, "sip.example.net", timeout=1.0)
        assert not (agent.state_dir / "run" / "sip.pid").exists()

        # Delete: the agent exits 0, nothing of the node runs in its namespace any more
        assert admin.delete(f"/api/v1/nodes/{node_id}").json()["status"] == "Deleted"
        assert agent.wait(timeout=20) == 0
        wait_for(lambda: not ns.pids(), timeout=10, what="an empty namespace")
    finally:
        agent.stop()
