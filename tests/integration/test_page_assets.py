"""The web pages name their own files (CSS, htmx, the page script) from the site's root, not as
an address built from the request's Host header: behind a proxy the address is right whatever
host name it forwards, and a forged Host header is not written into the page (where a shared
cache would hand the forged script address to the next visitor)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ADMIN_PASSWORD, LiveApi
from tests.integration.accounts_helpers import web_login

ASSET = re.compile(r'(?:src|href)="([^"]*/static/[^"]*)"')


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_page_asset_is_named_from_the_root_and_loads(api: LiveApi) -> None:
    web = web_login(api.base_url, "admin", ADMIN_PASSWORD)
    with api.anonymous() as anonymous:
        pages = ((anonymous, "/login"), (web, "/"), (web, "/infrastructure/properties"))
        for client, page in pages:
            html = client.get(page).text
            assets = ASSET.findall(html)
            assert {a.rsplit("/", 1)[1] for a in assets} >= {"app.css", "htmx.min.js", "app.js"}
            for asset in assets:
                assert asset.startswith("/static/"), (page, asset)
                answer = client.get(asset)
                assert answer.status_code == 200, asset
                assert len(answer.content) > 500, asset


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_forged_host_header_is_not_written_into_the_page(api: LiveApi) -> None:
    web = web_login(api.base_url, "admin", ADMIN_PASSWORD)
    forged = {"Host": "attacker.example"}
    with api.anonymous() as anonymous:
        for client, page in ((anonymous, "/login"), (web, "/")):
            answer = client.get(page, headers=forged)
            assert answer.status_code == 200, (page, answer.text[:200])
            assert "attacker.example" not in answer.text, page
            assert ASSET.findall(answer.text), page
