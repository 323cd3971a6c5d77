"""`jabber` → Prosody (Debian `prosody`).

Why Prosody rather than ejabberd: one small Lua process that starts in well under a second
with a single configuration file and no database or Erlang node to manage (ejabberd brings
an Erlang VM, epmd and a cookie per instance, like RabbitMQ), which is what a role per node
needs; it serves the same client and server protocols.

Rendered from: xmpp_domain (the VirtualHost; defaults to the system domain), c2s_port and
s2s_port, the node's private IP (the only interface). Data, pid file and certificates dir in
the role's dir. Plain client connections are allowed (no certificate is issued here; TLS
termination is the operator's choice). Health: an XMPP stream opened on the client port for
the domain must answer with a stream from that domain and its features.
"""

from __future__ import annotations

import socket

from voipcloud.agent.handlers import NodeInfo
from voipcloud.agent.roles.base import Listen, Params, SoftwareRole

CONFIG = "prosody.cfg.lua"


def _lua(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def open_stream(address: str, port: int, domain: str, timeout: float = 5) -> str:
    """Open a client stream to `domain`; the server's answer up to its features."""
    header = (
        f"<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
    answer = b""
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(header.encode())
        while b"</stream:features>" not in answer and b"</stream:stream>" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
            if len(answer) > 65536:
                break
    return answer.decode(errors="replace")


class Prosody(SoftwareRole):
    code = "jabber"
    software = "Prosody"
    packages = ("prosody",)
    binary = "prosody"
    distro_units = ("prosody.service",)
    reload_signal = None  # a changed VirtualHost or port: restarted

    def listens(self, params: Params, node: NodeInfo) -> list[Listen]:
        ip = str(node.private_ip)
        return [
            Listen("tcp", ip, int(params.get("c2s_port") or 5222)),
            Listen("tcp", ip, int(params.get("s2s_port") or 5269)),
        ]

    def render(self, params: Params, node: NodeInfo) -> dict[str, str]:
        domain = str(params.get("xmpp_domain") or "")
        for sub in ("data", "certs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        lines = [
            "-- rendered by the voipcloud agent from the jabber role's parameters; do not edit",
            f"pidfile = {_lua(str(self.dir / 'prosody.pid'))}",
            f"data_path = {_lua(str(self.dir / 'data'))}",
            f"certificates = {_lua(str(self.dir / 'certs'))}",
            "run_as_root = true",
            "daemonize = false",
            'log = { { levels = { min = "info" }, to = "console" } }',
            f"interfaces = {{ {_lua(str(node.private_ip))} }}",
            f"c2s_ports = {{ {int(params.get('c2s_port') or 5222)} }}",
            f"s2s_ports = {{ {int(params.get('s2s_port') or 5269)} }}",
            "c2s_direct_tls_ports = { }",
            "legacy_ssl_ports = { }",
            'modules_enabled = { "roster", "saslauth", "disco", "ping", "posix", "register" }',
            "allow_registration = false",
            "c2s_require_encryption = false",
            "s2s_require_encryption = false",
            "s2s_secure_auth = false",
            'authentication = "internal_hashed"',
            "",
            f"VirtualHost {_lua(domain)}",
            "",
        ]
        return {CONFIG: "\n".join(lines)}

    def command(self, params: Params, node: NodeInfo) -> tuple[list[str], dict[str, str]]:
        return ["prosody", "--config", str(self.dir / CONFIG), "-F"], {}

    def check(self, params: Params, node: NodeInfo) -> str | None:
        domain = str(params.get("xmpp_domain") or "")
        port = int(params.get("c2s_port") or 5222)
        try:
            answer = open_stream(str(node.private_ip), port, domain)
        except OSError as exc:
            return f"no XMPP stream at {node.private_ip}:{port} ({exc})"
        if "<stream:features" not in answer or f"from='{domain}'" not in answer.replace('"', "'"):
            where = f"{node.private_ip}:{port}"
            return f"the XMPP stream for {domain} at {where} answered {answer[:200]!r}"
        return None
