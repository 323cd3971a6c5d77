"""`voipcloud agent`: run a node's agent; `voipcloud agent install`: make it a service.

`voipcloud agent --controller URL ...` (no subcommand) runs the agent in the foreground, as
always (API.md); `install` keeps the session key in the state dir and writes the systemd unit
that runs exactly that command (voipcloud.agent.install).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from voipcloud.cli.client import UsageProblem

app = typer.Typer(
    invoke_without_command=True,
    help="Run a node's agent (no subcommand), or install it as a systemd service.",
)

ControllerOption = Annotated[
    str | None, typer.Option(help="The controller's URL, e.g. https://ic:8080.")
]
FingerprintOption = Annotated[
    str | None,
    typer.Option(
        help="sha256:HEX of the controller's CA: trusted at first contact, then kept in the "
        "state dir."
    ),
]


@app.callback()
def agent(
    ctx: typer.Context,
    controller: ControllerOption = None,
    session_key: Annotated[
        str | None,
        typer.Option(
            envvar="VOIPCLOUD_SESSION_KEY",
            help="The node's session key (prefer --session-key-file: a command line is "
            "visible to every user of the machine).",
        ),
    ] = None,
    session_key_file: Annotated[
        str | None,
        typer.Option(help="Read the session key from this file ('-': standard input)."),
    ] = None,
    ca_fingerprint: FingerprintOption = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="Trust the controller's CA from this PEM file instead.")
    ] = None,
    state_dir: Annotated[Path, typer.Option(help="Where the agent keeps its state.")] = Path(
        "./voipcloud-agent"
    ),
    config: Annotated[
        Path | None,
        typer.Option(help="Agent configuration (TOML); default: STATE_DIR/agent.toml."),
    ] = None,
    inventory_interval: Annotated[
        float, typer.Option(help="Seconds between inventory checks.")
    ] = 60.0,
) -> None:
    """Run a node's agent: join with the session key, then carry out the node's roles."""
    if ctx.invoked_subcommand is not None:
        return
    from voipcloud.agent.trust import Untrusted, read_session_key
    from voipcloud.cli import agent as agent_command

    if controller is None:
        raise UsageProblem("--controller URL is needed to run the agent")
    if session_key_file is not None:
        if session_key is not None:
            raise UsageProblem("give the session key once: --session-key-file or --session-key")
        try:
            session_key = read_session_key(session_key_file)
        except (OSError, Untrusted) as exc:
            raise UsageProblem(f"--session-key-file {session_key_file}: {exc}") from None
    if not session_key:
        raise UsageProblem("no session key: give --session-key-file FILE (or - for standard input)")
    code = agent_command.run(
        controller=controller,
        session_key=session_key,
        state_dir=state_dir,
        config_file=config,
        inventory_interval=inventory_interval,
        ca_fingerprint=ca_fingerprint,
        ca_file=ca_file,
    )
    raise typer.Exit(code)


@app.command("install")
def install(
    controller: Annotated[str, typer.Option(help="The controller's URL, e.g. https://ic:8443.")],
    ca_fingerprint: FingerprintOption = None,
    session_key_file: Annotated[
        Path | None, typer.Option(help="Read the session key from this file.")
    ] = None,
    session_key_stdin: Annotated[
        bool, typer.Option("--session-key-stdin", help="Read the session key from standard input.")
    ] = False,
    state_dir: Annotated[
        Path, typer.Option(help="The agent's state dir; the key is kept there (0600).")
    ] = Path("/var/lib/voipcloud-agent"),
    unit_dir: Annotated[Path, typer.Option(help="Where the systemd unit is written.")] = Path(
        "/etc/systemd/system"
    ),
    no_start: Annotated[
        bool, typer.Option("--no-start", help="Write the unit; do not enable or start it.")
    ] = False,
) -> None:
    """Keep the session key, write the voipcloud-agent systemd unit and start it."""
    from voipcloud.agent import install as installing

    if (session_key_file is None) == (not session_key_stdin):
        raise UsageProblem(
            "give the session key one way: --session-key-file FILE or --session-key-stdin"
        )
    try:
        if session_key_stdin:
            key = sys.stdin.readline()
        else:
            assert session_key_file is not None
            with session_key_file.expanduser().open(encoding="utf-8") as stream:
                key = stream.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageProblem(f"--session-key-file {session_key_file}: {exc}") from None
    plan = installing.Plan(
        controller=controller.rstrip("/"),
        ca_fingerprint=ca_fingerprint,
        state_dir=state_dir.expanduser().absolute(),
        unit_dir=unit_dir.expanduser().absolute(),
        executable=installing.this_executable(),
    )
    try:
        told = installing.install(plan, key, start_now=not no_start)
    except installing.InstallProblem as exc:
        raise UsageProblem(str(exc)) from None
    for line in told:
        typer.echo(line)
