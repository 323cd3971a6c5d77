"""The key file: created once, 0600, and never seen half-written by a concurrent start."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest

from voipcloud.services.secrets_box import KEY_FILE, SecretBox


def _start(data_dir: str, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        box = SecretBox.in_data_dir(Path(data_dir))
        results.put(box.digest("probe"))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(f"error: {exc!r}")


def test_key_is_private_and_stable(tmp_path: Path) -> None:
    first = SecretBox.in_data_dir(tmp_path)
    mode = stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode)
    assert mode == 0o600
    again = SecretBox.in_data_dir(tmp_path)
    token = first.encrypt("session-key")
    assert again.decrypt(token) == "session-key"
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temporary file left


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    for round_number in range(5):
        data_dir = tmp_path / f"round-{round_number}"
        results: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
        starts = [context.Process(target=_start, args=(str(data_dir), results)) for _ in range(4)]
        for process in starts:
            process.start()
        for process in starts:
            process.join(timeout=60)
        digests = [results.get(timeout=10) for _ in starts]
        assert not [d for d in digests if d.startswith("error")], digests
        assert len(set(digests)) == 1, digests


def test_a_new_key_is_written_only_over_an_empty_database(tmp_path: Path) -> None:
    from voipcloud.services.secrets_box import KeyMissing

    first = SecretBox.opened_in_data_dir(tmp_path)
    second = SecretBox.opened_in_data_dir(tmp_path)
    assert not (tmp_path / KEY_FILE).exists()  # nothing written before the database is known
    with pytest.raises(KeyMissing, match=str(tmp_path / KEY_FILE)):
        first.settle(data_found="1 nodes")
    assert not (tmp_path / KEY_FILE).exists()
    first.settle(data_found=None)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    second.settle(data_found=None)  # a concurrent first start takes the key written first
    assert second.fingerprint == first.fingerprint
    assert second.decrypt(first.encrypt("x")) == "x"
