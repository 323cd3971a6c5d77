"""One controller per data dir: `voipcloud serve` holds an exclusive lock on
DATA_DIR/controller.lock for its lifetime, and `voipcloud restore` takes the same lock, so a
restore never overwrites the files of a running controller (nor does one start mid-restore).

The lock is `flock`: the kernel drops it when the process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_FILE = "controller.lock"
_held: list[IO[str]] = []  # the serving process's lock, open until it exits


class AlreadyRunning(OSError):
    """Another process holds the data dir."""


def acquire(data_dir: Path, *, purpose: str = "serve") -> IO[str]:
    """The data dir's lock, held until the returned file is closed; AlreadyRunning if taken."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    handle = path.open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise AlreadyRunning(
            f"{holder} holds {path.resolve()}: a voipcloud controller (or a restore) is running "
            "on this data dir; stop it first"
        ) from None
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"voipcloud {purpose} (pid {os.getpid()})\n")
    handle.flush()
    return handle


def hold_for_process(data_dir: Path) -> None:
    """`voipcloud serve`: take the lock and keep it until the process exits."""
    _held.append(acquire(data_dir, purpose="serve"))


def held_fileno() -> int | None:
    """The descriptor of this process's serving lock: `serve --workers` passes it to its
    workers, so the data dir stays locked while any of them lives (flock follows the open
    file, shared by every process that inherited it)."""
    return _held[-1].fileno() if _held else None


def release(handle: IO[str]) -> None:
    with contextlib.suppress(OSError):
        handle.seek(0)
        handle.truncate()
    handle.close()
