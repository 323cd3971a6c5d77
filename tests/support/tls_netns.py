"""HTTPS between real processes over a non-loopback address: network namespaces on a bridge.

    host: bridge vctb<tag> 10.200.77.1/24 ── veth ── namespace vct-<tag>-<n>: 10.200.77.<n+1>

The controller (`voipcloud serve`) listens on the bridge address, which is not loopback, so it
serves HTTPS with its own CA by default; agents run inside the namespaces. `TlsLab.close()`
kills every process `ip netns pids` lists (by PID), then deletes the namespaces, the host-side
veths and the bridge. Also: `Impostor`, a TLS server with another certificate (a man in the
middle) that records every byte a client sends it after the handshake.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.netns import Lab, Namespace
from tests.support.netns import netns_unavailable as _netns_unavailable
from tests.support.processes import AgentLog, Controller, voipcloud_executable
from voipcloud.agent.trust import client_context
from voipcloud.services import tls


@dataclass
class TlsLab(Lab):
    """The lab of the TLS tests: 10.200.77.x (another range when a concurrent lab holds it),
    interfaces named vct*."""

    net: int = 77

    def bridge_name(self) -> str:
        return f"vctb{self.tag}"

    def names(self, n: int) -> tuple[str, str, str]:
        return f"vct-{self.tag}-{n}", f"vcth{self.tag}{n}", f"vctn{self.tag}{n}"


def netns_unavailable() -> str | None:
    return _netns_unavailable(probe_prefix="vct-probe")


@dataclass
class HttpsController(Controller):
    """`voipcloud serve` on a non-loopback address: HTTPS with its own CA, by default."""

    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    def fingerprint(self) -> str:
        return tls.chain_fingerprint(self.ca_file)

    def verify(self) -> ssl.SSLContext:
        return client_context(self.ca_file.read_text())

    def start(self) -> Self:
        self.env = {
            **self.env,
            "VOIPCLOUD_HOST": self.host,
            "VOIPCLOUD_TLS_RELOAD_INTERVAL": "0.3",
        }
        return super().start()

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"voipcloud serve exited: {self.log()}")
        if not self.ca_file.exists():
            return False
        try:
            answer = httpx.get(f"{self.url}/healthz", timeout=1, verify=self.verify())
        except httpx.TransportError:
            return False
        return answer.status_code == 200


def presented_leaf(host: str, port: int) -> x509.Certificate:
    """The server certificate a new handshake gets now."""
    from voipcloud.agent.trust import Endpoint, presented_chain

    chain = presented_chain(Endpoint(f"https://{host}:{port}", host, port))
    return x509.load_der_x509_certificate(chain[0])


@dataclass
class NodeAgent(AgentLog):
    """A real `voipcloud agent` in a namespace, started with the enrolment's agent command."""

    namespace: Namespace
    argv: list[str]
    state_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log_tail: ClassVar[int | None] = None

    def start(self) -> NodeAgent:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "agent.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.namespace.exec_argv(self.argv), stdout=log, stderr=subprocess.STDOUT
            )
        return self


def agent_argv(command: str, *, key_file: Path, state_dir: Path) -> list[str]:
    """The enrolment's command as shown, with the key file and state dir of this test."""
    words = command.split()
    assert words[:2] == ["voipcloud", "agent"], command
    argv = [voipcloud_executable(), *words[1:]]
    at = argv.index("--session-key-file")
    argv[at + 1] = str(key_file)
    return [*argv, "--state-dir", str(state_dir), "--config", str(state_dir / "agent.toml")]


# --- a man in the middle ---------------------------------------------------------------------


def impostor_certificates(
    host: str, directory: Path, *, copy_ca: Path | None = None
) -> tuple[Path, Path]:
    """A CA of the impostor's own (named like ours) and a server certificate for `host`.
    With `copy_ca`, the real CA's certificate is appended to the chain it presents (it has
    not the real CA's key, so that CA cannot have signed its certificate)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "voipcloud"),
            x509.NameAttribute(NameOID.COMMON_NAME, "voipcloud controller CA"),
        ]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain = tls.pem(leaf) + tls.pem(ca)
    if copy_ca is not None:
        chain += copy_ca.read_text()
    cert_file, key_file = directory / "impostor.pem", directory / "impostor.key"
    cert_file.write_text(chain)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass
class Impostor:
    """A TLS server at the controller's address: counts handshakes, keeps what it receives."""

    host: str
    port: int
    cert_file: Path
    key_file: Path
    connections: int = 0  # accepted TCP connections
    handshakes: int = 0  # TLS handshakes that completed (the client accepted or ignored us)
    received: bytearray = field(default_factory=bytearray)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def fingerprint(self) -> str:
        return tls.chain_fingerprint(self.cert_file)

    def start(self) -> Impostor:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, args=(context,), daemon=True)
        self._thread.start()
        return self

    def _serve(self, context: ssl.SSLContext) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            threading.Thread(target=self._talk, args=(context, conn), daemon=True).start()

    def _talk(self, context: ssl.SSLContext, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with context.wrap_socket(conn, server_side=True) as tls_conn:
                self.handshakes += 1
                while True:  # whatever a client sends after the handshake, kept
                    data = tls_conn.recv(65536)
                    if not data:
                        return
                    self.received += data
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
