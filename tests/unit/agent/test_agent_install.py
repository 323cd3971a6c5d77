"""`voipcloud agent install` and the served installer, without a controller (issue 16)."""

from __future__ import annotations

import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from voipcloud.agent import install
from voipcloud.agent.trust import install_command
from voipcloud.api import agent_package
from voipcloud.domain.agent_versions import is_outdated
from voipcloud.domain.statuses import NodeStatus

KEY = "k3y-Of-the-NODE-0123456789abcdef"
PIN = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("agent", "controller", "outdated"),
    [
        ("0.1.0", "0.2.0", True),
        ("0.2.0rc1", "0.2.0", True),
        ("0.2.0", "0.2.0", False),
        ("0.3.0", "0.2.0", False),  # newer than the controller: not flagged
        (None, "0.2.0", False),  # never reported
        ("", "0.2.0", False),
        ("custom-build", "0.2.0", False),  # not PEP 440: nothing honest to say
        ("0.1.0", "not a version", False),
    ],
)
def test_outdated_is_older_than_the_controller_by_pep_440(
    agent: str | None, controller: str, outdated: bool
) -> None:
    assert is_outdated(agent, controller) is outdated


def test_a_deleted_node_is_never_flagged() -> None:
    assert is_outdated("0.1.0", "0.2.0", status=NodeStatus.ONLINE)
    assert not is_outdated("0.1.0", "0.2.0", status=NodeStatus.DELETED)


def plan(tmp_path: Path, *, fingerprint: str | None = None, controller: str = "") -> install.Plan:
    return install.Plan(
        controller=controller or "http://127.0.0.1:9",
        ca_fingerprint=fingerprint,
        state_dir=tmp_path / "state",
        unit_dir=tmp_path / "units",
        executable=Path("/opt/voipcloud-agent/bin/voipcloud"),
    )


def test_install_keeps_the_key_0600_and_the_unit_names_only_its_file(tmp_path: Path) -> None:
    told = install.install(plan(tmp_path), KEY + "\n", start_now=False)
    kept = tmp_path / "state" / "session-key"
    assert kept.read_text() == KEY + "\n"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    unit = (tmp_path / "units" / "voipcloud-agent.service").read_text()
    assert KEY not in unit
    assert (
        "ExecStart=/opt/voipcloud-agent/bin/voipcloud agent --controller http://127.0.0.1:9 "
        f"--session-key-file {kept} --state-dir {tmp_path / 'state'}\n"
    ) in unit
    assert "Restart=always\n" in unit
    for line in install.HARDENING:
        assert line + "\n" in unit
    for restriction in ("ProtectSystem", "NoNewPrivileges", "RestrictSUIDSGID", "PrivateTmp"):
        assert f"\n{restriction}=" not in unit  # role software needs these (apt, /etc, units)
    assert any("systemctl daemon-reload && systemctl enable --now" in t for t in told)
    assert KEY not in " ".join(told)


def test_reinstalling_replaces_the_key(tmp_path: Path) -> None:
    install.install(plan(tmp_path), KEY, start_now=False)
    install.install(plan(tmp_path), "another-key", start_now=False)
    assert (tmp_path / "state" / "session-key").read_text() == "another-key\n"


@pytest.mark.parametrize("key", ["", "  \n", "two words", "a" * 600, "tab\there"])
def test_what_is_not_a_key_is_refused_and_nothing_written(tmp_path: Path, key: str) -> None:
    with pytest.raises(install.InstallProblem):
        install.install(plan(tmp_path), key, start_now=False)
    assert not (tmp_path / "units").exists()
    assert not (tmp_path / "state" / "session-key").exists()


def test_a_bad_fingerprint_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(install.InstallProblem, match="fingerprint"):
        install.install(
            plan(tmp_path, fingerprint="sha256:nothex", controller="https://127.0.0.1:9"),
            KEY,
            start_now=False,
        )
    assert not (tmp_path / "state").exists()


def test_unit_words_are_escaped_for_systemd(tmp_path: Path) -> None:
    odd = install.Plan(
        controller="http://127.0.0.1:9",
        ca_fingerprint=None,
        state_dir=Path("/var/lib/agent 100%/$HOME"),
        unit_dir=tmp_path,
        executable=Path("/opt/a/bin/voipcloud"),
    )
    line = next(x for x in install.unit_text(odd).splitlines() if x.startswith("ExecStart="))
    assert line.endswith('--state-dir "/var/lib/agent 100%%/$$HOME"')


def test_the_install_line_never_carries_a_key_and_pins_the_ca_first() -> None:
    plain = install_command("http://127.0.0.1:8080/", None)
    assert plain == (
        "curl -fsS http://127.0.0.1:8080/agent/install.sh | sh -s -- "
        "--controller http://127.0.0.1:8080 --session-key-file /etc/voipcloud/session-key"
    )
    pinned = install_command("https://ic.example:8443", PIN.upper().replace("SHA256", "sha256"))
    hex_digest = PIN.removeprefix("sha256:")
    checked = pinned.index(f'echo "{hex_digest} *ca.der" | sha256sum -c')
    assert pinned.index("curl -fsSko ca.der https://ic.example:8443/agent/ca.der") < checked
    assert checked < pinned.index("curl -fsS --cacert ca.pem https://ic.example:8443/agent/")
    assert pinned.count("curl -fsSk") == 1  # only the CA itself is fetched unverified
    assert f"--ca-fingerprint {PIN}" in pinned


def test_the_assembled_wheel_holds_the_package_and_its_metadata(tmp_path: Path) -> None:
    built = agent_package.assemble(tmp_path)
    assert built.name.startswith("voipcloud-")
    assert built.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(built) as wheel:
        names = set(wheel.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        record = wheel.read(f"{info}/RECORD").decode()
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert "voipcloud/cli/main.py" in names
    assert "voipcloud/agent/install.py" in names
    assert any(n.startswith("voipcloud/web/templates/") for n in names)
    assert any(n.startswith("voipcloud/store/migrations/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert "voipcloud = voipcloud.cli.main:app" in entry_points
    assert len(record.splitlines()) == len(names)
    again = agent_package.assemble(tmp_path / "again")
    assert again.read_bytes() == built.read_bytes()  # reproducible: same files, same bytes


def run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "install.sh"
    script.write_text(agent_package.install_script("0.1.0"))
    return subprocess.run(
        ["sh", str(script), *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize("flag", ["--session-key", f"--session-key={KEY}"])
def test_the_script_refuses_a_key_on_its_command_line(tmp_path: Path, flag: str) -> None:
    done = run_script(tmp_path, "--controller", "http://127.0.0.1:9", flag, KEY)
    assert done.returncode == 1
    assert "never goes on a command line" in done.stderr
    assert KEY not in done.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--session-key-file", "/nonexistent"], "--controller URL is needed"),
        (["--controller", "http://127.0.0.1:9"], "--session-key-file FILE is needed"),
        (["--controller", "http://x", "--session-key-file", "/nonexistent"], "cannot read"),
        (["--controller"], "--controller needs a value"),
        (["--what"], "unknown argument"),
    ],
)
def test_the_script_says_what_is_missing(tmp_path: Path, args: list[str], said: str) -> None:
    done = run_script(tmp_path, *args)
    assert done.returncode == 1
    assert said in done.stderr
