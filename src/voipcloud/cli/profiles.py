"""Stored logins ("profiles"): controller URL, username and bearer token, per profile name,
and for an https:// controller the CA pinned at login (`voipcloud login --ca-fingerprint`).

They live in one JSON file, `profiles.json`, in the user's config directory
(`$VOIPCLOUD_CONFIG_DIR`, else Typer's app dir for "voipcloud"), readable by its owner only:
the file is written 0600 (in a 0700 directory) through a temporary file and an atomic rename,
so a crash never leaves a half-written or world-readable token behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CONFIG_DIR_ENV = "VOIPCLOUD_CONFIG_DIR"
PROFILE_ENV = "VOIPCLOUD_PROFILE"
DEFAULT_PROFILE = "default"
FILE_NAME = "profiles.json"
FILE_MODE = 0o600
DIR_MODE = 0o700


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    controller: str
    username: str
    token: str
    expires_at: float | None = None  # epoch seconds, as the controller announced it
    # https: the controller's CA pinned at login (PEM), and its fingerprint(s); None when the
    # controller is plain http or its certificate verifies against the system's CAs
    ca_pem: str | None = None
    ca_fingerprint: str | None = None

    def public(self) -> dict[str, Any]:
        """What `voipcloud profiles` shows: everything but the token (and the CA's PEM)."""
        data = asdict(self)
        data.pop("token")
        data.pop("ca_pem")
        return data

    def verify(self) -> Any:
        """What the HTTP client verifies the controller with: the pinned CA only, else the
        system's CAs (True)."""
        if not self.ca_pem:
            return True
        from voipcloud.agent.trust import client_context

        return client_context(self.ca_pem)


def config_dir() -> Path:
    configured = os.environ.get(CONFIG_DIR_ENV)
    if configured:
        return Path(configured)
    import typer

    return Path(typer.get_app_dir("voipcloud"))


class ProfileStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls) -> ProfileStore:
        return cls(config_dir() / FILE_NAME)

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            return {}  # a damaged file counts as "no login"; the next login rewrites it
        profiles = data.get("profiles") if isinstance(data, dict) else None
        return profiles if isinstance(profiles, dict) else {}

    def all(self) -> list[Profile]:
        found = []
        for name, entry in sorted(self._read().items()):
            with contextlib.suppress(TypeError, KeyError):
                found.append(Profile(name=name, **{k: entry[k] for k in _FIELDS if k in entry}))
        return found

    def get(self, name: str) -> Profile | None:
        return next((p for p in self.all() if p.name == name), None)

    def save(self, profile: Profile) -> None:
        profiles = self._read()
        entry = asdict(profile)
        entry.pop("name")
        profiles[profile.name] = entry
        self._write(profiles)

    def remove(self, name: str) -> bool:
        profiles = self._read()
        if profiles.pop(name, None) is None:
            return False
        self._write(profiles)
        return True

    def _write(self, profiles: dict[str, Any]) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        payload = json.dumps({"profiles": profiles}, indent=2, sort_keys=True) + "\n"
        # mkstemp creates the file 0600 from the start: the token is never readable by others
        handle, temporary = tempfile.mkstemp(prefix=".profiles-", dir=directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(payload)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, FILE_MODE)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


_FIELDS = ("controller", "username", "token", "expires_at", "ca_pem", "ca_fingerprint")
