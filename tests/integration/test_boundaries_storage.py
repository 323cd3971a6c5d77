"""Storage containment over real HTTP, on SQLite and PostgreSQL (issue 12, item 1).

A local storage directory is never the data dir, inside it (but for its storage area), a
parent of it, a system directory, or shared with another kind (equal, inside or containing).
The rule holds at save (422 naming the field and the reason) and again at use, with symbolic
links resolved (409 `storage-path-not-allowed`). Resources are served as attachments, with
nosniff, and as application/octet-stream unless their type is on the safe list.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import LiveApi

API = "/api/v1"
KINDS = ("faxes", "recordings", "voicemail")


def local(kind: str, path: Path | str) -> dict[str, Any]:
    return {kind: {"backend": "local", "local": {"path": str(path)}}}


def refused_at_save(client: httpx.Client, body: dict[str, Any], kind: str, reason: str) -> None:
    """Both PUT /storage and the probe of unsaved settings refuse it, naming field and reason."""
    for answer in (
        client.put(f"{API}/storage", json=body),
        client.post(f"{API}/storage/test", json={"config": body}),
    ):
        assert answer.status_code == 422, answer.text
        detail = answer.json()["detail"]
        assert [e["loc"] for e in detail] == [["body", kind, "local", "path"]], detail
        assert reason in detail[0]["msg"], detail[0]["msg"]


def configured_paths(client: httpx.Client) -> dict[str, str]:
    config = client.get(f"{API}/storage").json()
    return {kind: config[kind]["local"]["path"] for kind in KINDS}


def check_places_around_the_data_dir_are_refused(api: LiveApi, tmp_path: Path) -> None:
    client = api.client
    data_dir = Path(api.settings.data_dir).resolve()
    before = configured_paths(client)
    refused_at_save(client, local("faxes", data_dir), "faxes", "is the controller's data direct")
    refused_at_save(client, local("faxes", f"{data_dir}/"), "faxes", "is the controller's")
    refused_at_save(client, local("faxes", data_dir / "x" / ".."), "faxes", "is the controller")
    refused_at_save(client, local("recordings", data_dir / "keys"), "recordings", "is inside")
    refused_at_save(client, local("voicemail", tmp_path), "voicemail", "contains the controller")
    refused_at_save(client, local("voicemail", "/"), "voicemail", "contains the controller")
    # the storage area itself would hold every kind's default directory
    refused_at_save(client, local("faxes", data_dir / "storage"), "faxes", "is inside the contr")
    refused_at_save(client, local("faxes", "/etc/voipcloud"), "faxes", "system directory /etc")
    refused_at_save(client, local("faxes", "/proc/self"), "faxes", "system directory /proc")
    # a symbolic link that already exists at save is resolved
    link = tmp_path / "innocent-looking"
    link.symlink_to(data_dir)
    refused_at_save(client, local("faxes", link), "faxes", f"resolves to {data_dir}")
    assert configured_paths(client) == before  # nothing was saved


def check_kinds_never_share_a_directory(api: LiveApi, tmp_path: Path) -> None:
    client = api.client
    defaults = configured_paths(client)
    # equal to another kind's (default) directory
    refused_at_save(client, local("voicemail", defaults["recordings"]), "voicemail", "is the local")
    # inside another kind's directory, or containing it
    refused_at_save(
        client, local("voicemail", Path(defaults["recordings"]) / "vm"), "voicemail", "is inside"
    )
    shared = tmp_path / "shared"
    assert client.put(f"{API}/storage", json=local("faxes", shared / "faxes")).status_code == 200
    refused_at_save(client, local("recordings", shared), "recordings", "contains the local dir")
    # both at once, in one request, either way round
    both = {**local("recordings", shared / "x"), **local("voicemail", shared / "x")}
    answer = client.put(f"{API}/storage", json=both)
    assert answer.status_code == 422, answer.text
    assert {tuple(e["loc"]) for e in answer.json()["detail"]} == {
        ("body", "recordings", "local", "path"),
        ("body", "voicemail", "local", "path"),
    }
    # swapping two directories in one request is fine: the rule sees the whole new layout
    swap = {**local("faxes", defaults["recordings"]), **local("recordings", shared / "faxes")}
    assert client.put(f"{API}/storage", json=swap).status_code == 200, swap
    # allowed: a directory of its own outside the data dir, or in the storage area
    data_dir = Path(api.settings.data_dir).resolve()
    ok = local("voicemail", data_dir / "storage" / "vm-own")
    assert client.put(f"{API}/storage", json=ok).status_code == 200


def check_a_symbolic_link_made_after_save_is_refused_at_use(api: LiveApi, tmp_path: Path) -> None:
    client = api.client
    data_dir = Path(api.settings.data_dir).resolve()
    key_file = data_dir / "secret.key"
    key_before = key_file.read_bytes()
    faxes_dir = tmp_path / "faxes-later"
    assert client.put(f"{API}/storage", json=local("faxes", faxes_dir)).status_code == 200
    faxes_dir.symlink_to(data_dir)  # after save: the disk changed under the configuration
    answer = client.put(f"{API}/storage/faxes/resources/secret.key", content=b"overwritten")
    assert answer.status_code == 409, answer.text
    assert answer.json()["rule"] == "storage-path-not-allowed"
    assert f"resolves to {data_dir}" in answer.json()["detail"]
    probe = client.post(f"{API}/storage/test", json={"kinds": ["faxes"]}).json()
    assert probe["ok"] is False
    assert probe["results"][0]["reason"] == "path-not-allowed"
    assert key_file.read_bytes() == key_before
    # the link also makes faxes overlap every kind in the storage area: they stop too
    blocked = client.put(f"{API}/storage/recordings/resources/call.wav", content=b"RIFF call")
    assert blocked.status_code == 409, blocked.text
    assert "is inside the local directory of faxes" in blocked.json()["detail"]
    faxes_dir.unlink()
    # the same when a directory becomes a link into another kind's directory
    recordings = Path(configured_paths(client)["recordings"])
    stored = client.put(f"{API}/storage/recordings/resources/call.wav", content=b"RIFF call")
    assert stored.status_code == 200, stored.text
    vm_dir = tmp_path / "vm-later"
    assert client.put(f"{API}/storage", json=local("voicemail", vm_dir)).status_code == 200
    vm_dir.symlink_to(recordings)
    answer = client.put(f"{API}/storage/voicemail/resources/call.wav", content=b"voicemail")
    assert answer.status_code == 409, answer.text
    assert "is the local directory of recordings" in answer.json()["detail"]
    # while two kinds share bytes neither is trusted; once the link is gone, all is served
    assert client.get(f"{API}/storage/recordings/resources/call.wav").status_code == 409
    vm_dir.unlink()
    assert client.get(f"{API}/storage/recordings/resources/call.wav").content == b"RIFF call"


def check_a_link_inside_the_directory_cannot_lead_out(api: LiveApi, tmp_path: Path) -> None:
    client = api.client
    data_dir = Path(api.settings.data_dir).resolve()
    own = tmp_path / "faxes-own"
    assert client.put(f"{API}/storage", json=local("faxes", own)).status_code == 200
    own.mkdir()
    (own / "evil").symlink_to(data_dir)
    answer = client.put(f"{API}/storage/faxes/resources/evil/secret.key", content=b"x")
    assert answer.status_code == 409, answer.text
    assert answer.json()["rule"] == "storage-path-not-allowed"
    assert (data_dir / "secret.key").read_bytes() != b"x"


def check_resources_are_served_as_inert_attachments(api: LiveApi) -> None:
    client = api.client
    page = b"<html><script>alert(document.cookie)</script></html>"
    cases = {
        "text/html": "application/octet-stream",
        "image/svg+xml": "application/octet-stream",
        "application/javascript": "application/octet-stream",
        "audio/wav": "audio/wav",
        "Audio/WAV; rate=8000": "audio/wav",
        "application/pdf": "application/pdf",
        "image/tiff": "image/tiff",
    }
    for number, (uploaded, served) in enumerate(cases.items()):
        key = f"1001/item-{number}.bin"
        put = client.put(
            f"{API}/storage/voicemail/resources/{key}",
            content=page,
            headers={"Content-Type": uploaded},
        )
        assert put.status_code == 200, put.text
        got = client.get(f"{API}/storage/voicemail/resources/{key}")
        assert got.status_code == 200
        assert got.headers["content-type"] == served, (uploaded, got.headers)
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-disposition"] == f'attachment; filename="item-{number}.bin"'
        assert got.content == page
        assert got.headers["x-checksum-sha256"] == hashlib.sha256(page).hexdigest()


def test_storage_directories_stay_contained(api: LiveApi, tmp_path: Path) -> None:
    check_places_around_the_data_dir_are_refused(api, tmp_path)
    check_kinds_never_share_a_directory(api, tmp_path)


def test_the_disk_is_checked_again_at_use(api: LiveApi, tmp_path: Path) -> None:
    check_a_symbolic_link_made_after_save_is_refused_at_use(api, tmp_path)
    check_a_link_inside_the_directory_cannot_lead_out(api, tmp_path)
    check_resources_are_served_as_inert_attachments(api)
