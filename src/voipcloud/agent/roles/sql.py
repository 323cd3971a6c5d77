"""`sql` → MariaDB (Debian `mariadb-server`), its own data dir under the agent's state dir.

Rendered from: port, max_connections, the node's private IP (bind-address only there).
After start, over its own unix socket as root: the database and the user named by the shared
SQL credentials (username, password), the user granted everything on that database from any
address; the password is set again at every apply. Health: a login over TCP at the private
IP with those credentials and `SELECT 1`. Clients always name the socket and skip option
files, so they never reach another MariaDB on the same machine.
"""

from __future__ import annotations

from voipcloud.agent.handlers import HandlerError, NodeInfo
from voipcloud.agent.roles.base import Listen, Params, SoftwareRole

CONFIG = "my.cnf"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _ident(text: str) -> str:
    return "`" + text.replace("`", "``") + "`"


class MariaDB(SoftwareRole):
    code = "sql"
    software = "MariaDB"
    packages = ("mariadb-server", "mariadb-client")
    binary = "mariadbd"
    distro_units = ("mariadb.service",)
    sockets = ("mysqld.sock",)

    def listens(self, params: Params, node: NodeInfo) -> list[Listen]:
        return [Listen("tcp", str(node.private_ip), int(params.get("port") or 3306))]

    def render(self, params: Params, node: NodeInfo) -> dict[str, str]:
        lines = [
            "# rendered by the voipcloud agent from the sql role's parameters; do not edit",
            "[mariadbd]",
            f"datadir={self.dir / 'data'}",
            f"socket={self.short_path('mysqld.sock')}",
            f"pid-file={self.dir / 'mysqld.pid'}",
            f"bind-address={node.private_ip}",
            f"port={int(params.get('port') or 3306)}",
            f"max_connections={int(params.get('max_connections') or 500)}",
            "skip-name-resolve",
            "character-set-server=utf8mb4",
        ]
        return {CONFIG: "\n".join(lines) + "\n"}

    def command(self, params: Params, node: NodeInfo) -> tuple[list[str], dict[str, str]]:
        return ["mariadbd", f"--defaults-file={self.dir / CONFIG}", "--user=root"], {}

    def prepare(self, params: Params, node: NodeInfo) -> None:
        if (self.dir / "data" / "mysql").is_dir():
            return
        made = self.run(
            [
                "mariadb-install-db",
                f"--defaults-file={self.dir / CONFIG}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            timeout=120,
        )
        if made.returncode != 0:
            raise HandlerError(
                f"sql: mariadb-install-db failed: {(made.stderr or made.stdout).strip()[-500:]}"
            )

    def _root(self, sql: str) -> tuple[bool, str]:
        answer = self.run(
            [
                "mariadb",
                "--no-defaults",
                f"--socket={self.short_path('mysqld.sock')}",
                "-u",
                "root",
                "-N",
                "-e",
                sql,
            ],
            timeout=20,
        )
        return answer.returncode == 0, (answer.stderr or answer.stdout).strip()

    def ready(self, params: Params, node: NodeInfo) -> str | None:
        ok, output = self._root("SELECT 1")
        return None if ok else f"no answer on its socket: {output[:300]}"

    def after_start(self, params: Params, node: NodeInfo) -> None:
        user, password = str(params.get("username") or ""), str(params.get("password") or "")
        if not user or not password:
            raise HandlerError("sql: the shared SQL credentials (username, password) are not set")
        statements = (
            f"CREATE DATABASE IF NOT EXISTS {_ident(user)};"
            f"CREATE USER IF NOT EXISTS {_quote(user)}@'%' IDENTIFIED BY {_quote(password)};"
            f"ALTER USER {_quote(user)}@'%' IDENTIFIED BY {_quote(password)};"
            f"GRANT ALL PRIVILEGES ON {_ident(user)}.* TO {_quote(user)}@'%';"
            "FLUSH PRIVILEGES;"
        )
        ok, output = self._root(statements)
        if not ok:
            raise HandlerError(f"sql: creating the database and user failed: {output[:500]}")

    def check(self, params: Params, node: NodeInfo) -> str | None:
        user, port = str(params.get("username") or ""), int(params.get("port") or 3306)
        answer = self.run(
            [
                "mariadb",
                "--no-defaults",
                "--protocol=TCP",
                "-h",
                str(node.private_ip),
                "-P",
                str(port),
                "-u",
                user,
                "-N",
                "-e",
                "SELECT 1",
                user,
            ],
            env={"MYSQL_PWD": str(params.get("password") or "")},
            timeout=10,
        )
        if answer.returncode == 0 and answer.stdout.strip() == "1":
            return None
        why = (answer.stderr or answer.stdout).strip()[:300]
        return f"login as {user} at {node.private_ip}:{port} and SELECT 1 failed: {why}"
