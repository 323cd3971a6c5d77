"""Jabber (Prosody), SQL (MariaDB) and Queue (RabbitMQ) nodes, each a real agent in its own
network namespace running the real software, driven through a real controller's API.

Each node is Online only once its software answers; the XMPP stream for the system domain
is answered; the SQL node accepts a login with the shared SQL credentials from another
namespace; the queue node accepts an AMQP login to its virtual host with the shared queue
credentials (and refuses a wrong password); Deactivate leaves nothing answering. Nothing of
the machine's own MariaDB or RabbitMQ is used: each runs inside its namespace with its data
under the agent's state dir.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_role_software_sip import SOFTWARE, add_node, refusal  # noqa: F401
from tests.support.netns import (
    BridgeController,
    Lab,
    NamespacedAgent,
    bridge_controller,
    role_lab,
)
from tests.support.processes import node, wait_for, wait_status
from voipcloud.agent.roles.base import socket_path
from voipcloud.agent.roles.jabber import open_stream

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

PROGRAMS = ("prosody", "mariadbd", "mariadb-install-db", "rabbitmq-server", "nginx")
STARTUP = "startup_timeout = 90\n"


@pytest.fixture
def lab(refusal: str | None) -> Iterator[Lab]:  # noqa: F811
    with role_lab(refusal, PROGRAMS) as made:
        yield made


@pytest.fixture
def controller(lab: Lab, tmp_path: Path) -> Iterator[BridgeController]:
    with bridge_controller(lab, tmp_path / "controller", activation_timeout=120) as started:
        yield started


AMQP = (
    "import sys; from voipcloud.agent.roles.que import amqp_login\n"
    "try:\n"
    "    amqp_login(sys.argv[1], 5672, sys.argv[2], sys.argv[3], sys.argv[2])\n"
    "except PermissionError as exc:\n"
    "    print('refused', exc); sys.exit(3)\n"
    "print('ok')\n"
)

CONNECT = "import socket, sys\nsocket.create_connection((sys.argv[1], int(sys.argv[2])), 2)\n"


def test_jabber_sql_and_queue_nodes_answer_with_the_shared_credentials(
    lab: Lab, controller: BridgeController, tmp_path: Path
) -> None:
    admin = controller.admin()
    properties = admin.get("/api/v1/infrastructure/properties").json()
    domain = properties["system_domain"]
    # the shared credentials: set here so the test knows the passwords (they are write-only)
    sql_password, queue_password = "sql-secret-e2e-1", "queue-secret-e2e-1"
    saved = admin.put(
        "/api/v1/infrastructure/properties",
        json={"sql_password": sql_password, "queue_password": queue_password},
    )
    assert saved.status_code == 200, saved.text
    sql_user, queue_user = properties["sql_username"], properties["queue_username"]
    client_ns = lab.add()  # another namespace, a client only
    agents: dict[str, NamespacedAgent] = {}
    nodes: dict[str, int] = {}
    spaces = {}
    try:
        for role in ("jabber", "sql", "que", "web"):
            ns = lab.add()
            spaces[role] = ns
            node_id, key = add_node(admin, f"{role}-ns", ns.address, [role])
            nodes[role] = node_id
            agents[role] = NamespacedAgent(
                controller_url=controller.url,
                session_key=key,
                state_dir=tmp_path / f"agent-{role}",
                config=SOFTWARE.replace("[software]\n", f"[software]\n{STARTUP}"),
                namespace=ns,
            ).start()
        for role, node_id in nodes.items():
            wait_for(lambda n=node_id: node(admin, n)["connectivity"] == "connected", what=role)
        started = time.monotonic()
        for node_id in nodes.values():
            assert admin.post(f"/api/v1/nodes/{node_id}/actions/activate").status_code == 200
        for role, node_id in nodes.items():
            online = wait_status(admin, node_id, "Online", timeout=150)
            print(f"\n{role}: Online after {time.monotonic() - started:.1f} s")
            assert online["status_reason"] is None
            wait_for(
                lambda n=node_id, r=role: node(admin, n)["role_health"][r]["state"] == "healthy",
                timeout=30,
                what=f"{role} healthy",
            )

        # Jabber: an XMPP stream for the system domain, from the host side
        answer = open_stream(spaces["jabber"].address, 5222, domain)
        assert f"from='{domain}'" in answer.replace('"', "'"), answer
        assert "<stream:features" in answer

        # SQL: a login with the shared credentials from another namespace
        login = client_ns.run(
            [
                "env",
                f"MYSQL_PWD={sql_password}",
                "mariadb",
                "--no-defaults",
                "--protocol=TCP",
                "-h",
                spaces["sql"].address,
                "-u",
                sql_user,
                "-N",
                "-e",
                "SELECT CONCAT(CURRENT_USER(), ' ', DATABASE())",
                sql_user,
            ]
        )
        assert login.returncode == 0, login.stderr
        assert login.stdout.strip() == f"{sql_user}@% {sql_user}"
        wrong = client_ns.run(
            [
                "env",
                "MYSQL_PWD=wrong-password",
                "mariadb",
                "--no-defaults",
                "--protocol=TCP",
                "-h",
                spaces["sql"].address,
                "-u",
                sql_user,
                "-e",
                "SELECT 1",
            ]
        )
        assert wrong.returncode != 0
        assert "Access denied" in wrong.stderr

        # Queue: an AMQP login to the shared vhost from another namespace; a wrong one refused
        amqp = client_ns.run(
            [sys.executable, "-c", AMQP, spaces["que"].address, queue_user, queue_password]
        )
        assert amqp.returncode == 0, amqp.stdout + amqp.stderr
        refused = client_ns.run(
            [sys.executable, "-c", AMQP, spaces["que"].address, queue_user, "wrong-password"]
        )
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "ACCESS_REFUSED" in refused.stdout

        # Web: nginx on the node's private IP in front of the portal (here: the controller)
        portal = httpx.get(f"http://{spaces['web'].address}/healthz", timeout=10)
        assert portal.status_code == 200, portal.text
        page = httpx.get(f"http://{spaces['web'].address}/login", timeout=10)
        assert page.status_code == 200
        assert page.headers["server"].startswith("nginx")

        # Deactivate: each program stopped, nothing answers, MariaDB's socket is gone
        mysqld = Path(socket_path(agents["sql"].state_dir / "roles" / "sql", "mysqld.sock"))
        assert mysqld.is_socket()
        for node_id in nodes.values():
            assert admin.post(f"/api/v1/nodes/{node_id}/actions/deactivate").status_code == 200
        for node_id in nodes.values():
            wait_status(admin, node_id, "Deactivated", timeout=60)
        for role, port in (("jabber", 5222), ("sql", 3306), ("que", 5672), ("web", 80)):
            probe = client_ns.run(
                [
                    sys.executable,
                    "-c",
                    CONNECT,
                    spaces[role].address,
                    str(port),
                ]
            )
            assert probe.returncode != 0, f"{role} still answers on {port}"
            assert not (agents[role].state_dir / "run" / f"{role}.pid").exists()
        assert not mysqld.exists()
    finally:
        for agent in agents.values():
            agent.stop()
