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


class KeyMissing(OSError):
    """The database holds data sealed with a key that is not in the data dir."""


def key_fingerprint(key: bytes) -> str:
    """Names a key without revealing it (backups record it; restore compares it)."""
    digest = hashlib.sha256(b"voipcloud-key-fingerprint:" + key.strip()).hexdigest()
    return f"sha256:{digest[:32]}"


def _link_new_key(path: Path, key: bytes) -> None:
    """Write `key` to `path` (0600) unless a key is there already: a private temporary file
    linked into place, so two processes starting at once never see a half-written key."""
    fd, temporary = tempfile.mkstemp(prefix=".secret-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_key(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path.read_bytes().strip()


class SecretBox:
    def __init__(self, key: bytes, *, unsaved_path: Path | None = None) -> None:
        self._use(key)
        # a key made in memory for a first start: written by settle(), never over data
        self.unsaved_path = unsaved_path

    def _use(self, key: bytes) -> None:
        self._key = key.strip()
        self._fernet = Fernet(self._key)
        self._mac_key = hashlib.sha256(b"voipcloud-digest:" + self._key).digest()

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self._key)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SecretBox:
        """Load the key, or create it with 0600 permissions (tools and tests; the controller
        uses `opened_in_data_dir` and `settle`, which never put a new key over data)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / KEY_FILE
        if not path.exists():
            _link_new_key(path, Fernet.generate_key())
        return cls(read_key(path))

    @classmethod
    def opened_in_data_dir(cls, data_dir: Path) -> SecretBox:
        """The key of the data dir; when there is none yet, a new one kept in memory until
        `settle` knows whether the database is empty."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / KEY_FILE
        if path.exists():
            return cls(read_key(path))
        return cls(Fernet.generate_key(), unsaved_path=path)

    def settle(self, *, data_found: str | None) -> None:
        """Before first use: write a new key, or take the one another process wrote in the
        meantime. `data_found` says what the database already holds (None: it is empty);
        then a missing key is refused, never replaced by a new one."""
        path = self.unsaved_path
        if path is None:
            return
        if not path.exists():
            if data_found is not None:
                raise KeyMissing(
                    f"the encryption key {path} is missing, but the database already holds "
                    f"data sealed with it ({data_found}). Refusing to start with a new key: "
                    "session keys and secret parameters would read as empty. Put the original "
                    f"secret.key back at {path} (mode 0600), or restore a backup with "
                    "`voipcloud restore FILE` (it holds the key)."
                )
            _link_new_key(path, self._key)
        self._use(read_key(path))  # ours, or the key a concurrent first start linked first
        self.unsaved_path = None

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
