"""Pinning the controller: an agent (and `voipcloud login`) trusts one CA and nothing else.

    first contact   --ca-fingerprint sha256:HEX: a TLS handshake with verification off, to
                    read the chain the controller presents; nothing is sent on it. A
                    certificate of that chain whose SHA-256 (of its DER) is the fingerprint
                    becomes the only trust anchor; a second handshake must verify against it
                    (signature, dates, the host name or address in the URL). Then the anchor
                    is kept (STATE_DIR/controller-ca.pem) and the fingerprint noted.
    afterwards      every connection (join, channel) uses `ControllerTrust.context()`: the
                    kept CA as the only anchor, the system's CAs never loaded. Before each
                    (re)connection `before_connect()` does a verified handshake, so a
                    controller presenting another certificate is refused with a message
                    naming both fingerprints, before the session key or the credential is
                    sent anywhere.
    --ca-file FILE  the anchors are the file's certificates (a company CA, an ACME root).

A first contact that fails (wrong fingerprint, host name not in the certificate) is final
(`Untrusted`: the agent exits 2). A pinned agent meeting the wrong certificate later keeps
retrying (`UntrustedController`, an OSError the runner's backoff handles): an attacker at the
controller's address can make it wait, not make it talk.

Replacing the controller's CA (docs/security.md): the controller announces the next CA at
GET /api/v1/agent/trust; a pinned agent fetches it over its verified, authenticated link
(`refresh()`) and keeps what is announced, recording every fingerprint it was re-pinned
through, so its original `--ca-fingerprint` stays acceptable on its command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from voipcloud.services import tls

log = logging.getLogger("voipcloud.agent")

TRUST_FILE = "controller-ca.pem"
PINS_FILE = "controller-pins.json"
HANDSHAKE_TIMEOUT = 10.0

is_loopback = tls.is_loopback


class Untrusted(Exception):
    """The controller cannot be trusted (first contact): say why, send nothing, stop."""


class UntrustedController(OSError):
    """A pinned controller presented another certificate: nothing sent; retried later."""


def client_context(anchors_pem: str, *, check_hostname: bool = True) -> ssl.SSLContext:
    """TLS 1.2+, modern ciphers, these anchors only (never the system's CAs)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(tls.CIPHERS)
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    # the anchor may be an intermediate of a brought chain (or a pinned leaf itself)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=anchors_pem)
    return context


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only to read the chain; nothing is sent on it
    return context


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"not an https:// URL: {url}")
        return cls(url.rstrip("/"), parts.hostname, parts.port or 443)

    @property
    def sni(self) -> str | None:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return self.host
        return None


def _chain_of(sock: ssl.SSLSocket) -> list[bytes]:
    getter = getattr(sock, "get_unverified_chain", None)  # Python 3.13+
    if getter is None:
        getter = getattr(getattr(sock, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        certs = getter() or []
        der = [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in certs]  # type: ignore[attr-defined]
        if der:
            return der
    leaf = sock.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def presented_chain(endpoint: Endpoint, timeout: float = HANDSHAKE_TIMEOUT) -> list[bytes]:
    """The certificates the server presents (DER, leaf first); no byte of HTTP is sent."""
    with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw:
        context = _unverified_context()
        with context.wrap_socket(raw, server_hostname=endpoint.sni) as sock:
            return _chain_of(sock)


def verified_handshake(
    endpoint: Endpoint, context: ssl.SSLContext, timeout: float = HANDSHAKE_TIMEOUT
) -> None:
    """A handshake that must verify against `context`; closed at once, nothing sent."""
    with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw:
        server_hostname = endpoint.host if context.check_hostname else endpoint.sni
        with context.wrap_socket(raw, server_hostname=server_hostname):
            pass


def describe_chain(chain: list[bytes]) -> str:
    """'sha256:… (CN=…)' of the chain's top certificate (what a pin would have to match)."""
    if not chain:
        return "no certificate"
    from cryptography import x509

    top = chain[-1]
    try:
        subject = x509.load_der_x509_certificate(top).subject.rfc4514_string()
    except ValueError:
        subject = "unreadable"
    return f"{tls.fingerprint(top)} ({subject})"


# --- what an agent keeps ---------------------------------------------------------------------


@dataclass
class Pins:
    """STATE_DIR/controller-ca.pem (the anchors) and controller-pins.json (every fingerprint
    this state dir was pinned to or re-pinned through)."""

    directory: Path | None
    anchors_pem: str = ""
    known: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, directory: Path | None) -> Pins:
        pins = cls(directory)
        if directory is None:
            return pins
        with contextlib.suppress(FileNotFoundError):
            pins.anchors_pem = (directory / TRUST_FILE).read_text()
        with contextlib.suppress(FileNotFoundError, ValueError):
            data = json.loads((directory / PINS_FILE).read_text())
            pins.known = [str(f) for f in data.get("known", [])]
        return pins

    def fingerprints(self) -> list[str]:
        if not self.anchors_pem:
            return []
        return [tls.cert_fingerprint(c) for c in tls.load_pem_certs(self.anchors_pem)]

    def save(self, anchors_pem: str) -> None:
        self.anchors_pem = anchors_pem
        for fp in self.fingerprints():
            if fp not in self.known:
                self.known.append(fp)
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tls.write_atomically(self.directory / TRUST_FILE, anchors_pem.encode(), 0o600)
        payload = json.dumps({"known": self.known}, indent=2) + "\n"
        tls.write_atomically(self.directory / PINS_FILE, payload.encode(), 0o600)


class ControllerTrust:
    """The one CA (or CA file) a controller must chain to; the SSLContext for every link."""

    def __init__(
        self,
        endpoint: Endpoint,
        anchors_pem: str,
        *,
        source: str,
        pins: Pins | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.source = source  # where the anchors come from, for messages
        self.pins = pins
        self._anchors = anchors_pem
        self._context = client_context(anchors_pem)

    @property
    def anchors_pem(self) -> str:
        return self._anchors

    def fingerprints(self) -> list[str]:
        return [tls.cert_fingerprint(c) for c in tls.load_pem_certs(self._anchors)]

    def context(self) -> ssl.SSLContext:
        return self._context

    def check(self) -> None:
        """A verified handshake; Untrusted (naming both fingerprints) if it does not verify."""
        try:
            verified_handshake(self.endpoint, self._context)
        except ssl.SSLCertVerificationError as exc:
            raise Untrusted(self._refusal(exc)) from None

    def _refusal(self, exc: ssl.SSLCertVerificationError) -> str:
        try:
            presented = describe_chain(presented_chain(self.endpoint))
        except OSError:
            presented = "a certificate that could not be read again"
        pinned = ", ".join(self.fingerprints())
        why = exc.verify_message or exc.reason or str(exc)
        if "mismatch" in why.lower() or "hostname" in why.lower():
            return (
                f"refused the controller at {self.endpoint.url}: its certificate comes from "
                f"the pinned CA {pinned} but does not name {self.endpoint.host} ({why}); add "
                "the name to the controller's certificate (VOIPCLOUD_TLS_NAMES) or use a name "
                "it carries. Nothing was sent to it."
            )
        return (
            f"refused the controller at {self.endpoint.url}: it presented a certificate chain "
            f"ending at {presented}, which is not the pinned CA {pinned} ({self.source}); "
            f"verification said: {why}. Nothing was sent to it (no session key, no credential)."
        )

    async def before_connect(self) -> None:
        """For the agent's loop: refuse (and retry later) a controller that does not verify."""
        try:
            await asyncio.to_thread(self.check)
        except Untrusted as exc:
            log.warning("%s", exc)
            raise UntrustedController(str(exc)) from None

    def adopt(self, anchors_pem: str) -> bool:
        """Announced anchors (fetched over a verified, authenticated link) replace ours."""
        new = sorted(tls.cert_fingerprint(c) for c in tls.load_pem_certs(anchors_pem))
        if not new or new == sorted(self.fingerprints()):
            return False
        self._context = client_context(anchors_pem)
        self._anchors = anchors_pem
        if self.pins is not None:
            self.pins.save(anchors_pem)
        log.warning("controller CA trust updated by the controller: now %s", ", ".join(new))
        return True

    async def refresh(self, token: Callable[[], str | None]) -> None:
        """Fetch the anchors the controller announces (GET /api/v1/agent/trust)."""
        credential = token()
        if not credential:
            return
        import httpx

        async with httpx.AsyncClient(timeout=15, verify=self._context) as client:
            answer = await client.get(
                f"{self.endpoint.url}/api/v1/agent/trust",
                headers={"Authorization": f"Bearer {credential}"},
            )
        if answer.status_code != 200:
            return
        anchors = answer.json().get("anchors")
        if isinstance(anchors, list) and anchors and all(isinstance(a, str) for a in anchors):
            self.adopt("".join(anchors))


def _parse_pin(fingerprint: str) -> str:
    try:
        return tls.parse_fingerprint(fingerprint)
    except ValueError as exc:
        raise Untrusted(str(exc)) from None


def establish(
    url: str,
    *,
    fingerprint: str | None,
    ca_file: Path | None,
    state_dir: Path | None,
    kept_anchors: str | None = None,
) -> ControllerTrust | None:
    """The trust for `url`, or None for plain http:// (which pins nothing).

    Anchors come from, in order: `ca_file`; what this state dir (or profile) kept; the
    controller's presented chain at first contact, checked against `fingerprint`.
    Raises Untrusted for anything that must not be trusted, OSError when unreachable.
    """
    scheme = urlsplit(url).scheme
    if scheme != "https":
        if fingerprint or ca_file:
            raise Untrusted(
                f"{url} is plain http://: a CA fingerprint or CA file needs the controller's "
                "https:// address"
            )
        return None
    endpoint = Endpoint.of(url)
    pin = _parse_pin(fingerprint) if fingerprint else None
    if ca_file is not None:
        if pin:
            raise Untrusted("give either --ca-fingerprint or --ca-file, not both")
        try:
            anchors = ca_file.read_text()
            tls.load_pem_certs(anchors)
        except (OSError, UnicodeDecodeError, tls.TlsError) as exc:
            raise Untrusted(f"--ca-file {ca_file}: no PEM certificate ({exc})") from None
        trust = ControllerTrust(endpoint, anchors, source=f"--ca-file {ca_file}")
        trust.check()
        return trust
    pins = Pins.load(state_dir)
    if kept_anchors:
        pins.anchors_pem = kept_anchors
        pins.known = pins.known or pins.fingerprints()
    if pins.anchors_pem:
        if pin and pin not in pins.known and pin not in pins.fingerprints():
            where = state_dir / TRUST_FILE if state_dir else "the profile"
            raise Untrusted(
                f"--ca-fingerprint {pin} is not the CA pinned in {where} "
                f"({', '.join(pins.fingerprints())}); remove that file to pin another CA"
            )
        where = f"pinned in {state_dir / TRUST_FILE}" if state_dir else "pinned in the profile"
        return ControllerTrust(endpoint, pins.anchors_pem, source=where, pins=pins)
    if pin is None:
        raise Untrusted(
            f"{url} is https://: give --ca-fingerprint sha256:HEX (shown by `voipcloud serve` "
            "and with the session key) or --ca-file FILE; the agent trusts no CA by default"
        )
    return first_contact(endpoint, pin, pins)


def first_contact(endpoint: Endpoint, pin: str, pins: Pins) -> ControllerTrust:
    chain = presented_chain(endpoint)  # OSError: unreachable (the caller may retry)
    match = next((der for der in chain if tls.fingerprint(der) == pin), None)
    if match is None:
        raise Untrusted(
            f"refused the controller at {endpoint.url}: it presented a certificate chain "
            f"ending at {describe_chain(chain)}, not the CA {pin} given with "
            "--ca-fingerprint. Nothing was sent to it (no session key, no credential)."
        )
    anchor = ssl.DER_cert_to_PEM_cert(match)
    trust = ControllerTrust(endpoint, anchor, source="--ca-fingerprint", pins=pins)
    trust.check()  # the chain verifies against that CA and names the host
    pins.save(anchor)
    log.info("pinned the controller's CA %s", pin)
    return trust


async def establish_with_retry(
    url: str,
    *,
    fingerprint: str | None,
    ca_file: Path | None,
    state_dir: Path,
    attempts_log_every: int = 10,
) -> ControllerTrust | None:
    """The agent at start: wait for an unreachable controller (backoff), never for an
    untrusted one (Untrusted propagates)."""
    from voipcloud.agent.runner import Backoff

    backoff = Backoff()
    while True:
        try:
            return await asyncio.to_thread(
                establish, url, fingerprint=fingerprint, ca_file=ca_file, state_dir=state_dir
            )
        except (OSError, TimeoutError) as exc:
            if backoff.attempt % attempts_log_every == 0:
                log.info("controller %s unreachable (%s); retrying", url, exc)
            await asyncio.sleep(backoff.next_delay())


SESSION_KEY_FILE = "/etc/voipcloud/session-key"


def agent_command(controller_url: str, ca_fingerprint: str | None) -> str:
    """The node's agent command, shown with its session key: the key is read from a file
    (never an argument: command lines are visible to every user of a machine)."""
    pin = f" --ca-fingerprint {ca_fingerprint}" if ca_fingerprint else ""
    return (
        f"voipcloud agent --controller {controller_url}{pin} --session-key-file {SESSION_KEY_FILE}"
    )


def read_session_key(path: str) -> str:
    """--session-key-file: a file (first line), or '-' for standard input."""
    import sys

    if path == "-":
        line = sys.stdin.readline()
    else:
        with open(os.path.expanduser(path), encoding="utf-8") as stream:
            line = stream.readline()
    key = line.strip()
    if not key:
        raise Untrusted(f"--session-key-file {path}: no session key in it")
    return key


def install_command(controller_url: str, ca_fingerprint: str | None) -> str:
    """The one line that installs and starts the agent on a Debian node (docs/operations.md,
    Enrolling a node). The key is read from SESSION_KEY_FILE, never an argument. Over https
    nothing is trusted before the CA is: its certificate is downloaded without verification,
    checked against the fingerprint (sha256sum of its DER), and only then used (curl
    --cacert) to fetch the install script."""
    url = controller_url.rstrip("/")
    tail = f"--controller {url}"
    if ca_fingerprint is None:
        return (
            f"curl -fsS {url}/agent/install.sh | sh -s -- {tail} "
            f"--session-key-file {SESSION_KEY_FILE}"
        )
    digest = tls.parse_fingerprint(ca_fingerprint).removeprefix("sha256:")
    return (
        f'( cd "$(mktemp -d)" && curl -fsSko ca.der {url}/agent/ca.der'
        f' && echo "{digest} *ca.der" | sha256sum -c --quiet'
        " && openssl x509 -inform der -in ca.der -out ca.pem"
        f" && curl -fsS --cacert ca.pem {url}/agent/install.sh"
        f" | sh -s -- {tail} --ca-fingerprint sha256:{digest}"
        f" --session-key-file {SESSION_KEY_FILE} )"
    )
