"""`voipcloud login` and the operator CLI against an HTTPS controller (loopback, `--tls on`),
`voipcloud serve --tls off`, and a certificate brought by the operator (`--tls-cert`).

Proven here: a login with the right fingerprint pins the CA in the profile and every later
command verifies against it (also after `voipcloud tls rotate`); a wrong fingerprint is
refused naming both, before the password is sent (no login event); a first login without a
fingerprint shows it on a terminal to confirm (yes pins, no sends nothing) and is refused
without a terminal; a profile meeting a controller with another certificate refuses to send
its token; `--tls off` is loud; a brought certificate chain is served, its top is the pin,
`--ca-file` works for login and for an agent, and a renewed file is loaded without restart.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.cli_support import Cli
from tests.support.processes import (
    ADMIN_PASSWORD,
    AgentProcess,
    Controller,
    node,
    voipcloud_executable,
    wait_for,
)
from tests.support.tls_netns import HttpsController, Impostor, impostor_certificates, presented_leaf
from voipcloud.services import tls

pytestmark = pytest.mark.e2e


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[HttpsController]:
    started = HttpsController(data_dir=tmp_path / "controller", env={"VOIPCLOUD_TLS": "on"})
    yield started.start()
    started.stop()


def logins(admin: httpx.Client) -> int:
    items = admin.get("/api/v1/events", params={"limit": 500}).json()["items"]
    return sum(1 for e in items if e["operation"] in ("login", "login-failed"))


def login(cli: Cli, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli.run(
        "login", "--controller", url, "--password-stdin", *extra, stdin=ADMIN_PASSWORD + "\n"
    )


def test_login_pins_the_ca_refuses_a_wrong_one_and_survives_rotation(
    controller: HttpsController, tmp_path: Path
) -> None:
    admin = controller.admin()
    right = controller.fingerprint()
    wrong = "sha256:" + "cd" * 32
    seen = logins(admin)

    cli = Cli(config_dir=tmp_path / "operator")
    refused = login(cli, controller.url, "--ca-fingerprint", wrong)
    assert refused.returncode == 3, refused.stderr
    assert "refused the controller" in refused.stderr
    assert right in refused.stderr
    assert wrong in refused.stderr
    assert not (cli.config_dir / "profiles.json").exists()
    # no terminal, no pin: refused, with the fingerprint to check and give
    unpinned = login(cli, controller.url)
    assert unpinned.returncode == 3, unpinned.stderr
    assert f"--ca-fingerprint {right}" in unpinned.stderr
    assert logins(admin) == seen  # the password never reached the controller

    done = login(cli, controller.url, "--ca-fingerprint", right.upper().replace("SHA256:", ""))
    assert done.returncode == 0, done.stderr
    assert right in done.stderr
    profile = cli.json("profiles")[0]
    assert profile["ca_fingerprint"] == right
    assert "ca_pem" not in profile
    stored = json.loads((cli.config_dir / "profiles.json").read_text())["profiles"]["default"]
    assert tls.cert_fingerprint(tls.load_pem_certs(stored["ca_pem"])[0]) == right
    assert logins(admin) == seen + 1
    cli.ok("node", "list")

    serials = {presented_leaf("127.0.0.1", controller.port).serial_number}
    for _ in range(2):
        cli.ok("tls", "rotate", "--data-dir", str(controller.data_dir))
        wait_for(
            lambda: presented_leaf("127.0.0.1", controller.port).serial_number not in serials,
            timeout=10,
            what="the rotated certificate",
        )
        serials.add(presented_leaf("127.0.0.1", controller.port).serial_number)
        cli.ok("node", "list")  # same CA: nothing to do on the CLI side
    shown = cli.ok("tls", "show", "--data-dir", str(controller.data_dir)).stdout
    assert f"CA fingerprint: {right}" in shown

    # the controller's address answered by another certificate: the token is not sent
    controller.stop()
    cert, key = impostor_certificates("127.0.0.1", tmp_path)
    impostor = Impostor("127.0.0.1", controller.port, cert, key).start()
    try:
        message = cli.fails(3, "node", "list")
        assert "does not verify against the CA pinned at login" in message
        time.sleep(0.3)
        assert impostor.connections >= 1
        assert bytes(impostor.received) == b""
    finally:
        impostor.stop()
    controller.start()
    cli.ok("node", "list")


def _on_a_terminal(cli: Cli, url: str, answer: str) -> tuple[int, str]:
    """`voipcloud login` with a pseudo-terminal as stdin/stdout: answers the CA question."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [voipcloud_executable(), "login", "--controller", url],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=cli.env({"VOIPCLOUD_PASSWORD": ADMIN_PASSWORD}),
    )
    os.close(secondary)
    output = b""
    answered = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            output += chunk
        if not answered and b"Trust this CA" in output:
            os.write(primary, answer.encode() + b"\n")
            answered = True
        if process.poll() is not None and not ready:
            break
    os.close(primary)
    code = process.wait(timeout=30)
    return code, output.decode(errors="replace")


def test_first_login_on_a_terminal_shows_the_fingerprint_to_confirm(
    controller: HttpsController, tmp_path: Path
) -> None:
    right = controller.fingerprint()
    declined = Cli(config_dir=tmp_path / "declined")
    code, output = _on_a_terminal(declined, controller.url, "n")
    assert code == 1, output
    assert right in output
    assert "nothing was sent" in output
    assert not (declined.config_dir / "profiles.json").exists()

    accepted = Cli(config_dir=tmp_path / "accepted")
    code, output = _on_a_terminal(accepted, controller.url, "y")
    assert code == 0, output
    assert right in output
    assert accepted.json("profiles")[0]["ca_fingerprint"] == right
    accepted.ok("node", "list")


def test_tls_off_is_loud_and_contradictions_are_refused(tmp_path: Path) -> None:
    plain = Controller(data_dir=tmp_path / "plain", env={"VOIPCLOUD_TLS": "off"}).start()
    try:
        assert "WARNING: TLS is off" in plain.log()
        assert httpx.get(f"{plain.url}/healthz").status_code == 200
        assert not (plain.data_dir / "tls").exists()
    finally:
        plain.stop()
    cert, key = impostor_certificates("127.0.0.1", tmp_path)
    both = subprocess.run(
        [
            voipcloud_executable(),
            "serve",
            "--data-dir",
            str(tmp_path / "both"),
            "--tls",
            "off",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert both.returncode == 2, both.stderr
    assert "--tls off contradicts --tls-cert" in both.stderr


def test_a_brought_certificate_with_ca_file_for_login_and_agent(tmp_path: Path) -> None:
    company = tmp_path / "company"
    company.mkdir()
    chain, key = impostor_certificates("127.0.0.1", company)  # a "company CA" and a leaf
    ca_pem = tls.pem(tls.load_pem_certs(chain.read_bytes())[-1])
    ca_file = company / "company-ca.pem"
    ca_file.write_text(ca_pem)
    byo = HttpsController(
        data_dir=tmp_path / "byo",
        env={"VOIPCLOUD_TLS_CERT": str(chain), "VOIPCLOUD_TLS_KEY": str(key)},
    )
    byo.data_dir.mkdir(parents=True)
    (byo.data_dir / "tls").mkdir()
    (byo.data_dir / "tls" / "ca.pem").write_text(ca_pem)  # for the test's own client only
    byo.start()
    try:
        assert f"--ca-fingerprint {tls.chain_fingerprint(ca_file)}" in byo.log()
        assert not (byo.data_dir / "tls" / "ca.key").exists()  # no CA of its own made
        cli = Cli(config_dir=tmp_path / "operator")
        done = login(cli, byo.url, "--ca-file", str(ca_file))
        assert done.returncode == 0, done.stderr
        cli.ok("node", "list")

        admin = byo.admin()
        created = admin.post("/api/v1/nodes", json={"hostname": "byo-1", "private_ip": "10.9.0.2"})
        node_id = created.json()["node_id"]
        assigned = admin.post(f"/api/v1/nodes/{node_id}/roles", json={"role": "wk"}).json()
        assert assigned["enrolment"]["ca_fingerprint"] == tls.chain_fingerprint(ca_file)
        agent = AgentProcess(byo.url, assigned["session_key"], tmp_path / "agent")
        agent.state_dir.mkdir()
        env = {**os.environ, "VOIPCLOUD_SESSION_KEY": assigned["session_key"]}
        with (agent.state_dir / "agent.log").open("ab") as log:
            agent.process = subprocess.Popen(
                [
                    voipcloud_executable(),
                    "agent",
                    "--controller",
                    byo.url,
                    "--ca-file",
                    str(ca_file),
                    "--state-dir",
                    str(agent.state_dir),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(
                lambda: node(admin, node_id)["connectivity"] == "connected",
                timeout=30,
                what="the agent trusting the company CA to connect",
            )
            # the certificate file renewed in place (as certbot does): loaded, no restart
            before = presented_leaf("127.0.0.1", byo.port).serial_number
            fresh_chain, fresh_key = impostor_certificates("127.0.0.1", tmp_path)
            key.write_bytes(fresh_key.read_bytes())
            chain.write_bytes(fresh_chain.read_bytes())
            wait_for(
                lambda: presented_leaf("127.0.0.1", byo.port).serial_number != before,
                timeout=10,
                what="the renewed certificate",
            )
            assert byo.process is not None
            assert byo.process.poll() is None
        finally:
            agent.stop()
    finally:
        byo.stop()
