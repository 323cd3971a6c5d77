"""The role handler framework on its own: choosing a handler, health, rendering, supervision."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from voipcloud import protocol
from voipcloud.agent.handlers import (
    AgentConfig,
    CommandHandler,
    HandlerError,
    HandlerRegistry,
    NodeInfo,
    SoftwareConfig,
)
from voipcloud.agent.roles import SoftwareContext
from voipcloud.agent.roles.base import write_if_changed
from voipcloud.agent.roles.sip import Kamailio
from voipcloud.agent.roles.sql import MariaDB
from voipcloud.agent.supervise import Supervisor
from voipcloud.services.role_health import RoleHealthBook, RoleHealthState


def load(tmp_path: Path, text: str) -> AgentConfig:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return AgentConfig.load(path)


def test_software_is_on_by_default_and_a_roles_section_keeps_the_command_handler(
    tmp_path: Path,
) -> None:
    plain = HandlerRegistry(tmp_path, load(tmp_path, ""))
    assert isinstance(plain.for_role("sip"), Kamailio)  # no configuration file: software on
    assert isinstance(HandlerRegistry(tmp_path, AgentConfig.load(None)).for_role("sip"), Kamailio)
    off = HandlerRegistry(tmp_path, load(tmp_path, "[software]\nenabled = false\n"))
    assert isinstance(off.for_role("sip"), CommandHandler)
    config = load(tmp_path, "health_interval = 2\n[roles.que]\n")
    assert config.health_interval == 2
    registry = HandlerRegistry(tmp_path, config)
    assert isinstance(registry.for_role("sip"), Kamailio)
    assert isinstance(registry.for_role("que"), CommandHandler)  # its own section wins
    assert isinstance(registry.for_role("wk"), CommandHandler)  # no software for wk
    with pytest.raises(ValueError, match="software: unknown keys"):
        load(tmp_path, "[software]\nenabeld = true\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load(tmp_path, "helth_interval = 3\n")


def test_command_handler_health_is_its_check_command(tmp_path: Path) -> None:
    registry = HandlerRegistry(
        tmp_path, load(tmp_path, '[roles.wk]\ncheck = "echo queue stuck; exit 4"\n')
    )
    failed = registry.health("wk", {})
    assert failed.state == "unhealthy"
    assert "queue stuck" in (failed.message or "")
    assert registry.health("es", {}).state == "unknown"  # no check configured


def context(tmp_path: Path, node: NodeInfo, **software: object) -> SoftwareContext:
    return SoftwareContext(tmp_path, SoftwareConfig(enabled=True, **software), lambda: node)  # type: ignore[arg-type]


def test_kamailio_listens_on_the_private_ip_and_advertises_the_public_one(tmp_path: Path) -> None:
    node = NodeInfo(private_ip="10.200.1.2", public_ip="203.0.113.9")
    params = {"sip_domain": "voip.example.com", "sip_port": 5080}
    text = Kamailio(context(tmp_path, node)).render(params, node)["kamailio.cfg"]
    assert "listen=udp:10.200.1.2:5080 advertise 203.0.113.9:5080" in text
    assert "listen=tcp:10.200.1.2:5080 advertise 203.0.113.9:5080" in text
    assert "203.0.113.9:5080 advertise" not in text  # not bound here: not listened on
    assert 'alias="voip.example.com"' in text
    assert '$td != "voip.example.com"' in text
    # a public IP that is bound on the node (here: loopback) is listened on too
    bound = NodeInfo(private_ip="127.0.0.1", public_ip="127.0.0.2")
    text = Kamailio(context(tmp_path, bound)).render(params, bound)["kamailio.cfg"]
    assert "listen=udp:127.0.0.2:5080\n" in text


BIND = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.bind(sys.argv[1])\n"
    "time.sleep(60)\n"
)


@pytest.mark.parametrize(
    ("handler", "depth"),
    [(Kamailio, 90), (MariaDB, 90), (MariaDB, 0)],
    ids=["sip-in-tmp", "sql-in-tmp", "sql-in-its-dir"],
)
def test_stopping_the_software_removes_the_sockets_it_made(
    tmp_path: Path, handler: type[Kamailio | MariaDB], depth: int
) -> None:
    """A socket whose path in the role's dir is too long lives in /tmp: nothing else would
    remove it (the software leaves it behind when stopped by a signal)."""
    state_dir = tmp_path / ("d" * depth) if depth else Path(tempfile.mkdtemp(dir="/tmp"))
    role = handler(context(state_dir, NodeInfo(private_ip="127.0.0.1")))
    (name,) = role.sockets
    path = Path(role.short_path(name))
    assert (path.parent == Path("/tmp")) is bool(depth), path
    path.parent.mkdir(parents=True, exist_ok=True)
    role.supervisor.start(role.name, [sys.executable, "-c", BIND, str(path)])
    try:
        deadline = time.monotonic() + 10
        while not path.is_socket():
            assert time.monotonic() < deadline, "the program made no socket"
            time.sleep(0.02)
        role.stop(role.code)
        assert not role.supervisor.running(role.name)
        assert not path.exists()
    finally:
        role.supervisor.stop(role.name)
        path.unlink(missing_ok=True)
        if not depth:
            shutil.rmtree(state_dir)


def test_missing_software_names_the_package_to_install(tmp_path: Path) -> None:
    class Absent(Kamailio):
        binary = "voipcloud-no-such-program"
        packages = ("voipcloud-no-such-package",)

    node = NodeInfo(private_ip="127.0.0.1")
    with pytest.raises(HandlerError, match="install the Debian package\\(s\\) voipcloud-no-such"):
        Absent(context(tmp_path, node)).apply("sip", {"sip_domain": "a.example"})


def test_no_node_addresses_is_a_clear_failure(tmp_path: Path) -> None:
    with pytest.raises(HandlerError, match="did not send the node's addresses"):
        Kamailio(context(tmp_path, NodeInfo())).apply("sip", {})


def test_configuration_written_only_when_changed_with_the_old_copy_kept(tmp_path: Path) -> None:
    path = tmp_path / "roles" / "x" / "x.conf"
    assert write_if_changed(path, "one\n")
    assert not write_if_changed(path, "one\n")
    assert write_if_changed(path, "two\n")
    assert path.read_text() == "two\n"
    assert path.with_name("x.conf.old").read_text() == "one\n"
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_supervised_program_that_dies_is_reported_then_restarted_with_backoff(
    tmp_path: Path,
) -> None:
    supervisor = Supervisor(tmp_path, mode="agent")
    supervisor.start("demo", ["sleep", "30"])
    try:
        first = supervisor.pid("demo")
        assert first
        assert supervisor.problem("demo") is None
        import os
        import signal

        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while supervisor.running("demo") and time.monotonic() < deadline:
            time.sleep(0.02)
        problem = supervisor.problem("demo")
        assert problem is not None
        assert "exited (status -9)" in problem
        assert supervisor.restart_due() == []  # not before its delay (1 s)
        time.sleep(1.1)
        assert supervisor.restart_due() == ["demo"]
        second = supervisor.pid("demo")
        assert second
        assert second != first
        # a new supervisor (the agent restarted) adopts it from the pid file
        again = Supervisor(tmp_path, mode="agent")
        assert again.adopt("demo", ["sleep", "30"])
        assert again.pid("demo") == second
    finally:
        supervisor.stop("demo")
    assert not supervisor.running("demo")
    assert not (tmp_path / "run" / "demo.pid").exists()


def test_systemd_unit_per_role_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no running systemd: the units are rendered and systemctl is a shim
    that records its calls (docs/roles.md)."""
    import os
    import shutil

    from voipcloud.agent import supervise
    from voipcloud.agent.roles import BUILTIN

    unit = Supervisor(Path("/nonexistent"), mode="systemd").unit_text(
        "sip", ["/usr/sbin/kamailio", "-f", "/var/lib/x y/kamailio.cfg", "-DD"], {"A": "1 2"}
    )
    assert "ExecStart=/usr/sbin/kamailio -f '/var/lib/x y/kamailio.cfg' -DD" in unit
    assert "Restart=on-failure" in unit
    assert "Environment='A=1 2'" in unit

    # one unit per role instance, from the command each built-in handler runs
    node = NodeInfo(private_ip="10.200.9.2", public_ip="203.0.113.9")
    state = tmp_path / "state"
    ctx = SoftwareContext(state, SoftwareConfig(supervisor="systemd"), lambda: node)
    for code, handler_class in BUILTIN.items():
        handler = handler_class(ctx)
        argv, env = handler.command({}, node)
        text = ctx.supervisor.unit_text(code, argv, env)
        lines = text.splitlines()
        assert lines[:6] == [
            "[Unit]",
            f"Description=voipcloud role {code}",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=simple",
        ], code
        exec_start = next(line for line in lines if line.startswith("ExecStart="))
        program = exec_start.removeprefix("ExecStart=").split()[0]
        assert os.path.isabs(program) or shutil.which(program) is None, exec_start
        assert os.path.basename(program) == os.path.basename(argv[0]), exec_start
        assert str(state / "roles" / code) in text, code  # its own files (argv or environment)
        assert "Restart=on-failure" in lines
        assert lines[-2:] == ["[Install]", "WantedBy=multi-user.target"]
        for key, value in env.items():
            assert f"Environment={shlex_quote(f'{key}={value}')}" in lines, (code, key)

    # the lifecycle: enable + restart (daemon-reload when the unit changed), reload, disable
    calls = tmp_path / "systemctl-calls"
    shim(tmp_path / "bin", "systemctl", f'echo "$*" >> {calls}\nexit 0\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setattr(supervise, "SYSTEMD_UNIT_DIR", tmp_path / "units")
    (tmp_path / "units").mkdir()
    supervisor = Supervisor(state, mode="systemd")
    supervisor.start("sip", ["kamailio", "-f", "k.cfg", "-DD"], {})
    supervisor.start("sip", ["kamailio", "-f", "k.cfg", "-DD"], {})  # unchanged unit
    assert supervisor.running("sip")
    supervisor.reload("sip", 1)
    supervisor.stop("sip")
    assert (tmp_path / "units" / "voipcloud-sip.service").read_text() == supervisor.unit_text(
        "sip", ["kamailio", "-f", "k.cfg", "-DD"], {}
    )
    assert calls.read_text().splitlines() == [
        "daemon-reload",
        "enable voipcloud-sip.service",
        "restart voipcloud-sip.service",
        "enable voipcloud-sip.service",
        "restart voipcloud-sip.service",
        "is-active voipcloud-sip.service",
        "reload voipcloud-sip.service",
        "disable voipcloud-sip.service --now",
    ]


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def test_an_older_agent_never_sees_the_new_fields() -> None:
    desired = protocol.Desired(
        node_id=1, hostname="h", status="Online", generation=1, operation=None, roles=[]
    )
    payload = json.loads(desired.model_dump_json(exclude={"node"}))
    assert "node" not in payload
    assert payload["operation"] is None
    # an older agent's hello (no features) is still accepted
    protocol.Hello.model_validate({"type": "hello", "inventory": {}, "outcomes": []})


def test_health_book_reports_changes_and_unknown_when_not_connected() -> None:
    book = RoleHealthBook()
    assert book.update(3, {"sip": RoleHealthState("healthy")}) == [
        ("sip", None, RoleHealthState("healthy"))
    ]
    assert book.update(3, {"sip": RoleHealthState("healthy")}) == []
    changes = book.update(3, {"sip": RoleHealthState("unhealthy", "no answer")})
    assert [(c, o and o.state, n.state) for c, o, n in changes] == [("sip", "healthy", "unhealthy")]
    shown = book.for_node(3, ["sip", "que"], connected=True)
    assert shown["sip"] == RoleHealthState("unhealthy", "no answer")
    assert shown["que"].state == "unknown"
    lost = book.for_node(3, ["sip"], connected=False)["sip"]
    assert lost.state == "unknown"
    assert "not connected" in (lost.message or "")


def test_pbx_renders_rtp_and_pjsip_and_names_what_to_install_without_asterisk(
    tmp_path: Path,
) -> None:
    import shutil

    from voipcloud.agent.roles.pbx import Asterisk

    node = NodeInfo(private_ip="10.200.3.2", public_ip="198.51.100.7")
    handler = Asterisk(context(tmp_path, node))
    params = {"rtp_port_min": 12000, "rtp_port_max": 12999, "max_channels": 40}
    files = handler.render(params, node)
    assert "rtpstart=12000\nrtpend=12999" in files["rtp.conf"]
    assert "bind=10.200.3.2:5080" in files["pjsip.conf"]
    assert "external_media_address=198.51.100.7" in files["pjsip.conf"]
    assert "external_signaling_address=198.51.100.7" in files["pjsip.conf"]
    assert "maxcalls = 40" in files["asterisk.conf"]
    if shutil.which("asterisk"):
        print("asterisk is installed: its real run is not covered by this unit test")
        return
    print("\n!!! NO asterisk BINARY HERE: the pbx role's real run is SKIPPED; rendering only !!!")
    with pytest.raises(HandlerError, match="Debian 12 does not ship it: install Asterisk"):
        handler.apply("pbx", params)
    # rendered all the same, for the operator to see
    assert (tmp_path / "roles" / "pbx" / "rtp.conf").read_text() == files["rtp.conf"]


def test_web_renders_nginx_in_front_of_the_portal(tmp_path: Path) -> None:
    from voipcloud.agent.roles.web import Nginx

    node = NodeInfo(private_ip="10.200.4.2", controller_url="http://10.200.4.1:8080")
    params = {"http_port": 8081, "https_port": 8443, "public_hostname": "portal.example.com"}
    text = Nginx(context(tmp_path, node)).render(params, node)["nginx.conf"]
    assert "listen 10.200.4.2:8081;" in text
    assert "ssl" not in text  # no certificate configured: plain HTTP only
    assert "server_name portal.example.com;" in text
    assert "proxy_pass http://10.200.4.1:8080;" in text
    tls = Nginx(context(tmp_path, node, web_certificate="/c.pem", web_key="/k.pem"))
    text = tls.render(params, node)["nginx.conf"]
    assert "listen 10.200.4.2:8443 ssl;" in text
    assert "ssl_certificate /c.pem;" in text


def test_every_port_of_the_catalogue_names_a_parameter_of_its_role() -> None:
    from voipcloud.domain.roles import ROLE_PORTS, ROLES, listening

    for code, ports in ROLE_PORTS.items():
        for port in ports:
            for name in (port.parameter, port.parameter_max):
                assert name is None or ROLES[code].parameter(name) is not None, (code, name)
    assert listening("pbx", {"rtp_port_min": 10000, "rtp_port_max": 20000}) == [
        "udp 5080 (SIP (PJSIP))",
        "udp 10000–20000 (RTP media)",
    ]


def test_software_already_running_outside_voipcloud_is_not_taken_over(tmp_path: Path) -> None:
    import os
    import shutil
    import socket

    if shutil.which("kamailio") is None:
        pytest.skip("kamailio not installed (scripts/install-role-software)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        node = NodeInfo(private_ip="127.0.0.1")
        handler = Kamailio(context(tmp_path, node))
        with pytest.raises(HandlerError) as refused:
            handler.apply("sip", {"sip_domain": "a.example", "sip_port": port})
    # the port and the process holding it (this test's own), from /proc
    message = str(refused.value)
    assert f"outside voipcloud already listens on udp 127.0.0.1:{port} (" in message
    assert f", pid {os.getpid()})" in message
    assert not handler.supervisor.running("sip")


def shim(directory: Path, name: str, script: str) -> Path:
    """An executable `name` in `directory` (put first on PATH) running the shell `script`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


class Uninstalled(Kamailio):
    """A role whose program and Debian package this machine has not got."""

    binary = "voipcloud-test-sipd"
    packages = ("voipcloud-test-sip-server", "voipcloud-test-sip-tools")


def test_a_missing_package_is_installed_with_apt_get_only_when_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voipcloud.agent.roles import base

    bin_dir, calls = tmp_path / "bin", tmp_path / "apt-calls"
    policy = tmp_path / "policy-rc.d"
    monkeypatch.setattr(base, "APT_POLICY", policy)
    # records its command line, its DEBIAN_FRONTEND and whether services were held back,
    # then "installs" the program (a script in the same PATH directory); installs nothing
    shim(
        bin_dir,
        "apt-get",
        f'echo "$DEBIAN_FRONTEND|$(test -x {policy} && {policy}; echo $?)|$*" >> {calls}\n'
        f'printf "#!/bin/sh\\n" > {bin_dir}/voipcloud-test-sipd\n'
        f"chmod 755 {bin_dir}/voipcloud-test-sipd\n",
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    node = NodeInfo(private_ip="127.0.0.1")

    # not allowed (the default): no apt-get, the exact package names in the reason
    assert SoftwareConfig().install is False
    refused = Uninstalled(context(tmp_path, node)).missing()
    assert refused == (
        "Kamailio is not installed (voipcloud-test-sipd not found): install the Debian "
        "package(s) voipcloud-test-sip-server voipcloud-test-sip-tools, or allow the agent to "
        "(software.install = true)"
    )
    assert not calls.exists()

    # a role whose program is installed: no apt-get even when allowed
    if __import__("shutil").which("kamailio"):
        assert Kamailio(context(tmp_path, node, install=True)).missing() is None
        assert not calls.exists()

    # allowed: one apt-get install, non-interactive, services held back while it runs
    assert Uninstalled(context(tmp_path, node, install=True)).missing() is None
    assert calls.read_text().splitlines() == [
        "noninteractive|101|install -y --no-install-recommends "
        "voipcloud-test-sip-server voipcloud-test-sip-tools"
    ]
    assert not policy.exists()  # removed afterwards

    # apt-get failing: the lists are updated and it is tried once more; its words are shown
    (bin_dir / "voipcloud-test-sipd").unlink()
    calls.unlink()
    shim(
        bin_dir,
        "apt-get",
        f'echo "$*" >> {calls}\necho "E: Unable to locate package $4" >&2\nexit 100\n',
    )
    failed = Uninstalled(context(tmp_path, node, install=True)).missing()
    assert calls.read_text().splitlines() == [
        "install -y --no-install-recommends voipcloud-test-sip-server voipcloud-test-sip-tools",
        "update -q",
        "install -y --no-install-recommends voipcloud-test-sip-server voipcloud-test-sip-tools",
    ]
    assert failed is not None
    assert failed.startswith(
        "apt-get install -y --no-install-recommends voipcloud-test-sip-server "
        "voipcloud-test-sip-tools failed (status 100): E: Unable to locate package"
    )
    with pytest.raises(HandlerError, match=r"^sip: apt-get install .* failed"):
        Uninstalled(context(tmp_path, node, install=True)).apply("sip", {"sip_domain": "a.b"})
    assert not (tmp_path / "run" / "sip.pid").exists()  # nothing started


def test_the_distributions_own_service_running_is_not_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import shutil

    from voipcloud.agent.roles import base

    if shutil.which("kamailio") is None:
        pytest.skip("kamailio not installed (scripts/install-role-software)")
    bin_dir = tmp_path / "bin"
    # systemd (faked: this machine has none) says Debian's kamailio.service is active
    shim(
        bin_dir,
        "systemctl",
        'if [ "$2" = kamailio.service ]; then echo active; exit 0; fi\necho inactive; exit 3\n',
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(base, "systemd_running", lambda: True)
    handler = Kamailio(context(tmp_path, NodeInfo(private_ip="127.0.0.1"), supervisor="agent"))
    with pytest.raises(HandlerError) as refused:
        handler.apply("sip", {"sip_domain": "a.example", "sip_port": 5060})
    assert str(refused.value) == (
        "sip: Kamailio already runs on this node outside voipcloud (systemd unit "
        "kamailio.service is active); stop and disable it (systemctl disable --now "
        "kamailio.service): voipcloud does not take over software it did not start"
    )
    assert not handler.supervisor.running("sip")
    # the sibling: another role's distro unit inactive → not in the way
    from voipcloud.agent.roles.web import Nginx

    assert Nginx(context(tmp_path, NodeInfo(private_ip="127.0.0.1"))).outside_service() is None
