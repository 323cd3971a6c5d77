"""Password hashes: argon2id with the argon2-cffi library's current parameters.

A stored hash made with other parameters (an older library, or changed defaults) still
verifies; `needs_rehash` tells the login to store a new one (services/auth.py).
"""

from __future__ import annotations

import secrets
import threading
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile of the library's version


@cache
def dummy_hash() -> str:
    """A hash of no one's password: verifying against it keeps the time of an unknown-user
    answer equal to a known one. Made once a process, on first use or by `warm_up`, not at
    import: one argon2 hash (~0.14 s) every command and controller start paid before."""
    return _hasher.hash(secrets.token_urlsafe(16))


def warm_up() -> None:
    """Make `dummy_hash` in the background (argon2 runs outside the interpreter's lock), so
    that a serving controller's first unknown-user login is no slower than the next ones."""
    threading.Thread(target=dummy_hash, name="dummy-hash", daemon=True).start()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return False
