"""API tokens through the real API on SQLite and PostgreSQL: shown once, stored hashed,
scoped, expiring, listed with last use, revocable one by one, never above the role."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from tests.conftest import LiveApi
from tests.integration.accounts_helpers import (
    API,
    add_account,
    api_token,
    events,
    session,
    with_token,
)
from voipcloud.store.database import Database
from voipcloud.store.tables import account_tokens

NODE = {"hostname": "tok-1.example.com", "private_ip": "10.0.0.5"}


def test_a_token_is_shown_once_stored_hashed_and_listed_with_its_last_use(api: LiveApi) -> None:
    created = api_token(api.client, "nightly", "read")
    secret = created["token"]
    assert secret.startswith("vct_")
    assert len(secret) > 40
    assert created["scope"] == "read"
    assert created["last_used_at"] is None
    listed = api.client.get(f"{API}/tokens")
    assert secret not in listed.text
    assert 'token"' not in listed.text.replace("token_id", "")
    db = Database(api.settings.resolved_database_url())
    try:
        with db.read() as conn:
            digests = conn.execute(select(account_tokens.c.digest)).scalars().all()
    finally:
        db.dispose()
    assert digests == [hashlib.sha256(secret.encode()).hexdigest()]
    reader = with_token(api.base_url, secret)
    assert reader.get(f"{API}/nodes").status_code == 200
    item = api.client.get(f"{API}/tokens").json()["items"][0]
    assert item["last_used_at"] is not None
    assert item["name"] == "nightly"
    assert item["username"] == "admin"
    assert item["expired"] is False
    expires = datetime.fromisoformat(item["expires_at"])
    assert timedelta(days=89) < expires - datetime.now(UTC) <= timedelta(days=90)


def test_read_tokens_only_read_and_write_tokens_never_exceed_the_role(api: LiveApi) -> None:
    reader = with_token(api.base_url, api_token(api.client, "r", "read")["token"])
    refused = reader.post(f"{API}/nodes", json=NODE)
    assert refused.status_code == 403
    assert refused.json()["rule"] == "token-read-only"
    assert reader.post(f"{API}/tokens", json={"name": "x", "scope": "write"}).status_code == 403
    add_account(api, "victor", "viewer")
    add_account(api, "olga", "operator")
    victor_writes = with_token(
        api.base_url, api_token(session(api.base_url, "victor"), "w", "write")["token"]
    )
    refused = victor_writes.post(f"{API}/nodes", json=NODE)
    assert refused.status_code == 403
    assert refused.json()["rule"] == "role-forbidden"
    olga_writes = with_token(
        api.base_url, api_token(session(api.base_url, "olga"), "w", "write")["token"]
    )
    assert olga_writes.post(f"{API}/nodes", json=NODE).status_code == 201
    assert olga_writes.get(f"{API}/accounts").status_code == 403
    # a demotion narrows the account's tokens at once
    assert api.client.patch(f"{API}/accounts/olga", json={"role": "viewer"}).status_code == 200
    later = olga_writes.post(f"{API}/nodes", json={**NODE, "hostname": "tok-2.example.com"})
    assert later.status_code == 403
    assert later.json()["rule"] == "role-forbidden"
    assert olga_writes.get(f"{API}/nodes").status_code == 200


def test_revoked_and_expired_tokens_are_refused_at_once(api: LiveApi) -> None:
    first = api_token(api.client, "one", "write")
    second = api_token(api.client, "two", "write")
    one, two = with_token(api.base_url, first["token"]), with_token(api.base_url, second["token"])
    assert one.get(f"{API}/auth/me").json()["token_id"] == first["token_id"]
    assert api.client.delete(f"{API}/tokens/{first['token_id']}").status_code == 204
    assert one.get(f"{API}/auth/me").status_code == 401
    assert two.get(f"{API}/auth/me").status_code == 200  # one by one
    assert api.client.delete(f"{API}/tokens/{first['token_id']}").status_code == 404
    db = Database(api.settings.resolved_database_url())
    try:
        with db.write() as conn:
            conn.execute(
                update(account_tokens)
                .where(account_tokens.c.id == second["token_id"])
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
    finally:
        db.dispose()
    assert two.get(f"{API}/auth/me").status_code == 401
    listed = api.client.get(f"{API}/tokens").json()["items"]
    assert [(t["name"], t["expired"]) for t in listed] == [("two", True)]
    found = [e["operation"] for e in events(api.client)]
    assert found.count("token-created") == 2
    assert found.count("token-revoked") == 1


def test_tokens_are_checked_and_belong_to_their_account(api: LiveApi) -> None:
    now = datetime.now(UTC)
    for expires, says in (
        (now - timedelta(hours=1), "future"),
        (now + timedelta(days=400), "366"),
    ):
        answer = api.client.post(
            f"{API}/tokens",
            json={"name": "x", "scope": "read", "expires_at": expires.isoformat()},
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["body", "expires_at"]
        assert says in answer.json()["detail"][0]["msg"]
    bad_scope = api.client.post(f"{API}/tokens", json={"name": "x", "scope": "admin"})
    assert bad_scope.status_code == 422
    api_token(api.client, "ci", "read")
    again = api.client.post(f"{API}/tokens", json={"name": "ci", "scope": "read"})
    assert again.status_code == 409
    assert again.json()["rule"] == "token-name-taken"
    add_account(api, "olga", "operator")
    olga = session(api.base_url, "olga")
    hers = api_token(olga, "ci", "read")  # the same name in another account is fine
    admins = api.client.get(f"{API}/tokens").json()["items"]
    assert {t["username"] for t in admins} == {"admin", "olga"}  # an admin sees everyone's
    assert [t["username"] for t in olga.get(f"{API}/tokens").json()["items"]] == ["olga"]
    admin_token_id = next(t["token_id"] for t in admins if t["username"] == "admin")
    assert olga.delete(f"{API}/tokens/{admin_token_id}").status_code == 404
    assert api.client.delete(f"{API}/tokens/{hers['token_id']}").status_code == 204
    assert with_token(api.base_url, hers["token"]).get(f"{API}/auth/me").status_code == 401
