"""Passwords through the real API on SQLite and PostgreSQL: change your own (current one
required), an admin's reset, the policy, sessions ended, rehash on login, logout."""

from __future__ import annotations

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from tests.conftest import ADMIN_PASSWORD, LiveApi
from tests.integration.accounts_helpers import (
    API,
    PASSWORD,
    add_account,
    api_token,
    events,
    session,
    with_token,
)
from voipcloud.store.database import Database
from voipcloud.store.tables import administrators

NEW_PASSWORD = "another-long-passphrase"


def stored_hash(api: LiveApi, username: str) -> str:
    db = Database(api.settings.resolved_database_url())
    try:
        with db.read() as conn:
            return str(
                conn.execute(
                    select(administrators.c.password_hash).where(
                        administrators.c.username == username
                    )
                ).scalar_one()
            )
    finally:
        db.dispose()


def test_changing_your_password_ends_your_other_sessions_and_tokens(api: LiveApi) -> None:
    add_account(api, "olga", "operator")
    here = session(api.base_url, "olga")
    elsewhere = session(api.base_url, "olga")
    token = with_token(api.base_url, api_token(here, "ci", "write")["token"])
    other_account = session(api.base_url, "admin", ADMIN_PASSWORD)
    changed = here.post(
        f"{API}/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["ended"] == 2  # the other session and the API token
    assert here.get(f"{API}/auth/me").status_code == 200  # the session that changed it stays
    assert elsewhere.get(f"{API}/auth/me").status_code == 401
    assert token.get(f"{API}/auth/me").status_code == 401
    assert other_account.get(f"{API}/auth/me").status_code == 200  # another account: untouched
    old = httpx.post(
        f"{api.base_url}{API}/auth/token", json={"username": "olga", "password": PASSWORD}
    )
    assert old.status_code == 401
    session(api.base_url, "olga", NEW_PASSWORD)
    found = [(e["operation"], e["actor"]) for e in events(api.client)]
    assert ("password-changed", "operator:olga") in found


def test_a_token_changing_the_password_stays_and_ends_the_sessions(api: LiveApi) -> None:
    add_account(api, "tess", "viewer")
    browser = session(api.base_url, "tess")
    token = with_token(api.base_url, api_token(browser, "script", "write")["token"])
    answer = token.post(
        f"{API}/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    assert token.get(f"{API}/auth/me").status_code == 200
    assert browser.get(f"{API}/auth/me").status_code == 401


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("short-one", "at least 12"),
        ("olga", "at least 12"),
        ("Olga.Operator", "username"),
        ("password1234", "common"),
        ("Qwerty123456", "common"),
    ],
)
def test_the_policy_refuses_with_422_naming_the_field(
    api: LiveApi, password: str, says: str
) -> None:
    add_account(api, "olga.operator", "operator")
    olga = session(api.base_url, "olga.operator")
    answers = {
        "new_password": olga.post(
            f"{API}/auth/password",
            json={"current_password": PASSWORD, "new_password": password},
        ),
        "reset": api.client.post(
            f"{API}/accounts/olga.operator/password", json={"new_password": password}
        ),
        "password": api.client.post(
            f"{API}/accounts",
            json={"username": "olga.operator", "role": "viewer", "password": password},
        ),
    }
    for field, answer in answers.items():
        assert answer.status_code == 422, (field, answer.text)
        detail = answer.json()["detail"][0]
        expected = "new_password" if field == "reset" else field
        assert detail["loc"] == ["body", expected], detail
        assert says in detail["msg"], detail
        assert password not in answer.text
    # nothing changed: the old password still signs in, the session still works
    assert olga.get(f"{API}/auth/me").status_code == 200
    session(api.base_url, "olga.operator")


def test_wrong_current_password_is_refused_and_counted(api: LiveApi) -> None:
    add_account(api, "olga", "operator")
    olga = session(api.base_url, "olga")
    statuses = []
    for _ in range(7):
        answer = olga.post(
            f"{API}/auth/password",
            json={"current_password": "not-the-password", "new_password": NEW_PASSWORD},
        )
        statuses.append(answer.status_code)
        if answer.status_code == 422:
            assert answer.json()["detail"][0]["loc"] == ["body", "current_password"]
    # the same throttle as a login: 5 free failures, then a wait (429 with Retry-After)
    assert statuses[:5] == [422] * 5, statuses
    assert 429 in statuses, statuses
    assert olga.get(f"{API}/auth/me").status_code == 200


def test_an_admin_reset_ends_every_session_and_token_of_the_account(api: LiveApi) -> None:
    add_account(api, "olga", "operator")
    olga = session(api.base_url, "olga")
    token = with_token(api.base_url, api_token(olga, "ci", "read")["token"])
    answer = api.client.post(f"{API}/accounts/olga/password", json={"new_password": NEW_PASSWORD})
    assert answer.status_code == 200, answer.text
    assert answer.json()["ended"] == 2
    assert olga.get(f"{API}/auth/me").status_code == 401
    assert token.get(f"{API}/auth/me").status_code == 401
    session(api.base_url, "olga", NEW_PASSWORD)
    assert api.client.get(f"{API}/auth/me").status_code == 200  # the admin's own: untouched
    assert any(
        e["operation"] == "password-reset" and e["actor"] == "admin:admin"
        for e in events(api.client)
    )
    missing = api.client.post(f"{API}/accounts/nobody/password", json={"new_password": PASSWORD})
    assert missing.status_code == 404


def test_the_hash_is_renewed_on_login_when_the_parameters_change(api: LiveApi) -> None:
    add_account(api, "olga", "operator")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    db = Database(api.settings.resolved_database_url())
    try:
        with db.write() as conn:
            conn.execute(
                update(administrators)
                .where(administrators.c.username == "olga")
                .values(password_hash=weak)
            )
    finally:
        db.dispose()
    assert stored_hash(api, "olga") == weak
    session(api.base_url, "olga")  # the old hash still verifies
    renewed = stored_hash(api, "olga")
    assert renewed != weak
    assert renewed.startswith("$argon2id$")
    assert not PasswordHasher().check_needs_rehash(renewed)
    assert "m=8192" in weak
    assert "m=8192" not in renewed
    session(api.base_url, "olga")  # and the new one verifies too
    assert stored_hash(api, "olga") == renewed  # no rehash when nothing changed


def test_logout_ends_one_session_and_logout_all_ends_every_one(api: LiveApi) -> None:
    add_account(api, "olga", "operator")
    first, second, third = (session(api.base_url, "olga") for _ in range(3))
    token = with_token(api.base_url, api_token(first, "ci", "write")["token"])
    assert first.delete(f"{API}/auth/token").status_code == 204
    assert first.get(f"{API}/auth/me").status_code == 401
    assert second.get(f"{API}/auth/me").status_code == 200
    ended = second.post(f"{API}/auth/logout-all")
    assert ended.status_code == 200
    assert ended.json()["ended"] == 3
    for client in (second, third, token):
        assert client.get(f"{API}/auth/me").status_code == 401
    assert api.client.get(f"{API}/auth/me").status_code == 200
    assert any(e["operation"] == "logout-everywhere" for e in events(api.client))
