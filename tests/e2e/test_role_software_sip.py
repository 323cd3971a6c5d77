"""A real Kamailio run by a real agent inside a network namespace, driven through the API.

The node is Online only once Kamailio answers OPTIONS; a SIP client on the host (sipp from
Debian's sip-tester, and a raw UDP OPTIONS) gets 200 from the node's private IP; a REGISTER
for the SIP domain is accepted (another domain: 403) and a request to the registered user is
proxied to its contact; a port already held in the namespace fails the activation naming
the port and the process; a changed
SIP domain makes the node Damaged and Fix makes the new domain answer; killing Kamailio
shows the role unhealthy within a check interval and the agent starts it again; Deactivate
leaves nothing answering.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
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
from voipcloud.agent.roles.base import socket_path
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


def sip_request(
    sock: socket.socket, target: tuple[str, int], method: str, uri: str, to: str, **headers: str
) -> str:
    """Send one SIP request over UDP from `sock`; the final answer (1xx skipped)."""
    local, local_port = sock.getsockname()[:2]
    request = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local}:{local_port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <{to}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <{to}>\r\n"
        f"Call-ID: {secrets.token_hex(8)}@{local}\r\n"
        f"CSeq: 1 {method}\r\n"
        + "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
        + "Content-Length: 0\r\n\r\n"
    )
    sock.sendto(request.encode(), target)
    while True:
        answer = sock.recv(65535).decode(errors="replace")
        if not answer.startswith("SIP/2.0 1"):
            return answer


def answer_ok(request: str) -> bytes:
    """A 200 OK to `request` (a SIP request received over UDP), sent back along its Vias."""
    lines = request.split("\r\n")
    keep = [
        line
        for line in lines[1:]
        if line.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq", "record-route")
    ]
    return ("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode()


def check_registrar_and_proxy(host_address: str, node_address: str, domain: str) -> None:
    """REGISTER for the domain: 200 without authentication (no subscriber database: docs);
    another domain: 403; a request to the registered user is proxied to its contact, and
    the contact's answer comes back; an unknown user: 404."""
    kamailio = (node_address, 5060)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller,
    ):
        phone.bind((host_address, 0))
        caller.bind((host_address, 0))
        phone.settimeout(5)
        caller.settimeout(5)
        contact = f"<sip:alice@{host_address}:{phone.getsockname()[1]}>"
        registered = sip_request(
            phone,
            kamailio,
            "REGISTER",
            f"sip:{domain}",
            f"sip:alice@{domain}",
            Contact=contact,
            Expires="300",
        )
        assert registered.startswith("SIP/2.0 200"), registered
        assert f"sip:alice@{host_address}:{phone.getsockname()[1]}" in registered
        assert "expires=" in registered.lower()
        elsewhere = sip_request(
            phone,
            kamailio,
            "REGISTER",
            "sip:other.example.org",
            "sip:alice@other.example.org",
            Contact=contact,
        )
        assert elsewhere.startswith("SIP/2.0 403"), elsewhere
        # To names another domain while the request goes to ours: refused all the same
        foreign = sip_request(
            phone,
            kamailio,
            "REGISTER",
            f"sip:{domain}",
            "sip:alice@other.example.org",
            Contact=contact,
        )
        assert foreign.startswith("SIP/2.0 403"), foreign

        # proxy: OPTIONS to alice reaches her registered contact; her 200 comes back
        local, local_port = caller.getsockname()[:2]
        uri = f"sip:alice@{domain}"
        branch = f"z9hG4bK{secrets.token_hex(8)}"
        caller.sendto(
            (
                f"OPTIONS {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {local}:{local_port};branch={branch};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:bob@{domain}>;tag={secrets.token_hex(4)}\r\n"
                f"To: <{uri}>\r\n"
                f"Call-ID: {secrets.token_hex(8)}@{local}\r\n"
                "CSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            kamailio,
        )
        relayed, source = phone.recvfrom(65535)
        forwarded = relayed.decode(errors="replace")
        assert forwarded.startswith(f"OPTIONS sip:alice@{host_address}:{phone.getsockname()[1]}")
        assert source[0] == node_address
        assert forwarded.count("Via:") + forwarded.count("v:") >= 2  # Kamailio's Via added
        phone.sendto(answer_ok(forwarded), source)
        while (final := caller.recv(65535).decode(errors="replace")).startswith("SIP/2.0 1"):
            pass
        assert final.startswith("SIP/2.0 200"), final
        assert branch in final
        unknown = sip_request(
            caller, kamailio, "OPTIONS", f"sip:carol@{domain}", f"sip:carol@{domain}"
        )
        assert unknown.startswith("SIP/2.0 404"), unknown


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

        # registrar and proxy for the domain (raw UDP from the host side)
        check_registrar_and_proxy(lab.host_address, ns.address, domain)

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

        # Deactivate: Kamailio stopped, nothing answers, its control socket is gone
        ctl = Path(socket_path(agent.state_dir / "roles" / "sip", "kamailio.ctl"))
        assert ctl.is_socket()  # (in /tmp when the state dir is too long a path for it)
        assert admin.post(f"/api/v1/nodes/{node_id}/actions/deactivate").status_code == 200
        wait_status(admin, node_id, "Deactivated", timeout=30)
        with pytest.raises(OSError):  # noqa: PT011 - timed out or refused: either is silence
            options_ping(ns.address, 5060, "sip.example.net", timeout=1.0)
        assert not (agent.state_dir / "run" / "sip.pid").exists()
        assert not ctl.exists()

        # Delete: the agent exits 0, nothing of the node runs in its namespace any more
        assert admin.delete(f"/api/v1/nodes/{node_id}").json()["status"] == "Deleted"
        assert agent.wait(timeout=20) == 0
        wait_for(lambda: not ns.pids(), timeout=10, what="an empty namespace")
    finally:
        agent.stop()


HOLD = (
    "import socket, sys, time\n"
    "held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "held.bind((sys.argv[1], 5060))\n"
    "print('ready', flush=True)\n"
    "time.sleep(300)\n"
)


def test_a_sip_port_held_by_another_program_is_not_taken_over(
    lab: Lab, controller: BridgeController, tmp_path: Path
) -> None:
    admin = controller.admin()
    ns = lab.add()
    # something that is not voipcloud's already holds the SIP port in the node's namespace
    squatter = subprocess.Popen(
        ns.exec_argv([sys.executable, "-c", HOLD, ns.address]),
        stdout=subprocess.PIPE,
        text=True,
    )
    agent = None
    try:
        assert squatter.stdout is not None
        assert squatter.stdout.readline().strip() == "ready"
        node_id, key = add_node(admin, "sip-held", ns.address, ["sip"])
        agent = NamespacedAgent(
            controller_url=controller.url,
            session_key=key,
            state_dir=tmp_path / "agent-held",
            config=SOFTWARE,
            namespace=ns,
        ).start()
        wait_for(lambda: node(admin, node_id)["connectivity"] == "connected", what="agent")
        assert admin.post(f"/api/v1/nodes/{node_id}/actions/activate").status_code == 200
        failed = wait_status(admin, node_id, "ActivateFailed", timeout=60)
        reason = failed["status_reason"]
        # the port, and the process holding it (the pid ip netns exec ran it as)
        assert reason.startswith(
            f"sip: something outside voipcloud already listens on udp {ns.address}:5060 ("
        ), reason
        assert f", pid {squatter.pid}); stop it (voipcloud does not take over Kamailio" in reason
        assert "tcp" not in reason  # only what is really held is named
        assert not (agent.state_dir / "run" / "sip.pid").exists()  # Kamailio never started
        assert squatter.poll() is None  # and the other program was left alone

        # the sibling: the port freed, the same activation succeeds
        squatter.kill()
        squatter.wait(timeout=10)
        assert admin.post(f"/api/v1/nodes/{node_id}/actions/activate").status_code == 200
        wait_status(admin, node_id, "Online", timeout=60)
        domain = admin.get("/api/v1/infrastructure/properties").json()["system_domain"]
        assert options_ping(ns.address, 5060, domain).startswith("SIP/2.0 200")
    finally:
        if squatter.poll() is None:
            squatter.kill()
            squatter.wait(timeout=10)
        if agent is not None:
            agent.stop()
