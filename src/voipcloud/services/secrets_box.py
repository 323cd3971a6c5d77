"""Secrets at rest: a Fernet key in the data dir (0600) encrypts them; an HMAC finds them.

Session keys are 192-bit random tokens. The controller stores them encrypted (so the
administrator can read them back in Quick info) and as a keyed digest (so an agent's key is
looked up without decrypting every row).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "secret.key"
SESSION_KEY_BYTES = 24  # 192 bits
# how an encrypted value is stored in a JSON column (role parameters, Infrastructure Properties)
ENCRYPTED = "$encrypted"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._mac_key = hashlib.sha256(b"voipcloud-digest:" + key).digest()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SecretBox:
        """Load the key, or create it with 0600 permissions on first start.

        The key is written to a private temporary file and then linked into place, so two
        processes starting at once never see a half-written key: one link wins, and the
        other reads the winner's key.
        """
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / KEY_FILE
        if not path.exists():
            fd, temporary = tempfile.mkstemp(prefix=".secret-", dir=data_dir)  # mode 0600
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(Fernet.generate_key())
                    handle.flush()
                    os.fsync(handle.fileno())
                with contextlib.suppress(FileExistsError):
                    os.link(temporary, path)
            finally:
                os.unlink(temporary)
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return cls(path.read_bytes().strip())

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, token: bytes) -> str | None:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            return None

    def digest(self, value: str) -> str:
        return hmac.new(self._mac_key, value.encode(), hashlib.sha256).hexdigest()


def seal(box: SecretBox, values: dict[str, Any], *, secret: frozenset[str]) -> dict[str, Any]:
    """Values ready to store: the ones named in `secret` encrypted at rest."""
    return {
        name: {ENCRYPTED: box.encrypt(str(value)).decode()}
        if name in secret and value is not None
        else value
        for name, value in values.items()
    }


def unseal(box: SecretBox, stored: dict[str, Any]) -> dict[str, Any]:
    """Stored values with the encrypted ones decrypted."""
    return {
        name: box.decrypt(value[ENCRYPTED].encode())
        if isinstance(value, dict) and ENCRYPTED in value
        else value
        for name, value in stored.items()
    }


def new_session_key() -> str:
    return secrets.token_urlsafe(SESSION_KEY_BYTES)


def token_digest(token: str) -> str:
    """Unkeyed digest for high-entropy bearer tokens (they are random, not guessable)."""
    return hashlib.sha256(token.encode()).hexdigest()
