"""`que` → RabbitMQ (Debian `rabbitmq-server`), its own node under the agent's state dir.

Rendered from: port and the node's private IP (the only AMQP listener). Its node name,
Mnesia dir, logs, configuration, plugins file and Erlang cookie (HOME) all live in the
role's dir, so a RabbitMQ the machine already runs elsewhere is never touched (epmd is per
network namespace). After start, with `rabbitmqctl`: the virtual host and the user named by
the shared queue credentials (username, password), the user given every permission on it,
the password set again at every apply, and the default `guest` user removed.
Health: `rabbitmq-diagnostics -q ping` and an AMQP 0-9-1 login to that virtual host with
those credentials.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from voipcloud.agent.handlers import HandlerError, NodeInfo
from voipcloud.agent.roles.base import Listen, Params, SoftwareRole

CONFIG = "rabbitmq.conf"
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def _tool(name: str) -> str:
    return str(RABBIT_BIN / name) if (RABBIT_BIN / name).exists() else name


def _shortstr(text: str) -> bytes:
    data = text.encode()
    return struct.pack("B", len(data)) + data


def _longstr(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _method(channel: int, class_id: int, method_id: int, args: bytes) -> bytes:
    payload = struct.pack(">HH", class_id, method_id) + args
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


def _read_method(sock: socket.socket) -> tuple[int, int, bytes]:
    header = _recv_exact(sock, 7)
    kind, _channel, size = struct.unpack(">BHI", header)
    payload = _recv_exact(sock, size + 1)[:-1]
    if kind != 1:
        return 0, 0, payload
    class_id, method_id = struct.unpack(">HH", payload[:4])
    return class_id, method_id, payload[4:]


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("the server closed the connection")
        data += chunk
    return data


def amqp_login(
    address: str, port: int, user: str, password: str, vhost: str, timeout: float = 5
) -> None:
    """Open an AMQP 0-9-1 connection to `vhost` (PLAIN login) and close it; OSError or
    PermissionError with the server's words when refused."""
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        class_id, method_id, _ = _read_method(sock)
        if (class_id, method_id) != (10, 10):
            raise OSError("no Connection.Start from the server")
        response = b"\x00" + user.encode() + b"\x00" + password.encode()
        # capabilities.authentication_failure_close: a refused login is a Connection.Close
        # with ACCESS_REFUSED instead of a bare disconnect
        capability = _shortstr("authentication_failure_close") + b"t\x01"
        properties = _shortstr("capabilities") + b"F" + _longstr(capability)
        start_ok = (
            _longstr(properties) + _shortstr("PLAIN") + _longstr(response) + _shortstr("en_US")
        )
        sock.sendall(_method(0, 10, 11, start_ok))
        class_id, method_id, args = _read_method(sock)
        if (class_id, method_id) == (10, 50):  # Connection.Close: refused
            code = struct.unpack(">H", args[:2])[0]
            text = args[3 : 3 + args[2]].decode(errors="replace")
            raise PermissionError(f"{code} {text}")
        if (class_id, method_id) != (10, 30):
            raise OSError("no Connection.Tune from the server")
        channel_max, frame_max, _heartbeat = struct.unpack(">HIH", args[:8])
        sock.sendall(_method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
        sock.sendall(_method(0, 10, 40, _shortstr(vhost) + _shortstr("") + b"\x00"))
        class_id, method_id, args = _read_method(sock)
        if (class_id, method_id) == (10, 50):
            code = struct.unpack(">H", args[:2])[0]
            text = args[3 : 3 + args[2]].decode(errors="replace")
            raise PermissionError(f"{code} {text}")
        if (class_id, method_id) != (10, 41):
            raise OSError("no Connection.OpenOk from the server")
        sock.sendall(_method(0, 10, 50, struct.pack(">H", 200) + _shortstr("bye") + b"\0\0\0\0"))


class RabbitMQ(SoftwareRole):
    code = "que"
    software = "RabbitMQ"
    packages = ("rabbitmq-server",)
    binary = "rabbitmq-server"
    distro_units = ("rabbitmq-server.service",)

    def listens(self, params: Params, node: NodeInfo) -> list[Listen]:
        return [Listen("tcp", str(node.private_ip), int(params.get("port") or 5672))]

    def render(self, params: Params, node: NodeInfo) -> dict[str, str]:
        port = int(params.get("port") or 5672)
        config = "\n".join(
            [
                "# rendered by the voipcloud agent from the que role's parameters; do not edit",
                f"listeners.tcp.1 = {node.private_ip}:{port}",
                "loopback_users = none",
                "",
            ]
        )
        return {CONFIG: config, "enabled_plugins": "[].\n", "rabbitmq-env.conf": ""}

    def environment(self) -> dict[str, str]:
        return {
            "HOME": str(self.dir),  # its Erlang cookie
            "RABBITMQ_NODENAME": "voipcloud-que@localhost",
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
        }

    def command(self, params: Params, node: NodeInfo) -> tuple[list[str], dict[str, str]]:
        return [_tool("rabbitmq-server")], self.environment()

    def _ctl(self, *args: str) -> tuple[bool, str]:
        answer = self.run([_tool("rabbitmqctl"), "-q", *args], env=self.environment(), timeout=60)
        return answer.returncode == 0, (answer.stderr or answer.stdout).strip()

    def ready(self, params: Params, node: NodeInfo) -> str | None:
        """Ping, then the rabbit application itself (it answers pings before it runs)."""
        problem = self.ping()
        if problem:
            return problem
        running = self.run(
            [_tool("rabbitmq-diagnostics"), "-q", "check_running"],
            env=self.environment(),
            timeout=20,
        )
        if running.returncode != 0:
            return f"RabbitMQ not running yet: {(running.stderr or running.stdout).strip()[:200]}"
        return None

    def ping(self) -> str | None:
        ping = self.run(
            [_tool("rabbitmq-diagnostics"), "-q", "ping"], env=self.environment(), timeout=20
        )
        if ping.returncode != 0:
            return f"rabbitmq-diagnostics ping failed: {(ping.stderr or ping.stdout).strip()[:300]}"
        return None

    def after_start(self, params: Params, node: NodeInfo) -> None:
        user, password = str(params.get("username") or ""), str(params.get("password") or "")
        if not user or not password:
            raise HandlerError("que: the shared queue credentials (username, password) are not set")
        ok, users = self._ctl("list_users")
        known = {line.split()[0] for line in users.splitlines() if line.strip()} if ok else set()
        steps: list[tuple[str, ...]] = [("add_vhost", user)]
        if user in known:
            steps.append(("change_password", user, password))
        else:
            steps.append(("add_user", user, password))
        steps.append(("set_permissions", "-p", user, user, ".*", ".*", ".*"))
        if "guest" in known and user != "guest":
            steps.append(("delete_user", "guest"))
        for step in steps:
            ok, output = self._ctl(*step)
            if not ok and "already exists" not in output:
                raise HandlerError(f"que: rabbitmqctl {step[0]} failed: {output[:400]}")

    def check(self, params: Params, node: NodeInfo) -> str | None:
        problem = self.ping()
        if problem:
            return problem
        user, port = str(params.get("username") or ""), int(params.get("port") or 5672)
        try:
            amqp_login(str(node.private_ip), port, user, str(params.get("password") or ""), user)
        except (OSError, struct.error) as exc:
            return f"AMQP login as {user} to vhost {user} at {node.private_ip}:{port}: {exc}"
        return None
