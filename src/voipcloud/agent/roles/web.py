"""`web` → nginx (Debian `nginx`) in front of the users' portal.

Rendered from: http_port, https_port (only with a certificate and key configured in the
agent's `[software]` section: TLS is optional), public_hostname (server_name, with
customer_connectivity when it is a name), max_sessions (worker_connections), the node's
private IP (listen; the public IP too only when bound here). It proxies to the portal:
`software.web_upstream`, by default the controller the agent talks to. Its pid file, logs
and temporary dirs live in the role's dir; a changed configuration is reloaded (SIGHUP).
Health: an HTTP request through nginx to the portal's /healthz, answered 200.
"""

from __future__ import annotations

import signal

import httpx

from voipcloud.agent.handlers import HandlerError, NodeInfo
from voipcloud.agent.roles.base import Listen, Params, SoftwareRole, address_bound

CONFIG = "nginx.conf"


class Nginx(SoftwareRole):
    code = "web"
    software = "nginx"
    packages = ("nginx",)
    binary = "nginx"
    distro_units = ("nginx.service",)
    reload_signal = signal.SIGHUP

    def tls(self) -> tuple[str, str] | None:
        config = self.context.config
        if config.web_certificate and config.web_key:
            return config.web_certificate, config.web_key
        return None

    def addresses(self, node: NodeInfo) -> list[str]:
        found = [str(node.private_ip)]
        if node.public_ip and node.public_ip != node.private_ip and address_bound(node.public_ip):
            found.append(node.public_ip)
        return found

    def listens(self, params: Params, node: NodeInfo) -> list[Listen]:
        ports = [int(params.get("http_port") or 80)]
        if self.tls():
            ports.append(int(params.get("https_port") or 443))
        return [Listen("tcp", a, p) for a in self.addresses(node) for p in ports]

    def upstream(self, node: NodeInfo) -> str:
        upstream = self.context.config.web_upstream or node.controller_url
        if not upstream.startswith(("http://", "https://")):
            raise HandlerError("web: no portal to serve (software.web_upstream)")
        return upstream.rstrip("/")

    def names(self, params: Params) -> str:
        names = [str(params.get(k)) for k in ("public_hostname", "customer_connectivity")]
        return " ".join(dict.fromkeys(n for n in names if n and n != "None")) or "_"

    def render(self, params: Params, node: NodeInfo) -> dict[str, str]:
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        http_port = int(params.get("http_port") or 80)
        listen = [f"        listen {a}:{http_port};" for a in self.addresses(node)]
        tls = self.tls()
        if tls:
            https_port = int(params.get("https_port") or 443)
            listen += [f"        listen {a}:{https_port} ssl;" for a in self.addresses(node)]
            listen += [
                f"        ssl_certificate {tls[0]};",
                f"        ssl_certificate_key {tls[1]};",
            ]
        tmp = self.dir / "tmp"
        text = "\n".join(
            [
                "# rendered by the voipcloud agent from the web role's parameters; do not edit",
                "daemon off;",
                "worker_processes 1;",
                f"pid {self.dir / 'nginx.pid'};",
                f"error_log {self.dir / 'error.log'} warn;",
                f"events {{ worker_connections {int(params.get('max_sessions') or 2000)}; }}",
                "http {",
                f"    access_log {self.dir / 'access.log'};",
                *(
                    f"    {kind}_temp_path {tmp / kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
                ),
                "    server {",
                *listen,
                f"        server_name {self.names(params)};",
                "        location / {",
                f"            proxy_pass {self.upstream(node)};",
                "            proxy_set_header Host $host;",
                "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                "            proxy_set_header X-Forwarded-Proto $scheme;",
                "            proxy_http_version 1.1;",
                "            proxy_set_header Upgrade $http_upgrade;",
                '            proxy_set_header Connection "upgrade";',
                "        }",
                "    }",
                "}",
                "",
            ]
        )
        return {CONFIG: text}

    def command(self, params: Params, node: NodeInfo) -> tuple[list[str], dict[str, str]]:
        conf = str(self.dir / CONFIG)
        return ["nginx", "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", conf], {}

    def check(self, params: Params, node: NodeInfo) -> str | None:
        port = int(params.get("http_port") or 80)
        url = f"http://{node.private_ip}:{port}/healthz"
        try:
            answer = httpx.get(url, timeout=5, headers={"Host": self.names(params).split()[0]})
        except httpx.HTTPError as exc:
            return f"GET {url}: {type(exc).__name__}: {exc}"
        if answer.status_code != 200:
            return f"GET {url} through nginx answered {answer.status_code}"
        return None
