"""A local write and a delete that empties the same directory, at the same time.

A delete removes the directories it leaves empty. A write creates its directory, then its file:
a delete in between (another request, another of a migration's threads, another worker) removed
the directory and the write failed ("File exists" or "No such file"). Seen in a migration from
S3 to local: one file's unverified copy was deleted while the next file of the same directory
was written, and a good file was counted as failed.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from voipcloud.domain.storage import BackendFailure, ResourceKind
from voipcloud.services import storage_backends
from voipcloud.services.storage_backends import LocalBackend


def put(backend: LocalBackend, key: str, data: bytes) -> None:
    backend.put(key, io.BytesIO(data), size=len(data), content_type="audio/wav")


def parts_left(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


def test_the_directory_removed_after_it_was_made_and_before_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalBackend(tmp_path / "voicemail", kind=ResourceKind.VOICEMAIL)
    real_open = os.open
    removed: list[Path] = []

    def open_after_a_delete(path: str | Path, flags: int, mode: int = 0o777) -> int:
        parent = Path(path).parent
        if not removed:  # what a delete's pruning does between the two steps
            parent.rmdir()
            removed.append(parent)
        return real_open(path, flags, mode)

    monkeypatch.setattr(storage_backends.os, "open", open_after_a_delete)
    put(backend, "1001/good.wav", b"good")
    assert removed == [tmp_path / "voicemail" / "1001"]
    assert (tmp_path / "voicemail" / "1001" / "good.wav").read_bytes() == b"good"
    assert not parts_left(tmp_path)


def test_the_directory_removed_while_it_was_being_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mkdir finds the directory there, then sees it gone: the error of the failed run."""
    backend = LocalBackend(tmp_path / "voicemail", kind=ResourceKind.VOICEMAIL)
    put(backend, "1001/bad.wav", b"bad")  # the directory exists
    target = tmp_path / "voicemail" / "1001"
    real_mkdir = os.mkdir
    removed: list[Path] = []

    def mkdir_while_a_delete_prunes(path: str | Path, mode: int = 0o777) -> None:
        try:
            real_mkdir(path, mode)
        except FileExistsError:
            if Path(path) == target and not removed:
                (target / "bad.wav").unlink()
                target.rmdir()
                removed.append(target)
            raise

    monkeypatch.setattr(os, "mkdir", mkdir_while_a_delete_prunes)
    put(backend, "1001/good.wav", b"good")
    assert removed == [target]
    assert sorted(p.name for p in target.iterdir()) == ["good.wav"]


def test_writes_and_deletes_in_one_directory_from_two_threads(tmp_path: Path) -> None:
    """The real race, bounded: one thread writes and deletes its files in a directory the other
    empties again and again. Every write must land."""
    backend = LocalBackend(tmp_path / "faxes", kind=ResourceKind.FAXES)
    rounds = 400
    failures: list[BaseException] = []

    def churn(name: str) -> None:
        try:
            for i in range(rounds):
                key = f"shared/deeper/{name}-{i}"
                put(backend, key, name.encode())
                assert (tmp_path / "faxes" / key).read_bytes() == name.encode()
                backend.delete(key)
        except BaseException as exc:  # reported below, with the round it failed in
            failures.append(exc)

    threads = [threading.Thread(target=churn, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not [t for t in threads if t.is_alive()]
    assert failures == []
    assert not (tmp_path / "faxes" / "shared").exists()  # the last delete pruned it
    assert not parts_left(tmp_path)


def test_a_file_where_a_directory_should_be_still_fails_at_once(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "faxes", kind=ResourceKind.FAXES)
    put(backend, "clash", b"a file")
    with pytest.raises(BackendFailure) as failure:
        put(backend, "clash/inner", b"x")
    assert "Check that the directory exists" in str(failure.value)
    assert (tmp_path / "faxes" / "clash").read_bytes() == b"a file"
    assert not parts_left(tmp_path)
