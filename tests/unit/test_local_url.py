"""`local_url`: where a form or a confirmation goes back to (`next`) is a path on this site,
never another host, however the address is spelled."""

from __future__ import annotations

import pytest

from voipcloud.web.forms import local_url


@pytest.mark.parametrize(
    "kept", ["/", "/?q=sip&page=2", "/nodes/5/info", "/storage/faxes/migration", "/?q=a%20b"]
)
def test_a_path_on_this_site_is_kept(kept: str) -> None:
    assert local_url(kept) == kept


@pytest.mark.parametrize(
    "refused",
    [
        None,
        "",
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "\\/evil.example",
        # browsers drop tabs and newlines from an address: these are //evil.example
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\n/evil.example",
        " //evil.example",
        "/ /evil.example",
        "/\x00/evil.example",
        "/\x7f",
    ],
)
def test_another_host_however_spelled_is_refused(refused: str | None) -> None:
    assert local_url(refused) == "/"
    assert local_url(refused, default="/storage") == "/storage"
