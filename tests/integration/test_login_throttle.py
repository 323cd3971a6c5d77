"""Login throttling without lockout (issue 12, item 3), on SQLite and PostgreSQL.

A real `voipcloud serve` process; clients bind their own loopback source address
(127.0.0.2, 127.0.0.3, ...) to act as other hosts. Wrong passwords are throttled per
(account, address) and per address, answered 429 with Retry-After (API and web); the right
password from an address that has not failed always gets in. Every login and failed login is
an event with the source address, never the password; a flood of failures is bounded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings
from tests.support.processes import ADMIN_PASSWORD, Controller
from tests.support.server import serve_in_thread
from voipcloud.api.app import create_app
from voipcloud.services.auth import (
    FREE_ADDRESS_FAILURES,
    FREE_LOGIN_FAILURES,
    MAX_LOGIN_DELAY,
    _EventBudget,
)

TOKEN = "/api/v1/auth/token"
WRONG = "wrong-Password-Zq93"  # must never show up anywhere


@pytest.fixture
def controller(tmp_path: Path, database_url: str) -> Iterator[Controller]:
    started = Controller(
        data_dir=tmp_path / "data", env={"VOIPCLOUD_DATABASE_URL": database_url}
    ).start()
    try:
        yield started
    finally:
        started.stop()


def client_from(controller: Controller, address: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=controller.url, transport=transport, timeout=30)


def login(client: httpx.Client, password: str, username: str = "admin") -> httpx.Response:
    return client.post(TOKEN, json={"username": username, "password": password})


def check_throttled(answer: httpx.Response) -> int:
    assert answer.status_code == 429, answer.text
    assert answer.json()["rule"] == "login-throttled"
    wait = int(answer.headers["Retry-After"])
    assert 1 <= wait <= MAX_LOGIN_DELAY
    assert f"wait {wait} s" in answer.json()["detail"]
    return wait


def all_events(admin: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = admin.get("/api/v1/events", params={"limit": 500}).json()["items"]
    return items


def test_one_address_failing_never_locks_out_another(controller: Controller) -> None:
    with (
        client_from(controller, "127.0.0.1") as admin_host,
        client_from(controller, "127.0.0.2") as attacker,
    ):
        statuses = []
        for attempt in range(30):
            answer = login(attacker, WRONG)
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                check_throttled(answer)
            else:
                assert answer.status_code == 401, answer.text
                assert "Retry-After" not in answer.headers
            if attempt % 10 == 9:  # meanwhile the real administrator gets in at once
                started = time.monotonic()
                assert login(admin_host, ADMIN_PASSWORD).status_code == 200
                assert time.monotonic() - started < 10
        assert statuses[:FREE_LOGIN_FAILURES] == [401] * FREE_LOGIN_FAILURES
        assert statuses.count(429) >= 10, statuses
        assert 200 not in statuses

        # the throttled address is refused even with the right password, until it waits:
        # right after a counted failure that set a wait of 2 s or more
        for _ in range(10):
            answer = login(attacker, WRONG)
            if answer.status_code == 429:
                time.sleep(check_throttled(answer))
                continue
            statuses.append(answer.status_code)
            found = re.search(r"wait (\d+) s before the next", answer.json()["detail"])
            if found and int(found[1]) >= 2:
                break
        else:
            raise AssertionError("no failure set a wait of 2 s or more")
        wait = check_throttled(login(attacker, ADMIN_PASSWORD))
        assert login(admin_host, ADMIN_PASSWORD).status_code == 200
        time.sleep(wait + 0.2)
        assert login(attacker, ADMIN_PASSWORD).status_code == 200

        with closing(controller.admin()) as admin:
            history = all_events(admin)
        failed = [e for e in history if e["operation"] == "login-failed"]
        from_attacker = [e for e in failed if "from 127.0.0.2" in e["reason"]]
        # each checked wrong password is one event; throttled attempts are not checked
        assert len(from_attacker) == statuses.count(401)
        assert all(e["actor"] == "admin:admin" for e in from_attacker)
        assert all(e["reason"] == "wrong password from 127.0.0.2" for e in from_attacker)
        logins = [e for e in history if e["operation"] == "login"]
        assert sum("from 127.0.0.1" in e["reason"] for e in logins) >= 4
        assert any(e["reason"] == "signed in to the API from 127.0.0.2" for e in logins)
        assert WRONG not in str(history)
        assert ADMIN_PASSWORD not in str(history)


def test_many_accounts_from_one_address_are_throttled_per_address(
    controller: Controller,
) -> None:
    with (
        client_from(controller, "127.0.0.3") as sprayer,
        client_from(controller, "127.0.0.1") as admin_host,
    ):
        # one try per username: no (account, address) pair reaches its limit
        for number in range(FREE_ADDRESS_FAILURES):
            answer = login(sprayer, WRONG, username=f"user{number}")
            assert answer.status_code == 401, answer.text
        login(sprayer, WRONG, username="one-more")  # this failure starts the wait
        check_throttled(login(sprayer, WRONG, username="yet-another"))
        check_throttled(login(sprayer, ADMIN_PASSWORD))
        assert login(admin_host, ADMIN_PASSWORD).status_code == 200

        with closing(controller.admin()) as admin:
            history = all_events(admin)
        unknown = [e for e in history if "from 127.0.0.3" in e["reason"]]
        assert len(unknown) == FREE_ADDRESS_FAILURES + 1
        # what was typed as a username may be a password typed in the wrong field: not kept
        assert {(e["actor"], e["reason"]) for e in unknown} == {
            ("anonymous", "unknown username from 127.0.0.3")
        }
        assert "user1" not in str(history)
        assert "yet-another" not in str(history)


def web_login(client: httpx.Client, password: str) -> httpx.Response:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    form = {"username": "admin", "password": password, "csrf_token": token[1], "next": "/"}
    return client.post("/login", data=form, follow_redirects=False)


def test_the_web_login_is_throttled_the_same_way(controller: Controller) -> None:
    with (
        client_from(controller, "127.0.0.4") as attacker,
        client_from(controller, "127.0.0.1") as admin_host,
    ):
        for _ in range(FREE_LOGIN_FAILURES):
            assert web_login(attacker, WRONG).status_code == 401
        sixth = web_login(attacker, WRONG)
        assert sixth.status_code == 401
        assert "wait 1 s before the next" in sixth.text
        throttled = web_login(attacker, ADMIN_PASSWORD)
        assert throttled.status_code == 429, throttled.text
        assert int(throttled.headers["Retry-After"]) >= 1
        assert "Too many failed sign-in attempts" in throttled.text
        assert WRONG not in throttled.text
        # the API shares the count of this address; the real administrator is not slowed
        check_throttled(login(attacker, ADMIN_PASSWORD))
        signed_in = web_login(admin_host, ADMIN_PASSWORD)
        assert signed_in.status_code == 303, signed_in.text
        with closing(controller.admin()) as admin:
            logins = [e for e in all_events(admin) if e["operation"] == "login"]
        assert any(e["reason"] == "signed in to the web interface from 127.0.0.1" for e in logins)


def test_a_flood_of_failures_cannot_fill_the_event_table(tmp_path: Path, database_url: str) -> None:
    """In process, to give the budget a clock the test moves: 3 one-by-one events a minute,
    then one event that counts the rest."""
    settings = make_settings(tmp_path, database_url)
    app = create_app(settings)
    now = [1000.0]
    app.state.controller.auth._failure_events = _EventBudget(3, monotonic=lambda: now[0])
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        for number in range(7):  # distinct usernames: no throttling in the way
            assert login(client, WRONG, username=f"flood{number}").status_code == 401
        now[0] += 60
        assert login(client, WRONG, username="next-minute").status_code == 401
        token = login(client, "correct-horse-battery").json()["access_token"]
        history = client.get(
            "/api/v1/events",
            params={"limit": 100},
            headers={"Authorization": f"Bearer {token}"},
        ).json()["items"]
    failed = [e for e in history if e["operation"] == "login-failed"]
    assert len(failed) == 3 + 1 + 1, failed
    summary = [e for e in failed if e["actor"] == "controller"]
    assert len(summary) == 1
    assert summary[0]["reason"].startswith("4 more failed logins in the minute before")
