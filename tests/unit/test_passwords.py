"""The password hashes' module: the unknown-user hash is made once, lazily, and verifies
like any stored hash (services/passwords.py)."""

from __future__ import annotations

import subprocess
import sys

from voipcloud.services import passwords


def test_the_dummy_hash_is_one_argon2id_hash_per_process_that_no_password_matches() -> None:
    first = passwords.dummy_hash()
    assert first.startswith("$argon2id$")
    assert passwords.dummy_hash() is first  # made once
    assert not passwords.verify(first, "")
    assert not passwords.verify(first, "admin")
    assert not passwords.needs_rehash(first)  # today's parameters: as slow as a stored hash


def test_importing_the_module_hashes_nothing() -> None:
    """A command or a controller start no longer pays one argon2 hash at import: the module
    imported in a fresh interpreter has not made the dummy hash (and the sibling: a warm-up
    makes it, in the background)."""
    code = (
        "from voipcloud.services import passwords\n"
        "assert passwords.dummy_hash.cache_info().currsize == 0\n"
        "passwords.warm_up()\n"
        "import threading\n"
        "[t.join() for t in threading.enumerate() if t.name == 'dummy-hash']\n"
        "assert passwords.dummy_hash.cache_info().currsize == 1\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
