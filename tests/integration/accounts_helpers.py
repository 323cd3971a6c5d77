"""Helpers for the accounts tests: add accounts through the API and sign in as them."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import LiveApi

API = "/api/v1"
PASSWORD = "a-long-enough-passphrase"


def add_account(api: LiveApi, username: str, role: str, password: str = PASSWORD) -> None:
    answer = api.client.post(
        f"{API}/accounts", json={"username": username, "role": role, "password": password}
    )
    assert answer.status_code == 201, answer.text


def session(base_url: str, username: str, password: str = PASSWORD) -> httpx.Client:
    """A client with a fresh session token of `username`."""
    client = httpx.Client(base_url=base_url, timeout=30)
    answer = client.post(f"{API}/auth/token", json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return client


def with_token(base_url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def api_token(client: httpx.Client, name: str, scope: str, **extra: Any) -> dict[str, Any]:
    answer = client.post(f"{API}/tokens", json={"name": name, "scope": scope, **extra})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def events(client: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(f"{API}/events", params={"limit": 500}).json()["items"]
    return items


def web_login(base_url: str, username: str, password: str = PASSWORD) -> httpx.Client:
    """A browser-like client signed in to the web interface."""
    web = httpx.Client(base_url=base_url, timeout=30, headers={"Accept": "text/html"})
    page = web.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text[:300]
    answer = web.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token.group(1)},
    )
    assert answer.status_code == 303, answer.text[:300]
    return web


def csrf_of(web: httpx.Client, page: str = "/") -> str:
    found = re.search(r'"X-CSRF-Token": "([^"]+)"', web.get(page).text)
    assert found
    return found.group(1)
