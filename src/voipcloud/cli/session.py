"""`voipcloud login`, `logout` and `profiles`: the stored logins of the operator commands."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from voipcloud.cli.client import (
    API_PREFIX,
    ApiClient,
    Cancelled,
    CliError,
    Refused,
    Unreachable,
    UsageProblem,
    selected_profile,
)
from voipcloud.cli.output import (
    OutputFormat,
    OutputOption,
    note,
    print_json,
    print_table,
    wants_json,
)
from voipcloud.cli.profiles import Profile, ProfileStore

PASSWORD_ENV = "VOIPCLOUD_PASSWORD"  # noqa: S105 - the variable's name, not a password

ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile", help="The profile (stored login) to use; overrides the global --profile."
    ),
]


def controller_url(raw: str) -> str:
    """The controller's base URL, checked: http(s)://host[:port][/prefix]."""
    url = raw.strip().rstrip("/")
    problem = UsageProblem(
        f"--controller must be a URL like http://ic.example.com:8080, not {raw!r}"
    )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        raise problem from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise problem
    if parts.query or parts.fragment:
        raise UsageProblem("--controller must not carry a query or fragment")
    return url


def _read_password(password_stdin: bool, username: str, url: str) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    elif sys.stdin.isatty():
        password = typer.prompt(f"Password for {username} at {url}", hide_input=True)
    else:
        raise UsageProblem(
            f"no terminal to ask the password: use --password-stdin or set {PASSWORD_ENV}"
        )
    if not password:
        raise UsageProblem("the password is empty")
    return password


def _pin(
    url: str, ca_fingerprint: str | None, ca_file: Path | None, known: Profile | None
) -> tuple[Any, str | None, str | None]:
    """How to verify the controller: (httpx verify, CA PEM to keep, its fingerprint(s)).

    http:// pins nothing. https:// with --ca-fingerprint / --ca-file pins anew; else the CA
    this profile pinned before; else a certificate the system's CAs verify; else, on a
    terminal, the fingerprint is shown to confirm (like SSH's host key prompt)."""
    import ssl

    from voipcloud.agent import trust

    try:
        if ca_fingerprint or ca_file:
            pinned = trust.establish(
                url, fingerprint=ca_fingerprint, ca_file=ca_file, state_dir=None
            )
        elif not url.startswith("https://"):
            return True, None, None
        elif known is not None and known.ca_pem and known.controller == url:
            pinned = trust.ControllerTrust(
                trust.Endpoint.of(url), known.ca_pem, source="pinned in this profile"
            )
            pinned.check()
        else:
            endpoint = trust.Endpoint.of(url)
            try:
                trust.verified_handshake(endpoint, ssl.create_default_context())
                return True, None, None  # e.g. an ACME certificate: the system's CAs vouch
            except ssl.SSLCertVerificationError:
                pass
            pinned = _confirm_first_contact(endpoint)
    except trust.Untrusted as exc:
        raise Unreachable(str(exc)) from None
    except OSError as exc:
        raise Unreachable(f"cannot reach the controller at {url}: {exc}") from None
    if pinned is None:
        return True, None, None
    return pinned.context(), pinned.anchors_pem, ",".join(pinned.fingerprints())


def _confirm_first_contact(endpoint: Any) -> Any:
    from voipcloud.agent import trust

    chain = trust.presented_chain(endpoint)
    if not chain:
        raise trust.Untrusted(f"{endpoint.url} presented no certificate")
    top = trust.describe_chain(chain)
    fingerprint = top.split(" ", 1)[0]
    if not sys.stdin.isatty():
        raise trust.Untrusted(
            f"the controller at {endpoint.url} presents a certificate from a CA this machine "
            f"does not know ({top}); if that is the controller's CA (`voipcloud serve` printed "
            f"it; `voipcloud tls show` on its host), give --ca-fingerprint {fingerprint}"
        )
    typer.echo(
        f"The controller at {endpoint.url} presents a certificate chain ending at\n"
        f"  {top}\n"
        "This CA is not known yet. Compare the fingerprint with the one `voipcloud serve`\n"
        "printed (or `voipcloud tls show` on the controller host).",
        err=True,
    )
    if not typer.confirm("Trust this CA for this controller from now on?", default=False):
        raise Cancelled("the controller's CA was not trusted; nothing was sent to it")
    return trust.first_contact(endpoint, fingerprint, trust.Pins(None))


def login(
    ctx: typer.Context,
    controller: Annotated[
        str | None,
        typer.Option(
            envvar="VOIPCLOUD_CONTROLLER",
            help="The controller's URL, e.g. http://ic:8080 (default: the profile's).",
        ),
    ] = None,
    username: Annotated[str, typer.Option(help="The account's username.")] = "admin",
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
    ] = False,
    profile: ProfileOption = None,
    ca_fingerprint: Annotated[
        str | None,
        typer.Option(help="sha256:HEX of the controller's CA (https): pinned in the profile."),
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="Trust the controller's CA from this PEM file (https).")
    ] = None,
) -> None:
    """Log in to a controller and store the token (0600) under a profile name.

    The password is asked for on the terminal; scripts use --password-stdin or the
    VOIPCLOUD_PASSWORD environment variable. Over https:// the controller must chain to the
    CA given with --ca-fingerprint or --ca-file (kept in the profile); a first login without
    either shows the CA's fingerprint to confirm.
    """
    name = profile or selected_profile(ctx)
    store = ProfileStore.default()
    known = store.get(name)
    if controller is None:
        if known is None:
            raise UsageProblem(f"profile {name!r} has no controller yet: give --controller URL")
        controller = known.controller
    url = controller_url(controller)
    verify, ca_pem, pinned = _pin(url, ca_fingerprint, ca_file, known)
    password = _read_password(password_stdin, username, url)
    with ApiClient(url, verify=verify) as client:
        try:
            answer = client.post("/auth/token", json={"username": username, "password": password})
        except CliError as exc:
            if exc.exit_code == 4:
                exc.message = f"login refused: wrong username or password for {username} at {url}"
            elif isinstance(exc, Refused) and exc.status_code in (404, 405):
                exc.message = (
                    f"{url} has no voipcloud API at {url}{API_PREFIX}/auth/token: give the "
                    "controller's base URL, e.g. http://ic.example.com:8080"
                )
            raise
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise CliError(f"{url} did not answer with a token: is it a voipcloud controller?")
    expires_in = answer.get("expires_in")
    expires_at = time.time() + expires_in if isinstance(expires_in, int | float) else None
    store.save(
        Profile(
            name=name,
            controller=url,
            username=username,
            token=token,
            expires_at=expires_at,
            ca_pem=ca_pem,
            ca_fingerprint=pinned,
        )
    )
    lifetime = f"; the token expires in {_duration(expires_in)}" if expires_at else ""
    trusted = f"; the controller's CA {pinned} is pinned" if pinned else ""
    note(f"Logged in to {url} as {username} (profile {name}){lifetime}{trusted}.")


def logout(
    ctx: typer.Context,
    profile: ProfileOption = None,
    everywhere: Annotated[
        bool,
        typer.Option(
            "--everywhere",
            help="End every session and API token of the account, not only this login.",
        ),
    ] = False,
) -> None:
    """Revoke the profile's token on the controller and forget the stored login."""
    name = profile or selected_profile(ctx)
    store = ProfileStore.default()
    known = store.get(name)
    if known is None:
        note(f"Profile {name} has no stored login; nothing to do.")
        return
    try:
        with ApiClient(known.controller, token=known.token, verify=known.verify()) as client:
            if everywhere:
                ended = client.post("/auth/logout-all")["ended"]
                note(f"Ended {ended} sessions and API tokens of {known.username}.")
            else:
                client.delete("/auth/token")
    except CliError as exc:
        if everywhere:
            raise
        if exc.exit_code not in (3, 4):  # unreachable or already expired: forget it anyway
            raise
        note(f"The token could not be revoked on the controller ({exc.message}).")
    store.remove(name)
    note(f"Logged out of {known.controller} (profile {name}).")


def profiles(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """List the stored logins (never their tokens)."""
    found = [p.public() for p in ProfileStore.default().all()]
    if wants_json(output):
        print_json(found)
        return
    current = selected_profile(ctx)
    print_table(
        ["Profile", "Controller", "Username", "Expires"],
        (
            [
                f"{p['name']} *" if p["name"] == current else p["name"],
                p["controller"],
                p["username"],
                _expiry(p["expires_at"]),
            ]
            for p in found
        ),
        caption="* the profile used when none is chosen" if found else "no stored logins",
    )


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{max(seconds, 0) / 60:.0f} min"


def _expiry(expires_at: float | None) -> str:
    if expires_at is None:
        return "-"
    left = expires_at - time.time()
    return "expired" if left <= 0 else f"in {_duration(left)}"


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.command()(logout)
    app.command()(profiles)
