"""`voipcloud infra ...`: the real executable against a real `voipcloud serve` with its IC agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.cli_support import Cli, one_line_error
from tests.support.processes import Controller
from voipcloud.domain.roles import SINGLE_NODE_ROLES

pytestmark = pytest.mark.e2e


def test_infra_show_set_and_wizard_from_the_command_line(tmp_path: Path) -> None:
    controller = Controller(data_dir=tmp_path / "controller", ic_agent=True).start()
    try:
        cli = Cli(config_dir=tmp_path / "operator")
        cli.login(controller)

        shown = cli.json("infra", "show")
        assert shown["system_domain"] == "voipcloud.local"
        assert shown["sql_password"] == "********"
        assert "voipcloud.local" in cli.ok("infra", "show").stdout

        # field-by-field refusal, exit 1, one line naming the fields
        error = one_line_error(
            cli.fails(1, "infra", "set", "timezone=Nowhere", "private_network=10.0.0.0/40")
        )
        assert "timezone" in error
        assert "private_network" in error
        assert cli.fails(2, "infra", "set", "no-equals-sign")

        # a misspelt name is a usage error naming the known ones, before anything is sent
        unknown = one_line_error(cli.fails(2, "infra", "set", "sytem_domain=voip.example.com"))
        assert "unknown property sytem_domain" in unknown
        assert "system_domain" in unknown.split("known:")[1]
        # an empty password would be kept silently by the API (write-only): refused here
        assert "sql_password is empty" in one_line_error(
            cli.fails(2, "infra", "set", "sql_password=")
        )
        assert "no value on stdin" in one_line_error(
            cli.fails(2, "infra", "set", "sql_password=-", stdin="")
        )
        # digits of other scripts are not a port number
        assert "rtp_port_min: must be an integer" in one_line_error(
            cli.fails(1, "infra", "set", "rtp_port_min=\u0663\u0660\u0660\u0660\u0660")
        )
        assert cli.json("infra", "show")["rtp_port_min"] == 10000
        completed = cli.run(
            env={
                "_VOIPCLOUD_COMPLETE": "complete_bash",
                "COMP_WORDS": "voipcloud infra set sy",
                "COMP_CWORD": "3",
            }
        )
        assert completed.stdout.split() == ["system_domain="], completed

        dry = cli.json("infra", "set", "ntp_servers=pool.ntp.org,10.0.0.1", "--dry-run")
        assert dry["applied"] is False
        assert dry["changed"] == ["ntp_servers"]
        assert cli.json("infra", "show")["ntp_servers"] == []
        saved = cli.json("infra", "set", "sql_password=-", stdin="a-long-sql-secret\n")
        assert saved["changed"] == ["sql_password"]
        assert "a-long-sql-secret" not in str(saved)

        # without --yes and without a terminal the wizard asks for confirmation: exit 2
        cli.fails(
            2, "infra", "wizard", "--domain", "voip.example.com", "--public-ip", "203.0.113.10"
        )
        done = cli.ok(
            "infra",
            "wizard",
            "--domain",
            "voip.example.com",
            "--public-ip",
            "203.0.113.10",
            "--yes",
            "--wait",
            "--timeout",
            "60",
        )
        assert "Online" in done.stdout, done.stdout
        ic = next(n for n in cli.json("node", "list")["items"] if n["is_controller"])
        assert ic["status"] == "Online"
        assert sorted(ic["roles"]) == sorted(["ic", *SINGLE_NODE_ROLES])

        # Online now: the wizard is refused with the rule, exit 1
        refused = one_line_error(
            cli.fails(
                1,
                "infra",
                "wizard",
                "--domain",
                "x.example.com",
                "--public-ip",
                "203.0.113.10",
                "--yes",
            )
        )
        assert "wizard-status" in refused

        changed = cli.ok("infra", "set", "system_domain=sip.example.net")
        assert "Marked Damaged" in changed.stdout
        assert "system domain changed" in changed.stdout
    finally:
        controller.stop()
