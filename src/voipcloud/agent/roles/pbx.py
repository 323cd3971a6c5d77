"""`pbx` → Asterisk, installed by the operator: Debian 12 does not ship it, so this handler
installs nothing; it fails naming what to install when `asterisk` is absent.

Rendered (in the role's dir, Asterisk started with `-C <dir>/asterisk.conf`, its
directories all under the role's dir): `rtp.conf` (rtpstart/rtpend from rtp_port_min /
rtp_port_max, i.e. the RTP range of the properties), `pjsip.conf` (a UDP transport bound to
the node's private IP on port 5080 -- 5060 is the sip role's Kamailio -- with
external_media_address / external_signaling_address from customer_connectivity, else the
public IP, and local_net the private IP's /32), `asterisk.conf` (maxcalls from
max_channels), `modules.conf`, `logger.conf`.
Health: `asterisk -rx "pjsip show transports"` over its control socket names the transport.
"""

from __future__ import annotations

import shutil

from voipcloud.agent.handlers import NodeInfo
from voipcloud.agent.roles.base import Listen, Params, SoftwareRole, write_if_changed

PJSIP_PORT = 5080


class Asterisk(SoftwareRole):
    code = "pbx"
    software = "Asterisk"
    packages = ()
    binary = "asterisk"
    distro_units = ("asterisk.service",)

    def apply(self, role: str, config: Params) -> None:
        # rendered even without Asterisk, so the operator sees what it will run with
        node = self.node()
        for name, text in self.render(config, node).items():
            write_if_changed(self.dir / name, text)
        super().apply(role, config)

    def missing(self) -> str | None:
        if shutil.which(self.binary):
            return None
        return (
            "Asterisk is not installed (no asterisk on PATH) and Debian 12 does not ship it: "
            "install Asterisk 18 or newer with PJSIP (res_pjsip, chan_pjsip) yourself, e.g. "
            "built from the asterisk.org sources; the agent then renders its configuration"
        )

    def listens(self, params: Params, node: NodeInfo) -> list[Listen]:
        return [Listen("udp", str(node.private_ip), PJSIP_PORT)]

    def external(self, params: Params, node: NodeInfo) -> str | None:
        value = params.get("customer_connectivity") or node.public_ip
        return str(value) if value else None

    def render(self, params: Params, node: NodeInfo) -> dict[str, str]:
        dirs = {name: self.dir / name for name in ("etc", "run", "log", "spool", "lib", "data")}
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        asterisk_conf = "\n".join(
            [
                "; rendered by the voipcloud agent from the pbx role's parameters; do not edit",
                "[directories]",
                f"astetcdir => {self.dir}",
                "astmoddir => /usr/lib/asterisk/modules",
                f"astvarlibdir => {dirs['lib']}",
                f"astdbdir => {dirs['lib']}",
                f"astkeydir => {dirs['lib']}",
                f"astdatadir => {dirs['data']}",
                f"astspooldir => {dirs['spool']}",
                f"astrundir => {dirs['run']}",
                f"astlogdir => {dirs['log']}",
                "[options]",
                f"maxcalls = {int(params.get('max_channels') or 500)}",
                "",
            ]
        )
        rtp = "\n".join(
            [
                "; rendered by the voipcloud agent: the RTP range of the properties",
                "[general]",
                f"rtpstart={int(params['rtp_port_min'])}",
                f"rtpend={int(params['rtp_port_max'])}",
                "",
            ]
        )
        external = self.external(params, node)
        transport = [
            "; rendered by the voipcloud agent from the pbx role's parameters; do not edit",
            "[transport-udp]",
            "type=transport",
            "protocol=udp",
            f"bind={node.private_ip}:{PJSIP_PORT}",
            f"local_net={node.private_ip}/32",
        ]
        if external and external != node.private_ip:
            transport += [
                f"external_media_address={external}",
                f"external_signaling_address={external}",
            ]
        return {
            "asterisk.conf": asterisk_conf,
            "rtp.conf": rtp,
            "pjsip.conf": "\n".join(transport) + "\n",
            "modules.conf": "[modules]\nautoload=yes\nnoload=chan_sip.so\n",
            "logger.conf": "[logfiles]\nconsole => notice,warning,error\n",
        }

    def command(self, params: Params, node: NodeInfo) -> tuple[list[str], dict[str, str]]:
        return ["asterisk", "-f", "-C", str(self.dir / "asterisk.conf")], {}

    def check(self, params: Params, node: NodeInfo) -> str | None:
        answer = self.run(
            ["asterisk", "-C", str(self.dir / "asterisk.conf"), "-rx", "pjsip show transports"],
            timeout=10,
        )
        if answer.returncode != 0 or "transport-udp" not in answer.stdout:
            return f"asterisk -rx 'pjsip show transports': {(answer.stderr or answer.stdout)[:300]}"
        return None
