"""The operator CLI's client of the REST API, and the CLI's one error tree.

Every operator command talks to the controller over HTTP through `ApiClient`, so the same
commands work against a remote controller. Errors of httpx and error bodies of the API are
translated here, where they enter, into `CliError`s that carry the process exit code::

    CliError                exit code and a one-line message for stderr
    ├── Refused             1  the API refused (404, 409 naming the rule, 422 naming fields)
    ├── ServerFailed        1  the controller answered 5xx or something that is not its API
    ├── Cancelled           1  the operator answered "no" to a confirmation
    ├── UsageProblem        2  bad arguments the CLI finds itself (Typer's own also exit 2)
    ├── Unreachable         3  cannot reach the controller (refused, timeout, DNS, TLS)
    ├── NotLoggedIn         4  401 from the API, or no stored login for the profile
    ├── OperationFailed     5  `--wait` saw the node settle in failure (ActivateFailed, Damaged)
    ├── WaitTimedOut        6  `--wait` gave up before the node settled
    ├── Unavailable         7  the controller or its database is unavailable (503; also 502,
    │                          504 from a proxy in front of it): nothing changed, try later
    └── Interrupted       130  Ctrl-C while `--wait` followed a node (the operation goes on)

`voipcloud.cli.main.app` catches `CliError` around every command (of every group) and prints
``error: <message>`` on stderr, then exits with the code: no traceback, no Rich panel.

How a command group uses it (e.g. `cli/infra.py`)::

    import typer

    from voipcloud.cli.client import UsageProblem, client_from_context
    from voipcloud.cli.output import (
        OutputFormat, OutputOption, print_json, print_record, print_table, wants_json,
    )

    app = typer.Typer(no_args_is_help=True, help="...")

    @app.command("show")
    def show(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
        # the docstring becomes the command's help
        client = client_from_context(ctx)      # the stored login of the chosen profile
        data = client.get("/infrastructure/properties")   # parsed JSON; path under /api/v1
        if wants_json(output):
            print_json(data)                   # indented JSON on stdout, for scripts
        else:
            print_record("Infrastructure Properties", data)   # a two-column Rich table

    print_table(["Name", "Value"], rows, title="...")   # rows: lists of str/None/Rich Text
    client.put("/infrastructure/properties", json={...})   # also post/patch/delete
    raise UsageProblem("--bucket is needed with --backend s3")   # exit 2, one line

Any 4xx/5xx answer raises before the call returns, so a command only handles success. Keep
command modules cheap to import: `voipcloud --help` must not import FastAPI or SQLAlchemy
(import heavy things inside the command function). httpx is imported lazily here too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import httpx

    from voipcloud.cli.profiles import Profile

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = 15.0
TIMEOUT_ENV = "VOIPCLOUD_HTTP_TIMEOUT"
UNAVAILABLE_STATUSES = (502, 503, 504)


class CliError(Exception):
    """A failure to report on one line; `exit_code` is the process's exit status."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever the API sent


class Refused(CliError):
    """The controller refused the operation; nothing changed."""

    exit_code = 1

    def __init__(self, message: str, *, status_code: int, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class ServerFailed(CliError):
    exit_code = 1


class Cancelled(CliError):
    exit_code = 1


class UsageProblem(CliError):
    exit_code = 2


class Unreachable(CliError):
    exit_code = 3


class NotLoggedIn(CliError):
    exit_code = 4


class OperationFailed(CliError):
    exit_code = 5


class WaitTimedOut(CliError):
    exit_code = 6


class Unavailable(CliError):
    """503: the controller runs but its database does not answer (or a proxy in front of the
    controller answered 502/504); nothing was changed, the same command may work later."""

    exit_code = 7


class Interrupted(CliError):
    exit_code = 130  # the shell's code for Ctrl-C


def _field_errors(detail: Any) -> str:
    """FastAPI/voipcloud 422 bodies: a list of {loc, msg}; name each field at fault."""
    if not isinstance(detail, list):
        return str(detail)
    parts = []
    for entry in detail:
        if not isinstance(entry, dict):
            parts.append(str(entry))
            continue
        loc = [str(p) for p in entry.get("loc", []) if p not in ("body", "query", "path")]
        field = ".".join(loc)
        msg = str(entry.get("msg", "invalid"))
        parts.append(f"{field}: {msg}" if field else msg)
    return "; ".join(parts)


def refusal_from(
    status_code: int, body: Any, fallback: str, *, retry_after: str | None = None
) -> CliError:
    """The CliError for an API error answer (status >= 400)."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if status_code in UNAVAILABLE_STATUSES:
        if isinstance(detail, str):  # the controller's own sentence says when to try again
            return Unavailable(f"the controller is unavailable: {detail}")
        later = f"; try again in {retry_after} s" if retry_after else "; try again later"
        return Unavailable(f"the controller is unavailable: {status_code} {fallback}{later}")
    if status_code == 401:
        return NotLoggedIn(
            "not authenticated: the stored login is missing, expired or revoked; "
            "run `voipcloud login` again"
        )
    if status_code >= 500 or detail is None:
        return ServerFailed(f"the controller answered {status_code}: {detail or fallback}")
    if status_code == 422:
        message = f"invalid input: {_field_errors(detail)}"
    elif status_code in (403, 409) and isinstance(body, dict) and body.get("rule"):
        message = f"refused ({body['rule']}): {detail}"
    elif status_code == 404:
        message = f"not found: {detail}"
    else:
        message = f"refused: {detail}"
    return Refused(message, status_code=status_code, body=body)


def timeout_from_environment() -> float:
    """VOIPCLOUD_HTTP_TIMEOUT in seconds (default 15); UsageProblem if it is not one."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 86400:  # also false for nan
        raise UsageProblem(f"{TIMEOUT_ENV} must be a number of seconds above 0, not {raw!r}")
    return seconds


class ApiClient:
    """JSON over HTTP to one controller; `path`s are relative to /api/v1."""

    def __init__(
        self,
        controller_url: str,
        *,
        token: str | None = None,
        timeout: float | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: Any = True,  # an ssl.SSLContext trusting the pinned CA only (profiles.py)
    ) -> None:
        import httpx

        self.controller_url = controller_url.rstrip("/")
        self.pinned = verify is not True
        self.ca_fingerprint: str | None = None  # the profile's pin, for the agent command
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if timeout is None:
            timeout = timeout_from_environment()
        self.last_etag: str | None = None  # the ETag of the last answer (If-Match later)
        self._http = httpx.Client(
            base_url=self.controller_url + API_PREFIX,
            headers=headers,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            verify=verify,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        if_match: str | None = None,
    ) -> Any:
        """The parsed JSON answer (None for 204); a CliError for anything else. `if_match`:
        the ETag the change was prepared from (412 `stale-version` when it changed since)."""
        import httpx

        clean = {k: v for k, v in (params or {}).items() if v is not None}
        headers = {"If-Match": if_match} if if_match else None
        try:
            answer = self._http.request(
                method, path, json=json, params=clean or None, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise Unreachable(
                f"the controller at {self.controller_url} did not answer in time "
                f"({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            if "CERTIFICATE_VERIFY_FAILED" in reason:  # nothing was sent: refused at the handshake
                pinned = "the CA pinned at login" if self.pinned else "the system's CAs"
                raise Unreachable(
                    f"refused the controller at {self.controller_url}: its certificate does not "
                    f"verify against {pinned} ({reason}); nothing was sent. If its CA really "
                    "changed, run `voipcloud login --ca-fingerprint sha256:...` again"
                ) from exc
            raise Unreachable(
                f"cannot reach the controller at {self.controller_url}: {reason}"
            ) from exc
        except httpx.InvalidURL as exc:
            raise UsageProblem(f"invalid controller URL {self.controller_url!r}: {exc}") from exc
        self.last_etag = answer.headers.get("etag")
        body: Any = None
        if answer.content:
            try:
                body = answer.json()
            except ValueError:
                body = None
        if answer.status_code >= 400:
            raise refusal_from(
                answer.status_code,
                body,
                answer.reason_phrase,
                retry_after=answer.headers.get("retry-after"),
            )
        if answer.status_code == 204 or not answer.content:
            return None
        if body is None:
            raise ServerFailed(
                f"{self.controller_url} answered {answer.status_code} with something that is "
                "not JSON: is it a voipcloud controller?"
            )
        return body

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def text_chunks(self, path: str, *, params: Mapping[str, Any] | None = None) -> Iterator[str]:
        """A text answer (an audit export) as it arrives; the errors of `request`."""
        import httpx

        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            with self._http.stream("GET", path, params=clean or None) as answer:
                if answer.status_code >= 400:
                    answer.read()
                    try:
                        body = answer.json()
                    except ValueError:
                        body = None
                    raise refusal_from(
                        answer.status_code,
                        body,
                        answer.reason_phrase,
                        retry_after=answer.headers.get("retry-after"),
                    )
                yield from answer.iter_text()
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the controller at {self.controller_url}: "
                f"{str(exc) or type(exc).__name__}"
            ) from exc

    def post(self, path: str, *, json: Any = None) -> Any:
        return self.request("POST", path, json=json)

    def put(self, path: str, *, json: Any = None, if_match: str | None = None) -> Any:
        return self.request("PUT", path, json=json, if_match=if_match)

    def patch(self, path: str, *, json: Any = None, if_match: str | None = None) -> Any:
        return self.request("PATCH", path, json=json, if_match=if_match)

    def delete(self, path: str, *, if_match: str | None = None) -> Any:
        return self.request("DELETE", path, if_match=if_match)

    def etag_of(self, path: str) -> str | None:
        """The current ETag of the resource at `path` (one GET)."""
        self.get(path)
        return self.last_etag


def selected_profile(ctx: typer.Context | None) -> str:
    """The profile chosen with the root `--profile` option or VOIPCLOUD_PROFILE."""
    from voipcloud.cli.profiles import DEFAULT_PROFILE, PROFILE_ENV

    root = ctx.find_root() if ctx is not None else None
    chosen = root.obj.get("profile") if root is not None and isinstance(root.obj, dict) else None
    return chosen or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE


def stored_login(ctx: typer.Context | None, profile: str | None = None) -> Profile:
    """The stored login of the profile, or NotLoggedIn (exit 4)."""
    import time

    from voipcloud.cli.profiles import ProfileStore

    name = profile or selected_profile(ctx)
    found = ProfileStore.default().get(name)
    hint = "" if name == "default" else f" --profile {name}"
    if found is None or not found.token:
        raise NotLoggedIn(
            f"no stored login for profile {name!r}: run `voipcloud login{hint} --controller URL`"
        )
    if found.expires_at is not None and found.expires_at <= time.time():
        raise NotLoggedIn(
            f"the login of profile {name!r} to {found.controller} has expired: "
            f"run `voipcloud login{hint}`"
        )
    return found


SESSION_KEY_FILE = "/etc/voipcloud/session-key"  # voipcloud.agent.trust.SESSION_KEY_FILE


def agent_command(client: ApiClient) -> str:
    """The node's agent command for this controller (the key read from a file)."""
    from voipcloud.agent.trust import agent_command as command

    return command(client.controller_url, client.ca_fingerprint)


def install_command(client: ApiClient) -> str:
    """The one line that installs the agent as a service (docs/operations.md, Enrolling)."""
    from voipcloud.agent.trust import install_command as command

    return command(client.controller_url, client.ca_fingerprint)


def client_from_context(ctx: typer.Context | None) -> ApiClient:
    """An authenticated client for the profile chosen on the command line."""
    login = stored_login(ctx)
    client = ApiClient(login.controller, token=login.token, verify=login.verify())
    client.ca_fingerprint = (login.ca_fingerprint or "").split(",")[0] or None
    if ctx is not None:
        ctx.call_on_close(client.close)
    return client
