"""Storage Configuration and the resource store over HTTP, on SQLite and PostgreSQL, against a
real `moto_server` process (plain, and one that checks credentials)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import LiveApi, login, make_settings
from tests.support.moto import MotoServer, moto_server, silent_endpoint
from tests.support.server import free_port, serve_in_thread
from voipcloud.api.app import create_app

MiB = 1024 * 1024
KINDS = ("faxes", "recordings", "voicemail")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def moto_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto-auth"), authenticating=True) as server:
        yield server


@contextmanager
def live_storage_api(tmp_path: Path, database_url: str) -> Iterator[LiveApi]:
    """The app with its default body limit (1 MiB: resources stream past it) and a 16 MiB
    limit per stored resource, so the upload limit can be shown cheaply."""
    settings = make_settings(tmp_path, database_url, max_upload_bytes=16 * MiB)
    with serve_in_thread(create_app(settings)) as base_url:
        client = login(base_url)
        try:
            yield LiveApi(base_url=base_url, client=client, settings=settings)
        finally:
            client.close()


@pytest.fixture
def storage_api(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveApi]:
    monkeypatch.setenv("VOIPCLOUD_STORAGE_TIMEOUT", "0.5")  # the timeout case stays short
    with live_storage_api(tmp_path, database_url) as api:
        yield api


def s3_config(server: MotoServer, bucket: str, **overrides: Any) -> dict[str, Any]:
    return {
        "backend": "s3",
        "s3": {
            "bucket": bucket,
            "region": "us-east-1",
            "endpoint_url": server.endpoint_url,
            "prefix": "pbx",
            "access_key_id": server.access_key_id,
            "secret_access_key": server.secret_access_key,
            "server_side_encryption": True,
            **overrides,
        },
    }


def unique_bucket(server: MotoServer, name: str) -> str:
    return server.create_bucket(f"{name}-{os.urandom(4).hex()}")


def ok(answer: Any, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json() if answer.content else None


# --- configuration ------------------------------------------------------------------------


def check_default_is_local_storage_under_the_data_dir(storage_api: LiveApi) -> None:
    config = ok(storage_api.client.get("/api/v1/storage"))
    data_dir = storage_api.settings.data_dir.resolve()
    for kind in KINDS:
        assert config[kind]["backend"] == "local"
        assert config[kind]["local"]["path"] == str(data_dir / "storage" / kind)
        assert config[kind]["s3"]["secret_access_key_set"] is False


def check_secrets_are_write_only_and_encrypted_at_rest(
    storage_api: LiveApi, moto: MotoServer
) -> None:
    client = storage_api.client
    bucket = unique_bucket(moto, "secrets")
    secret = "s3cr3t-" + os.urandom(8).hex()
    body = s3_config(moto, bucket, access_key_id="AKIAVOIPCLOUD0001234", secret_access_key=secret)
    saved = ok(client.put("/api/v1/storage", json={"faxes": body}))
    for answer in (saved, ok(client.get("/api/v1/storage"))):
        assert secret not in str(answer)
        assert "AKIAVOIPCLOUD0001234" not in str(answer)
        assert answer["faxes"]["s3"]["secret_access_key_set"] is True
        assert answer["faxes"]["s3"]["access_key_id_hint"] == "…1234"
        assert answer["faxes"]["backend"] == "s3"
        assert answer["recordings"]["backend"] == "local"  # kinds left out are kept

    # leave empty to keep: a change without secrets keeps them
    kept = ok(
        client.put(
            "/api/v1/storage",
            json={"faxes": {"s3": {"prefix": "other", "secret_access_key": ""}}},
        )
    )
    assert kept["faxes"]["s3"]["prefix"] == "other"
    assert kept["faxes"]["s3"]["secret_access_key_set"] is True

    engine = sa.create_engine(storage_api.settings.database_url or "")
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT * FROM storage_config")).all()
    engine.dispose()
    assert stored, "the configuration is in the table"
    assert secret.encode() not in repr(stored).encode()
    assert "AKIAVOIPCLOUD0001234" not in repr(stored)


INVALID: list[tuple[dict[str, Any], list[str]]] = [
    ({"faxes": {"backend": "s3"}}, ["body", "faxes", "s3", "bucket"]),
    ({"faxes": {"backend": "ftp"}}, ["body", "faxes", "backend"]),
    ({"faxes": {"local": {"path": "relative/dir"}}}, ["body", "faxes", "local", "path"]),
    ({"voicemail": {"s3": {"bucket": "No_Such!"}}}, ["body", "voicemail", "s3", "bucket"]),
    ({"recordings": {"s3": {"region": "Mars 1"}}}, ["body", "recordings", "s3", "region"]),
    ({"faxes": {"s3": {"endpoint_url": "ftp://x"}}}, ["body", "faxes", "s3", "endpoint_url"]),
    (
        {"faxes": {"s3": {"server_side_encryption": "maybe"}}},
        ["body", "faxes", "s3", "server_side_encryption"],
    ),
    ({"faxes": {"s3": {"bucket": "x" * 64}}}, ["body", "faxes", "s3", "bucket"]),
    ({"faxes": {"s3": {"access_key_id": "a b"}}}, ["body", "faxes", "s3", "access_key_id"]),
    ({"telex": {"backend": "local"}}, ["body", "telex"]),
]


def check_invalid_fields_get_422_naming_the_field(storage_api: LiveApi) -> None:
    before = ok(storage_api.client.get("/api/v1/storage"))
    for body, loc in INVALID:
        answer = storage_api.client.put("/api/v1/storage", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert loc in [error["loc"][: len(loc)] for error in answer.json()["detail"]], body
    # a valid kind beside an invalid one: all or nothing
    mixed = {"faxes": {"local": {"path": "/srv/faxes"}}, "voicemail": {"backend": "s3"}}
    assert storage_api.client.put("/api/v1/storage", json=mixed).status_code == 422
    assert ok(storage_api.client.get("/api/v1/storage")) == before  # nothing applied


# --- the probe ----------------------------------------------------------------------------


def probe(api: LiveApi, kind: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kinds": [kind]}
    if config is not None:
        body["config"] = {kind: config}
    result = ok(api.client.post("/api/v1/storage/test", json=body))
    assert len(result["results"]) == 1
    answer: dict[str, Any] = result["results"][0]
    assert answer["ok"] is result["ok"]
    return answer


def check_probe_writes_reads_and_deletes_on_every_kind(
    storage_api: LiveApi, moto: MotoServer
) -> None:
    bucket = unique_bucket(moto, "probe")
    ok(storage_api.client.put("/api/v1/storage", json={"voicemail": s3_config(moto, bucket)}))
    result = ok(storage_api.client.post("/api/v1/storage/test"))
    assert result["ok"] is True
    assert [(r["kind"], r["backend"]) for r in result["results"]] == [
        ("faxes", "local"),
        ("recordings", "local"),
        ("voicemail", "s3"),
    ]
    assert all("sha256 verified" in r["message"] for r in result["results"])
    assert moto.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # probe deleted


def check_probe_names_each_failure_clearly(storage_api: LiveApi, moto_auth: MotoServer) -> None:
    assert moto_auth.bucket
    assert moto_auth.outsider_key
    good = s3_config(moto_auth, moto_auth.bucket)
    assert probe(storage_api, "faxes", good)["ok"] is True

    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            s3_config(moto_auth, moto_auth.bucket, secret_access_key="wrong-secret"),
            "bad-credentials",
            "secret key does not match",
        ),
        (
            s3_config(moto_auth, moto_auth.bucket, access_key_id="AKIAUNKNOWN000000000"),
            "bad-credentials",
            "access key ID is unknown",
        ),
        (
            s3_config(moto_auth, "no-such-bucket-here"),
            "no-such-bucket",
            "does not exist",
        ),
        (
            s3_config(
                moto_auth,
                moto_auth.bucket,
                access_key_id=moto_auth.outsider_key[0],
                secret_access_key=moto_auth.outsider_key[1],
            ),
            "access-denied",
            "denied access",
        ),
        (
            s3_config(moto_auth, moto_auth.bucket, endpoint_url=f"http://127.0.0.1:{free_port()}"),
            "endpoint-unreachable",
            "Could not connect",
        ),
    ]
    for config, reason, words in cases:
        answer = probe(storage_api, "faxes", config)
        assert (answer["ok"], answer["reason"]) == (False, reason), answer
        assert words in answer["message"]
        assert "Traceback" not in answer["message"]

    with silent_endpoint() as endpoint:
        answer = probe(storage_api, "faxes", s3_config(moto_auth, "b-x", endpoint_url=endpoint))
    assert (answer["ok"], answer["reason"]) == (False, "timeout"), answer
    assert "did not answer in time" in answer["message"]

    # the probe tested unsaved settings: the saved ones are untouched
    assert ok(storage_api.client.get("/api/v1/storage"))["faxes"]["backend"] == "local"


def check_wrong_secret_refuses_resource_writes_with_the_clear_error(
    storage_api: LiveApi, moto_auth: MotoServer
) -> None:
    assert moto_auth.bucket
    bad = s3_config(moto_auth, moto_auth.bucket, secret_access_key="wrong-secret")
    ok(storage_api.client.put("/api/v1/storage", json={"recordings": bad}))
    answer = storage_api.client.put(
        "/api/v1/storage/recordings/resources/call-1.wav", content=b"RIFF"
    )
    assert answer.status_code == 409, answer.text
    assert answer.json()["rule"] == "storage-bad-credentials"
    assert "secret key does not match" in answer.json()["detail"]
    listed = ok(storage_api.client.get("/api/v1/storage/recordings/resources"))
    assert listed["total"] == 0  # nothing recorded for a write that failed


# --- the resource store -------------------------------------------------------------------


def check_store_fetch_list_delete(
    storage_api: LiveApi, moto: MotoServer, backend: str, kind: str
) -> None:
    client = storage_api.client
    bucket = unique_bucket(moto, "crud")
    if backend == "s3":
        ok(client.put("/api/v1/storage", json={kind: s3_config(moto, bucket)}))
    base = f"/api/v1/storage/{kind}/resources"
    contents = {f"1001/msg-{i:02d}.wav": os.urandom(1000 + i) for i in range(5)}
    contents["1002/msg-00.wav"] = b"other extension"
    for key, data in contents.items():
        stored = ok(
            client.put(f"{base}/{key}", content=data, headers={"content-type": "audio/wav"})
        )
        assert stored == {
            **stored,
            "key": key,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "content_type": "audio/wav",
            "backend": backend,
        }

    fetched = client.get(f"{base}/1001/msg-03.wav")
    assert fetched.status_code == 200
    assert fetched.content == contents["1001/msg-03.wav"]
    assert fetched.headers["content-type"] == "audio/wav"
    assert fetched.headers["x-checksum-sha256"] == hashlib.sha256(fetched.content).hexdigest()

    page = ok(client.get(base, params={"prefix": "1001/", "limit": 2, "offset": 2}))
    assert page["total"] == 5
    assert [item["key"] for item in page["items"]] == ["1001/msg-02.wav", "1001/msg-03.wav"]

    if backend == "s3":
        objects = moto.client().list_objects_v2(Bucket=bucket)["Contents"]
        assert sorted(o["Key"] for o in objects) == sorted(f"pbx/{k}" for k in contents)
        head = moto.client().head_object(Bucket=bucket, Key="pbx/1001/msg-00.wav")
        assert head["ServerSideEncryption"] == "AES256"
    else:
        root = storage_api.settings.data_dir.resolve() / "storage" / kind
        assert (root / "1002" / "msg-00.wav").read_bytes() == b"other extension"

    assert client.delete(f"{base}/1001/msg-03.wav").status_code == 204
    assert client.get(f"{base}/1001/msg-03.wav").status_code == 404
    assert client.delete(f"{base}/1001/msg-03.wav").status_code == 404
    assert ok(client.get(base))["total"] == 5
    if backend == "s3":
        keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket=bucket)["Contents"]]
        assert "pbx/1001/msg-03.wav" not in keys


def check_resource_input_is_checked(storage_api: LiveApi) -> None:
    client = storage_api.client
    base = "/api/v1/storage/recordings/resources"
    assert client.put(f"{base}/../etc/passwd", content=b"x").status_code in {404, 422}
    for bad in (".hidden", "a%20b", "a/-dash", "x" * 513):
        answer = client.put(f"{base}/{bad}", content=b"x")
        assert answer.status_code == 422, bad
    answer = client.put(f"{base}/fax.pdf", content=b"x", headers={"x-checksum-sha256": "0" * 64})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["header", "x-checksum-sha256"]
    assert client.get("/api/v1/storage/telex/resources").status_code == 422
    assert client.get(f"{base}/never-stored.pdf").status_code == 404
    assert ok(client.get(base))["total"] == 0


def check_large_object_streams_through_multipart(storage_api: LiveApi, moto: MotoServer) -> None:
    client = storage_api.client
    bucket = unique_bucket(moto, "large")
    ok(client.put("/api/v1/storage", json={"recordings": s3_config(moto, bucket)}))
    data = os.urandom(9 * MiB + 123)  # over the 8 MiB multipart threshold
    digest = hashlib.sha256(data).hexdigest()
    answer = client.put(
        "/api/v1/storage/recordings/resources/big/call.wav",
        content=data,
        headers={"x-checksum-sha256": digest},
    )
    assert ok(answer)["sha256"] == digest
    head = moto.client().head_object(Bucket=bucket, Key="pbx/big/call.wav")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-2")  # uploaded in two parts
    fetched = hashlib.sha256()
    with client.stream("GET", "/api/v1/storage/recordings/resources/big/call.wav") as stream:
        for chunk in stream.iter_bytes():
            fetched.update(chunk)
    assert fetched.hexdigest() == digest


def check_moving_a_location_that_holds_resources_is_refused(
    storage_api: LiveApi, moto: MotoServer
) -> None:
    client = storage_api.client
    ok(client.put("/api/v1/storage/faxes/resources/fax-1.pdf", content=b"%PDF"))
    answer = client.put("/api/v1/storage", json={"faxes": {"local": {"path": "/tmp/elsewhere"}}})
    assert answer.status_code == 409
    assert answer.json()["rule"] == "storage-location-in-use"
    assert "Migrate them" in answer.json()["detail"]


def check_a_node_stores_and_fetches_with_its_agent_credential(storage_api: LiveApi) -> None:
    client = storage_api.client
    node = ok(
        client.post(
            "/api/v1/nodes",
            json={"hostname": "pbx-9", "private_ip": "10.0.0.9", "public_ip": "203.0.113.9"},
        ),
        201,
    )
    assigned = ok(
        client.post(
            f"/api/v1/nodes/{node['node_id']}/roles", json={"role": "pbx", "parameters": {}}
        ),
        201,
    )
    with storage_api.anonymous() as anonymous:
        joined = ok(
            anonymous.post("/api/v1/agent/join", json={"session_key": assigned["session_key"]})
        )
        anonymous.headers["Authorization"] = f"Bearer {joined['agent_token']}"
        base = "/api/v1/storage/voicemail/resources"
        stored = ok(anonymous.put(f"{base}/1001/from-node.wav", content=b"RIFF node"))
        assert stored["size"] == len(b"RIFF node")
        assert anonymous.get(f"{base}/1001/from-node.wav").content == b"RIFF node"
        # the configuration stays the administrator's
        assert anonymous.get("/api/v1/storage").status_code == 401
        assert anonymous.put("/api/v1/storage", json={}).status_code == 401
        assert anonymous.post("/api/v1/storage/voicemail/migration").status_code == 401
        anonymous.headers["Authorization"] = "Bearer not-a-credential"
        assert anonymous.get(f"{base}/1001/from-node.wav").status_code == 401


def check_uploads_over_their_limit_are_refused_and_not_stored(api: LiveApi) -> None:
    client = api.client
    url = "/api/v1/storage/faxes/resources/too-big.pdf"
    declared = client.put(url, content=b"x" * (16 * MiB + 1))
    assert declared.status_code == 413, declared.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit cuts the stream off
        for _ in range(17):
            yield b"y" * MiB

    with contextlib.suppress(httpx.HTTPError):  # the server may hang up mid-body
        client.put(url, content=chunks())
    assert client.get(url).status_code == 404
    listed = client.get("/api/v1/storage/faxes/resources", params={"prefix": "too-big"})
    assert listed.json()["total"] == 0


# --- the tests: a few scenarios per database, each on its own fresh server ------------------


def test_configuration(storage_api: LiveApi, moto: MotoServer) -> None:
    check_default_is_local_storage_under_the_data_dir(storage_api)
    check_invalid_fields_get_422_naming_the_field(storage_api)
    check_secrets_are_write_only_and_encrypted_at_rest(storage_api, moto)


def test_probe(storage_api: LiveApi, moto: MotoServer, moto_auth: MotoServer) -> None:
    check_probe_writes_reads_and_deletes_on_every_kind(storage_api, moto)
    check_probe_names_each_failure_clearly(storage_api, moto_auth)
    check_wrong_secret_refuses_resource_writes_with_the_clear_error(storage_api, moto_auth)


def test_resources(storage_api: LiveApi, moto: MotoServer) -> None:
    check_store_fetch_list_delete(storage_api, moto, "local", "faxes")
    check_store_fetch_list_delete(storage_api, moto, "s3", "voicemail")
    check_resource_input_is_checked(storage_api)
    check_large_object_streams_through_multipart(storage_api, moto)
    check_moving_a_location_that_holds_resources_is_refused(storage_api, moto)
    check_a_node_stores_and_fetches_with_its_agent_credential(storage_api)
    check_uploads_over_their_limit_are_refused_and_not_stored(storage_api)
