"""The Configuration Wizard brings the whole single-node stack up on the IC node (SPEC §10).

A real `voipcloud serve` and its IC node's agent run inside a network namespace of this test's
own (so the Kamailio, Prosody, RabbitMQ, MariaDB and nginx its agent starts never meet the
machine's own PostgreSQL/MariaDB/RabbitMQ on the standard ports). The wizard is run through
the API with the software handlers at their default (on); real clients then check every
service from the host side of the bridge and from another namespace.

Asterisk is not in Debian 12 and not on this machine: as an operator without it would, the
IC agent's configuration gives `pbx` the command handler (`[roles.pbx]`); without that the
wizard's activation fails naming what to install (checked first).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_role_software_services import AMQP
from tests.e2e.test_role_software_sip import refusal, sipp_options  # noqa: F401
from tests.support.netns import Lab, NamespacedController, role_lab
from tests.support.processes import node, wait_for, wait_status
from voipcloud.agent.roles.jabber import open_stream
from voipcloud.agent.roles.sip import options_ping
from voipcloud.domain.roles import SINGLE_NODE_ROLES

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

PROGRAMS = ("kamailio", "prosody", "mariadbd", "mariadb-install-db", "rabbitmq-server", "nginx")
DOMAIN = "voip.example.com"
SQL_PASSWORD, QUEUE_PASSWORD = "wizard-sql-secret-1", "wizard-queue-secret-1"
SOFTWARE = (
    "health_interval = 2\n"
    "[software]\n"  # on by default; here only the figures a loaded test machine needs
    'supervisor = "agent"\n'
    "startup_timeout = 120\n"
)
# what an operator without Asterisk writes: the pbx role keeps the command handler
PBX_BY_HAND = '[roles.pbx]\napply = "true"\n'
SOFTWARE_ROLES = ("sip", "jabber", "que", "sql", "web")


@pytest.fixture
def lab(refusal: str | None) -> Iterator[Lab]:  # noqa: F811
    with role_lab(refusal, PROGRAMS) as made:
        yield made


def start_controller(lab: Lab, data_dir: Path, ns_index: int, config: str) -> NamespacedController:
    ns = lab.namespaces[ns_index]
    (data_dir / "ic-agent").mkdir(parents=True, exist_ok=True)
    (data_dir / "ic-agent" / "agent.toml").write_text(config)
    return NamespacedController(
        data_dir=data_dir,
        host=ns.address,
        ic_agent=True,
        software=True,  # the IC agent's configuration is this test's own, written above
        env={"VOIPCLOUD_ACTIVATION_TIMEOUT": "400"},
        namespace=ns,
    ).start()


def run_wizard(controller: NamespacedController, private_ip: str) -> tuple[httpx.Client, int]:
    admin = controller.admin()
    detected = admin.get("/api/v1/infrastructure/wizard").json()
    assert detected["available"] is True, detected
    ic = detected["controller"]["node_id"]
    # the shared credentials, set first so the test knows them (they are write-only)
    saved = admin.put(
        "/api/v1/infrastructure/properties",
        json={"sql_password": SQL_PASSWORD, "queue_password": QUEUE_PASSWORD},
    )
    assert saved.status_code == 200, saved.text
    answers = {"system_domain": DOMAIN, "public_ip": "203.0.113.10", "private_ip": private_ip}
    run = admin.post("/api/v1/infrastructure/wizard", json=answers)
    assert run.status_code == 200, run.text
    return admin, ic


def test_without_asterisk_the_wizard_fails_naming_what_to_install(lab: Lab, tmp_path: Path) -> None:
    if shutil.which("asterisk"):
        pytest.skip("asterisk is installed here: the pbx role would run it")
    ns = lab.add()
    controller = start_controller(lab, tmp_path / "controller", 0, SOFTWARE)
    try:
        admin, ic = run_wizard(controller, ns.address)
        failed = wait_status(admin, ic, "ActivateFailed", timeout=400)
        reason = failed["status_reason"]
        assert "pbx: Asterisk is not installed" in reason, reason
        assert "Debian 12 does not ship it: install Asterisk 18 or newer" in reason, reason
    finally:
        controller.stop()


def test_the_wizard_brings_the_single_node_stack_up_on_the_ic_node(
    lab: Lab, tmp_path: Path
) -> None:
    ns = lab.add()  # the IC node: controller, its agent and every role's software
    client = lab.add()  # another machine, a client only
    controller = start_controller(lab, tmp_path / "controller", 0, SOFTWARE + PBX_BY_HAND)
    try:
        started = time.monotonic()
        admin, ic = run_wizard(controller, ns.address)
        online = wait_status(admin, ic, "Online", timeout=400)
        print(
            f"\nwizard -> IC node Online with the whole stack: {time.monotonic() - started:.1f} s"
        )
        assert online["is_controller"]
        assert sorted(online["roles"]) == sorted(["ic", *SINGLE_NODE_ROLES])
        assert online["private_ip"] == ns.address
        for role in SOFTWARE_ROLES:
            wait_for(
                lambda r=role: node(admin, ic)["role_health"][r]["state"] == "healthy",
                timeout=60,
                what=f"{role} healthy",
            )
        # roles without software (and pbx, given the command handler): no check, unknown
        health = node(admin, ic)["role_health"]
        assert {r for r, h in health.items() if h["state"] == "unknown"} == {
            "ic",
            "pbx",
            "wk",
            "dd",
            "es",
            "us",
        }, health

        # SIP: OPTIONS answered 200 by Kamailio on the IC node's private IP (raw UDP and sipp)
        assert options_ping(ns.address, 5060, DOMAIN).startswith("SIP/2.0 200")
        answered = sipp_options(ns.address, DOMAIN)
        assert answered.returncode == 0, answered.stdout[-2000:] + answered.stderr[-2000:]

        # XMPP: a client stream for the system domain opens
        stream = open_stream(ns.address, 5222, DOMAIN)
        assert f"from='{DOMAIN}'" in stream.replace('"', "'"), stream
        assert "<stream:features" in stream

        # SQL: a login with the shared SQL credentials, from another namespace
        sql_user = admin.get("/api/v1/infrastructure/properties").json()["sql_username"]
        login = client.run(
            [
                *("env", f"MYSQL_PWD={SQL_PASSWORD}", "mariadb", "--no-defaults"),
                *("--protocol=TCP", "-h", ns.address, "-u", sql_user, "-N", "-e"),
                "SELECT CONCAT(CURRENT_USER(), ' ', DATABASE(), ' ', 1)",
                sql_user,
            ]
        )
        assert login.returncode == 0, login.stderr
        assert login.stdout.strip() == f"{sql_user}@% {sql_user} 1"

        # AMQP: a login to the shared vhost with the shared queue credentials
        queue_user = admin.get("/api/v1/infrastructure/properties").json()["queue_username"]
        amqp = client.run([sys.executable, "-c", AMQP, ns.address, queue_user, QUEUE_PASSWORD])
        assert amqp.returncode == 0, amqp.stdout + amqp.stderr

        # HTTP: nginx on the private IP in front of the users' portal (this controller)
        portal = httpx.get(f"http://{ns.address}/healthz", timeout=10)
        assert portal.status_code == 200, portal.text
        assert portal.headers["server"].startswith("nginx")

        # every program runs inside the namespace, none on the machine's standard ports
        agent_dir = controller.data_dir / "ic-agent"
        for role in SOFTWARE_ROLES:
            pid = int((agent_dir / "run" / f"{role}.pid").read_text().split()[0])
            assert pid in ns.pids(), role

        # Administrative Remove of sip on the IC node: Kamailio stopped (nothing answers, no
        # pid file), the node still Online and its other roles still answering
        removed = admin.post(f"/api/v1/nodes/{ic}/roles/sip/remove", json={"confirm": True})
        assert removed.status_code == 200, removed.text
        wait_for(
            lambda: not (agent_dir / "run" / "sip.pid").exists(),
            timeout=60,
            what="Kamailio stopped after Administrative Remove",
        )
        with pytest.raises(OSError):  # noqa: PT011 - timed out or refused: either is silence
            options_ping(ns.address, 5060, DOMAIN, timeout=1.0)
        assert node(admin, ic)["status"] == "Online"
        assert "sip" not in node(admin, ic)["roles"]
        assert "<stream:features" in open_stream(ns.address, 5222, DOMAIN)
    finally:
        controller.stop()
