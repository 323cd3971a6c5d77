"""One-line enrolment, for real (issue 16): a real `voipcloud serve`; the install line shown
with the session key run by `sh` against it — install.sh downloads the controller's own wheel
with curl into a fresh venv and runs `voipcloud agent install` (temporary unit and state
dirs); then the agent started exactly as the unit's ExecStart= says, from the installed copy,
joins and goes Online. Over plain HTTP (loopback) and over HTTPS with the controller's own CA,
where the line checks the CA's fingerprint first (and a wrong one installs nothing).

Offline: the fresh venv sees the test environment's site-packages through a .pth file (the
dependencies, and pip), and pip runs with PIP_NO_INDEX / PIP_NO_DEPS, so only the wheel the
controller served is installed. systemd is not needed: without it the installer prints how to
start the agent, which is what this test does. Every program the line runs is traced
(strace, execve): the session key is in none of their command lines.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import site
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Controller, lifecycle_only, node, wait_for, wait_status
from tests.support.tls_netns import HttpsController
from voipcloud import __version__

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="systemd runs here"),
]
KEY_PATH = "/etc/voipcloud/session-key"


@pytest.fixture(params=["http", "https"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Controller]:
    if request.param == "http":
        started = Controller(data_dir=tmp_path / "controller").start()
    else:
        started = HttpsController(
            data_dir=tmp_path / "controller", env={"VOIPCLOUD_TLS": "on"}
        ).start()
    yield started
    started.stop()


def fresh_venv(path: Path) -> Path:
    """A venv without pip of its own; the test environment's packages visible after its own."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(own, "test-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def exec_start(unit: str) -> list[str]:
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    words = shlex.split(line.removeprefix("ExecStart="))
    return [w.replace("%%", "%").replace("$$", "$") for w in words]


def enrolled_node(admin: httpx.Client) -> tuple[int, str, str]:
    created = admin.post(
        "/api/v1/nodes",
        json={"hostname": "enrol-e2e", "private_ip": "10.1.0.31", "public_ip": "203.0.113.31"},
    )
    node_id = created.json()["node_id"]
    assigned = admin.post(f"/api/v1/nodes/{node_id}/roles", json={"role": "sip"})
    assert assigned.status_code == 201, assigned.text
    body = assigned.json()
    return node_id, body["session_key"], body["enrolment"]["install_command"]


def run_line(line: str, tmp_path: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """`sh -c line` under strace; (exit code, output, every execve's argv as traced)."""
    trace = tmp_path / "execve.trace"
    done = subprocess.run(
        [
            *("strace", "-f", "-qq", "-e", "trace=execve", "-s", "65536", "-o", str(trace)),
            *("sh", "-c", line),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr, trace.read_text()


def agent_env() -> dict[str, str]:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_NO_DEPS": "1"}
    env.pop("VOIPCLOUD_SESSION_KEY", None)
    env.pop("PYTHONPATH", None)  # the node's venv imports its own installed copy
    return env


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_the_install_line_installs_the_served_wheel_and_its_unit_runs_an_agent_that_goes_online(
    served: Controller, tmp_path: Path
) -> None:
    admin = served.admin()
    node_id, key, line = enrolled_node(admin)
    https = served.url.startswith("https://")
    if https:
        pin = served.fingerprint()  # type: ignore[attr-defined]
        assert f"--ca-fingerprint {pin}" in line
        assert f'echo "{pin.removeprefix("sha256:")} *ca.der" | sha256sum -c' in line
        assert f"curl -fsS --cacert ca.pem {served.url}/agent/install.sh | sh -s --" in line
    else:
        assert line == (
            f"curl -fsS {served.url}/agent/install.sh | sh -s -- --controller {served.url} "
            f"--session-key-file {KEY_PATH}"
        )
    assert key not in line

    key_file = tmp_path / "given-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    venv, state_dir, unit_dir = tmp_path / "opt-agent", tmp_path / "state", tmp_path / "units"
    python = fresh_venv(venv)
    env = agent_env()
    # the line as shown, with this test's key file, venv, state and unit dirs
    mine = line.replace(KEY_PATH, shlex.quote(str(key_file)))
    extra = f" --venv {venv} --state-dir {state_dir} --unit-dir {unit_dir}"
    mine = mine[:-2] + extra + " )" if https else mine + extra
    code, output, traced = run_line(mine, tmp_path, env)
    assert code == 0, output
    assert "systemd is not running here" in output, output
    assert key not in output
    # every program it ran, none with the key on its command line
    programs = re.findall(r'execve\("([^"]+)", \[(.*)\], ', traced)
    assert any(p.endswith("/curl") and "/agent/package" in a for p, a in programs), programs
    assert any('-m", "pip", "install' in a for _, a in programs), programs
    assert any(a.startswith(f'"{venv}/bin/voipcloud", "agent", "install"') for _, a in programs)
    if https:
        assert any(p.endswith("/sha256sum") for p, _ in programs), programs
    assert key not in traced

    # the installed copy is the controller's wheel, in the fresh venv
    where = subprocess.run(
        [str(python), "-c", "import voipcloud; print(voipcloud.__file__, voipcloud.__version__)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(venv)), where
    assert where[1] == __version__

    # the key: in the state dir, 0600, never in the unit
    kept = state_dir / "session-key"
    assert kept.read_text().strip() == key
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    unit = (unit_dir / "voipcloud-agent.service").read_text()
    assert key not in unit
    assert "Restart=always" in unit
    assert "WantedBy=multi-user.target" in unit
    argv = exec_start(unit)
    pinned = ["--ca-fingerprint", served.fingerprint()] if https else []  # type: ignore[attr-defined]
    assert argv == [
        str(venv / "bin" / "voipcloud"),
        "agent",
        "--controller",
        served.url,
        *pinned,
        "--session-key-file",
        str(kept),
        "--state-dir",
        str(state_dir),
    ]
    if https:  # pinned at install: the CA is kept in the state dir already
        assert (state_dir / "controller-ca.pem").exists()

    # run it as the unit would (role software off: a lifecycle test), from the installed copy
    (state_dir / "agent.toml").write_text(lifecycle_only(""))
    with (tmp_path / "agent.log").open("ab") as log:
        agent = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        joined = wait_for(
            lambda: (n := node(admin, node_id))["connectivity"] == "connected" and n,
            timeout=30,
            what="the installed agent to connect",
        )
        assert joined["version"] == __version__
        assert joined["agent_outdated"] is False
        assert key not in Path(f"/proc/{agent.pid}/cmdline").read_text()
        assert admin.post(f"/api/v1/nodes/{node_id}/actions/activate").status_code == 200
        online = wait_status(admin, node_id, "Online", timeout=30)
        assert online["status_reason"] is None
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(timeout=10)


def test_a_wrong_fingerprint_in_the_line_downloads_nothing_else(tmp_path: Path) -> None:
    served = HttpsController(data_dir=tmp_path / "controller", env={"VOIPCLOUD_TLS": "on"})
    served.start()
    try:
        admin = served.admin()
        _node_id, key, line = enrolled_node(admin)
        right = served.fingerprint().removeprefix("sha256:")
        wrong = ("0" if right[0] != "0" else "1") + right[1:]
        key_file = tmp_path / "given-key"
        key_file.write_text(key + "\n")
        venv, state_dir = tmp_path / "opt-agent", tmp_path / "state"
        mine = line.replace(right, wrong).replace(KEY_PATH, str(key_file))
        mine = mine[:-2] + f" --venv {venv} --state-dir {state_dir} --unit-dir {tmp_path} )"
        done = subprocess.run(
            ["sh", "-c", mine], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode != 0
        assert "FAILED" in done.stdout + done.stderr
        assert not venv.exists()
        assert not state_dir.exists()
        assert not list(tmp_path.glob("*.service"))
        # the sibling: the right line gets at least the script (what the wrong one never got)
        fetched = subprocess.run(
            ["sh", "-c", line.split(" | sh -s --")[0] + " -o /dev/null -w '%{http_code}' )"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert fetched.stdout.endswith("200"), fetched.stdout + fetched.stderr
    finally:
        served.stop()


def test_the_cli_shows_the_install_line_and_flags_an_outdated_agent(tmp_path: Path) -> None:
    from tests.e2e.cli_support import Cli

    served = Controller(data_dir=tmp_path / "controller").start()
    try:
        cli = Cli(tmp_path / "cli")
        cli.login(served)
        cli.ok("node", "add", "old-node", "--private-ip", "10.1.0.41")
        cli.ok("node", "add", "new-node", "--private-ip", "10.1.0.42")
        keys = {}
        for name in ("old-node", "new-node"):
            done = cli.ok("role", "assign", name, "que")
            key = done.stdout.strip().splitlines()[0]
            keys[name] = key
            line = f"curl -fsS {served.url}/agent/install.sh | sh -s -- --controller {served.url}"
            assert line in done.stdout
            assert done.stdout.count(key) == 1  # the key itself, once; never in a command
        for name, version in (("old-node", "0.0.1"), ("new-node", __version__)):
            joined = httpx.post(
                f"{served.url}/api/v1/agent/join",
                json={"session_key": keys[name], "inventory": {"version": version}},
                timeout=30,
            )
            assert joined.status_code == 200, joined.text
        listing = cli.ok("node", "list").stdout
        old_row = next(x for x in listing.splitlines() if "old-node" in x)
        new_row = next(x for x in listing.splitlines() if "new-node" in x)
        assert "OUTDATED" in old_row
        assert "OUTDATED" not in new_row
        assert "version 0.0.1 OUTDATED" in cli.ok("node", "info", "old-node").stdout
    finally:
        served.stop()
