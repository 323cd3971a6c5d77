"""A real `moto_server` process on 127.0.0.1: the S3-compatible store the storage tests use.

`moto_server` accepts any credentials unless its authentication checks are on. The
`authenticating` variant starts with `INITIAL_NO_AUTH_ACTION_COUNT` set to exactly the number
of setup requests it makes itself (create an IAM user, its access key and policy, and the
bucket); from then on moto verifies every signature and IAM permission, so a wrong secret key
gets `SignatureDoesNotMatch` and an unknown access key `InvalidAccessKeyId`, as AWS answers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from tests.support.server import free_port

REGION = "us-east-1"
ANY_KEY = "AKIAANYTHINGGOES0000"
ANY_SECRET = "any-secret-moto-accepts-without-auth"
# create_user, create_access_key, put_user_policy, create_bucket, and an outsider: create_user,
# create_access_key (no policy: every S3 call of that key is denied)
_SETUP_REQUESTS = 6


@dataclass
class MotoServer:
    endpoint_url: str
    process: subprocess.Popen[bytes]
    access_key_id: str = ANY_KEY
    secret_access_key: str = ANY_SECRET
    bucket: str | None = None
    outsider_key: tuple[str, str] | None = None  # an access key with no permission at all

    def client(self, **overrides: Any) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=overrides.get("access_key_id", self.access_key_id),
            aws_secret_access_key=overrides.get("secret_access_key", self.secret_access_key),
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


def moto_executable() -> str:
    found = Path(sys.executable).with_name("moto_server")
    if not found.exists():
        raise RuntimeError(f"moto_server is not installed beside {sys.executable}")
    return str(found)


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with status {process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"moto_server did not listen on 127.0.0.1:{port} within {timeout} s")


@contextmanager
def moto_server(log_dir: Path, *, authenticating: bool = False) -> Iterator[MotoServer]:
    """Start `moto_server -H 127.0.0.1 -p <free port>`; stop it on exit."""
    port = free_port()
    env = {**os.environ, "AWS_DEFAULT_REGION": REGION}
    if authenticating:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_SETUP_REQUESTS)
    else:
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"moto-{port}.log").open("ab") as log:
        process = subprocess.Popen(
            [moto_executable(), "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_listening(port, process)
        server = MotoServer(endpoint_url=f"http://127.0.0.1:{port}", process=process)
        if authenticating:
            _create_authenticated_user(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _create_authenticated_user(server: MotoServer) -> None:
    """The setup requests moto lets through before it starts checking credentials."""
    iam = boto3.client(
        "iam",
        endpoint_url=server.endpoint_url,
        region_name=REGION,
        aws_access_key_id=ANY_KEY,
        aws_secret_access_key=ANY_SECRET,
        config=Config(retries={"max_attempts": 1}),
    )
    iam.create_user(UserName="voipcloud")
    key = iam.create_access_key(UserName="voipcloud")["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(
        UserName="voipcloud", PolicyName="s3-all", PolicyDocument=json.dumps(policy)
    )
    server.access_key_id = key["AccessKeyId"]
    server.secret_access_key = key["SecretAccessKey"]
    server.bucket = server.create_bucket("voipcloud-auth")
    iam.create_user(UserName="outsider")
    outsider = iam.create_access_key(UserName="outsider")["AccessKey"]
    server.outsider_key = (outsider["AccessKeyId"], outsider["SecretAccessKey"])


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """An HTTP endpoint that accepts connections and never answers: S3 timing out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()
