"""`sip` → Kamailio (Debian `kamailio`): registrar and proxy for the SIP domain.

Rendered from: sip_domain (alias, registrar domain, the only domain it serves),
sip_port (UDP and TCP), the node's private IP (listen) and public IP (advertised; listened on
too only when bound here), customer_connectivity (advertised instead of the public IP when
set explicitly). OPTIONS to the domain or the node is answered 200 by Kamailio itself.
Health: an OPTIONS ping from the agent to sip:<domain> at the private IP, and
`kamcmd core.uptime` over its control socket.
"""

from __future__ import annotations

import glob
import secrets
import socket
import subprocess

from voipcloud.agent.handlers import NodeInfo
from voipcloud.agent.roles.base import Listen, Params, SoftwareRole, address_bound

CONFIG = "kamailio.cfg"
MODULES = [
    *("kex", "corex", "tm", "tmx", "sl", "rr", "pv", "maxfwd", "usrloc", "registrar"),
    *("textops", "siputils", "xlog", "sanity", "ctl"),
]


def module_dir() -> str:
    found = sorted(glob.glob("/usr/lib/*/kamailio/modules")) or ["/usr/lib/kamailio/modules"]
    return found[0]


def advertised(params: Params, node: NodeInfo) -> str | None:
    value = params.get("customer_connectivity") or node.public_ip
    return str(value) if value else None


def options_ping(address: str, port: int, domain: str, timeout: float = 2.0) -> str:
    """Send one SIP OPTIONS for sip:<domain> over UDP; the status line of the answer."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((address, port))
        local, local_port = sock.getsockname()[:2]
        branch = "z9hG4bK" + secrets.token_hex(8)
        tag = secrets.token_hex(4)
        call_id = secrets.token_hex(8)
        request = (
            f"OPTIONS sip:{domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local}:{local_port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:voipcloud-agent@{domain}>;tag={tag}\r\n"
            f"To: <sip:{domain}>\r\n"
            f"Call-ID: {call_id}@{local}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.send(request.encode())
        answer = sock.recv(65535).decode(errors="replace")
    return answer.split("\r\n", 1)[0]


class Kamailio(SoftwareRole):
    code = "sip"
    software = "Kamailio"
    packages = ("kamailio",)
    binary = "kamailio"
    distro_units = ("kamailio.service",)

    sockets = ("kamailio.ctl",)

    def ctl_socket(self) -> str:
        return self.short_path(self.sockets[0])

    def listens(self, params: Params, node: NodeInfo) -> list[Listen]:
        port = int(params.get("sip_port") or 5060)
        addresses = [str(node.private_ip)]
        public = node.public_ip
        if public and public != node.private_ip and address_bound(public):
            addresses.append(public)
        return [Listen(proto, a, port) for a in addresses for proto in ("udp", "tcp")]

    def render(self, params: Params, node: NodeInfo) -> dict[str, str]:
        domain = str(params.get("sip_domain") or "")
        outside = advertised(params, node)
        lines = [
            "#!KAMAILIO",
            "# rendered by the voipcloud agent from the sip role's parameters; do not edit",
            "debug=2",
            "log_stderror=yes",
            "fork=yes",
            "children=2",
            "tcp_children=2",
            "auto_aliases=no",
            'server_header="Server: voipcloud-kamailio"',
        ]
        for listen in self.listens(params, node):
            line = f"listen={listen.protocol}:{listen.address}:{listen.port}"
            if outside and listen.address == node.private_ip and outside != node.private_ip:
                line += f" advertise {outside}:{listen.port}"
            lines.append(line)
        lines += [
            f'alias="{domain}"',
            f'mpath="{module_dir()}/"',
            *(f'loadmodule "{m}.so"' for m in MODULES),
            f'modparam("ctl", "binrpc", "unix:{self.ctl_socket()}")',
            'modparam("usrloc", "db_mode", 0)',
            'modparam("registrar", "max_expires", 3600)',
            'modparam("rr", "enable_full_lr", 1)',
            "",
            ROUTES.replace("@DOMAIN@", domain),
        ]
        return {CONFIG: "\n".join(lines) + "\n"}

    def command(self, params: Params, node: NodeInfo) -> tuple[list[str], dict[str, str]]:
        runtime = self.dir / "run"
        runtime.mkdir(parents=True, exist_ok=True)
        argv = [
            "kamailio",
            "-f",
            str(self.dir / CONFIG),
            "-P",
            str(runtime / "kamailio.pid"),
            "-Y",
            str(runtime),
            "-DD",
            "-E",
        ]
        return argv, {}

    def check(self, params: Params, node: NodeInfo) -> str | None:
        port = int(params.get("sip_port") or 5060)
        domain = str(params.get("sip_domain") or node.private_ip)
        try:
            status = options_ping(str(node.private_ip), port, domain)
        except OSError as exc:
            return f"no answer to OPTIONS sip:{domain} at {node.private_ip}:{port} ({exc})"
        if not status.startswith("SIP/2.0 200"):
            return f"OPTIONS sip:{domain} at {node.private_ip}:{port} answered {status!r}"
        uptime = subprocess.run(  # noqa: S603
            ["kamcmd", "-s", f"unix:{self.ctl_socket()}", "core.uptime"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if uptime.returncode != 0:
            return f"kamcmd core.uptime failed: {(uptime.stderr or uptime.stdout).strip()[:300]}"
        return None


ROUTES = """\
request_route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (!sanity_check()) {
        exit;
    }
    # a ping to the domain or to this node: answered here
    if (is_method("OPTIONS") && uri==myself && $rU == $null) {
        append_to_reply("X-Voipcloud-Domain: @DOMAIN@\\r\\n");
        sl_send_reply("200", "OK");
        exit;
    }
    if (has_totag()) {
        if (loose_route()) {
            t_relay();
            exit;
        }
        if (is_method("ACK")) {
            if (t_check_trans()) {
                t_relay();
            }
            exit;
        }
        sl_send_reply("404", "Not here");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            t_relay();
        }
        exit;
    }
    # registrar and proxy for @DOMAIN@ only: no open relay
    if (!uri==myself) {
        sl_send_reply("403", "Not serving that domain");
        exit;
    }
    if (is_method("REGISTER")) {
        if ($td != "@DOMAIN@") {
            sl_send_reply("403", "Not serving that domain");
            exit;
        }
        if (!save("location")) {
            sl_reply_error();
        }
        exit;
    }
    if (!lookup("location")) {
        sl_send_reply("404", "Not Found");
        exit;
    }
    record_route();
    if (!t_relay()) {
        sl_reply_error();
    }
}
"""


__all__ = ["Kamailio", "options_ping"]
