"""Bad input through the REST API: every answer is JSON, none is a 500, and a 422 names each
field at fault. A refusal changes nothing. Ends with a small Hypothesis fuzz of the two
request bodies that carry the most structure (add node, assign role).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.live_controller import (
    API,
    BACKENDS,
    ControlledApi,
    action,
    add_node,
    assign,
    body,
    expect,
    field_locs,
    get_node,
    module_app,
    refused,
    unchanged,
    unique,
)
from voipcloud import protocol
from voipcloud.api.app import create_app
from voipcloud.api.limits import _declared_length
from voipcloud.api.params import STRICT
from voipcloud.config import Settings
from voipcloud.domain.roles import ROLES

UNKNOWN = 987654


@pytest.fixture(scope="module", params=BACKENDS)
def live(request: pytest.FixtureRequest) -> Iterator[ControlledApi]:
    """One app per backend for the whole module: every test adds its own nodes."""
    with module_app(request) as running:
        yield running


@pytest.fixture
def node(live: ControlledApi) -> dict[str, Any]:
    """A node with a public IP and the jabber role, in status Offline."""
    created = add_node(live.client, unique("bad-input"), public_ip="203.0.113.80")
    return assign(live.client, created["node_id"], "jabber")


def invalid(
    client: httpx.Client,
    node_id: int | None,
    method: str,
    path: str,
    locs: list[tuple[Any, ...]],
    *,
    check: bool = True,
    **kwargs: Any,
) -> list[tuple[Any, ...]]:
    """A 422 that names each of `locs` and changes nothing."""
    data = refused(client, node_id, method, path, status=422, check=check, **kwargs)
    named = field_locs(data)
    for loc in locs:
        assert loc in named, f"{method} {path}: {loc} not in {named}"
    for entry in data["detail"]:
        assert entry["msg"]
    return named


# --- wrong types, missing fields, unknown fields --------------------------------------------------


def test_wrong_types_name_the_field(live: ControlledApi, node: dict[str, Any]) -> None:
    c = live.client
    nid = node["node_id"]
    good = {"hostname": unique("typed"), "private_ip": "10.0.0.5"}
    cases: list[tuple[str, str, dict[str, Any], tuple[Any, ...]]] = [
        ("POST", "/nodes", {**good, "hostname": 123}, ("body", "hostname")),
        ("POST", "/nodes", {**good, "hostname": True}, ("body", "hostname")),
        ("POST", "/nodes", {**good, "hostname": None}, ("body", "hostname")),
        ("POST", "/nodes", {**good, "private_ip": ["10.0.0.1"]}, ("body", "private_ip")),
        ("POST", "/nodes", {**good, "public_ip": 203}, ("body", "public_ip")),
        ("POST", "/nodes", {**good, "container_id": {"id": 1}}, ("body", "container_id")),
        ("PATCH", f"/nodes/{nid}", {"hostname": 5}, ("body", "hostname")),
        ("PATCH", f"/nodes/{nid}", {"public_ip": False}, ("body", "public_ip")),
        ("POST", f"/nodes/{nid}/roles", {"role": "que", "parameters": "x"}, ("body", "parameters")),
        ("POST", f"/nodes/{nid}/roles", {"role": "que", "parameters": [1]}, ("body", "parameters")),
        ("POST", f"/nodes/{nid}/roles", {"role": 7}, ("body", "role")),
        ("POST", f"/nodes/{nid}/roles", {"role": ["sip"]}, ("body", "role")),
        ("PATCH", f"/nodes/{nid}/roles/jabber", {"parameters": "x"}, ("body", "parameters")),
        ("PATCH", f"/nodes/{nid}/roles/jabber", {"parameters": None}, ("body", "parameters")),
        ("POST", f"/nodes/{nid}/actions/standby", {"reason": 5}, ("body", "reason")),
        ("POST", f"/nodes/{nid}/actions/standby", {"reason": ["a"]}, ("body", "reason")),
        ("POST", f"/nodes/{nid}/roles/jabber/remove", {"confirm": []}, ("body", "confirm")),
        ("POST", f"/nodes/{nid}/roles/jabber/remove", {"confirm": "maybe"}, ("body", "confirm")),
        ("POST", "/extensions", {"number": 1001}, ("body", "number")),
        ("POST", "/extensions", {"number": "1001", "label": 5}, ("body", "label")),
    ]
    for method, path, payload, loc in cases:
        invalid(c, nid, method, f"{API}{path}", [loc], json=payload)
    for path, params, loc in [
        ("/nodes", {"limit": "abc"}, ("query", "limit")),
        ("/nodes", {"offset": "x"}, ("query", "offset")),
        ("/nodes", {"limit": "1.5"}, ("query", "limit")),
        ("/events", {"limit": "abc"}, ("query", "limit")),
        ("/events", {"node_id": "abc"}, ("query", "node_id")),
        (f"/nodes/{nid}/events", {"offset": "abc"}, ("query", "offset")),
        ("/extensions", {"limit": "many"}, ("query", "limit")),
    ]:
        invalid(c, nid, "GET", f"{API}{path}", [loc], params=params)
    for path in ("/nodes/abc", "/nodes/1.5", "/nodes/1e3", "/nodes/abc/events"):
        invalid(c, nid, "GET", f"{API}{path}", [("path", "node_id")])
    invalid(c, nid, "DELETE", f"{API}/nodes/abc", [("path", "node_id")])


def test_missing_fields_are_each_named(live: ControlledApi, node: dict[str, Any]) -> None:
    c = live.client
    nid = node["node_id"]
    invalid(
        c, None, "POST", f"{API}/nodes", [("body", "hostname"), ("body", "private_ip")], json={}
    )
    invalid(c, None, "POST", f"{API}/nodes", [("body", "private_ip")], json={"hostname": "x"})
    invalid(
        c, None, "POST", f"{API}/nodes", [("body", "hostname")], json={"private_ip": "10.0.0.1"}
    )
    invalid(c, None, "POST", f"{API}/nodes", [("body",)])  # no body at all
    invalid(c, nid, "POST", f"{API}/nodes/{nid}/roles", [("body", "role")], json={})
    invalid(c, nid, "POST", f"{API}/nodes/{nid}/roles", [("body", "role")], json={"parameters": {}})
    invalid(c, nid, "PATCH", f"{API}/nodes/{nid}/roles/jabber", [("body", "parameters")], json={})
    invalid(c, nid, "POST", f"{API}/extensions", [("body", "number")], json={"label": "reception"})


def test_unknown_extra_fields_are_refused(live: ControlledApi, node: dict[str, Any]) -> None:
    c = live.client
    nid = node["node_id"]
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        (
            "POST",
            "/nodes",
            {"hostname": unique("extra"), "private_ip": "10.0.0.1", "evil": 1},
            "evil",
        ),
        ("PATCH", f"/nodes/{nid}", {"hostname": "renamed", "evil": 1}, "evil"),
        ("PATCH", f"/nodes/{nid}", {"status": "Online"}, "status"),
        ("PATCH", f"/nodes/{nid}", {"node_id": 1}, "node_id"),
        ("PATCH", f"/nodes/{nid}", {"session_key": "mine"}, "session_key"),
        ("PATCH", f"/nodes/{nid}", {"is_controller": True}, "is_controller"),
        ("POST", f"/nodes/{nid}/roles", {"role": "que", "parameters": {}, "evil": 1}, "evil"),
        ("PATCH", f"/nodes/{nid}/roles/jabber", {"parameters": {}, "evil": 1}, "evil"),
        ("POST", f"/nodes/{nid}/actions/standby", {"reason": "r", "evil": 1}, "evil"),
        ("POST", f"/nodes/{nid}/roles/jabber/remove", {"confirm": True, "evil": 1}, "evil"),
        ("POST", "/extensions", {"number": "1009", "evil": 1}, "evil"),
    ]
    for method, path, payload, extra in cases:
        named = invalid(c, nid, method, f"{API}{path}", [("body", extra)], json=payload)
        assert len(named) == 1, named


def test_malformed_json_is_422(live: ControlledApi, node: dict[str, Any]) -> None:
    c = live.client
    nid = node["node_id"]
    headers = {"content-type": "application/json"}
    for raw in (b"{bad", b'{"hostname": "x",}', b'{"hostname": "x"} trailing', b"{", b"'x'"):
        for method, path in (
            ("POST", "/nodes"),
            ("PATCH", f"/nodes/{nid}"),
            ("POST", f"/nodes/{nid}/roles"),
            ("POST", f"/nodes/{nid}/actions/standby"),
        ):
            data = refused(c, nid, method, f"{API}{path}", status=422, content=raw, headers=headers)
            assert data["detail"][0]["type"] == "json_invalid", data
    # well-formed JSON of the wrong shape
    for raw in (b"[]", b'"x"', b"null", b"1", b"[1, 2]"):
        invalid(c, None, "POST", f"{API}/nodes", [("body",)], content=raw, headers=headers)
        invalid(
            c, nid, "POST", f"{API}/nodes/{nid}/roles", [("body",)], content=raw, headers=headers
        )
    # JSON sent as text/plain is not taken for an object either
    payload = json.dumps({"hostname": unique("plain"), "private_ip": "10.0.0.1"}).encode()
    refused(
        c,
        None,
        "POST",
        f"{API}/nodes",
        status=422,
        content=payload,
        headers={"content-type": "text/plain"},
    )


@pytest.mark.parametrize(
    "raw",
    [b'{"hostname": "\xff\xfe", "private_ip": "10.0.0.1"}', b"[" * 100_000],
    ids=["invalid-utf8", "deeply-nested"],
)
def test_undecodable_body_is_422(live: ControlledApi, raw: bytes) -> None:
    data = refused(
        live.client,
        None,
        "POST",
        f"{API}/nodes",
        status=422,
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert field_locs(data) == [("body",)]
    assert data["detail"][0]["type"] == "json_invalid"


# --- roles and parameters -------------------------------------------------------------------------


def test_unknown_role_is_422_naming_role(live: ControlledApi, node: dict[str, Any]) -> None:
    c = live.client
    nid = node["node_id"]
    for code in ("zz", "SIP", "", " sip", "sip ", "ic;drop", "x" * 17):
        data = refused(c, nid, "POST", f"{API}/nodes/{nid}/roles", status=422, json={"role": code})
        assert ("body", "role") in field_locs(data), data
    # a role code in the path that does not exist: no such thing
    for method, suffix, payload in (
        ("PATCH", "/roles/zz", {"parameters": {}}),
        ("DELETE", "/roles/zz", None),
        ("POST", "/roles/zz/remove", {"confirm": True}),
    ):
        refused(c, nid, method, f"{API}/nodes/{nid}{suffix}", status=404, json=payload)


BAD_PARAMETERS: list[tuple[str, str, Any]] = [
    ("sip", "nope", 1),
    ("sip", "sip_port", 70000),
    ("sip", "sip_port", 0),
    ("sip", "sip_port", -1),
    ("sip", "sip_port", "abc"),
    ("sip", "sip_port", 5060.5),
    ("sip", "sip_port", True),
    ("sip", "sip_port", [5060]),
    ("sip", "max_calls", -5),
    ("sip", "max_calls", 0),
    ("sip", "max_calls", 100001),
    ("sip", "sip_domain", "bad domain"),
    ("sip", "sip_domain", "localhost"),
    ("sip", "sip_domain", "10.0.0.1"),
    ("sip", "sip_domain", "-x.example.com"),
    ("sip", "sip_domain", "a" * 64 + ".com"),
    ("sip", "sip_domain", 42),
    ("sip", "customer_connectivity", "not a host!"),
    ("web", "https_port", 65536),
    ("web", "public_hostname", "under_score.example.com"),
    ("pbx", "max_channels", -1),
    ("jabber", "xmpp_domain", "example..com"),
    ("que", "password", "short"),
    ("que", "username", "   "),
    ("que", "username", "u" * 65),
    ("wk", "max_jobs", 1025),
    ("dd", "replication_factor", 10),
    ("es", "heap_size_mb", -1024),
    ("us", "quota_gb", "lots"),
    ("us", "path", ""),
    # numbers in other scripts' digits, or too many digits for int()
    ("sip", "sip_port", "٥٠٦٠"),
    ("sip", "sip_port", "５０６０"),
    ("sip", "sip_port", "5060³"),
    ("sip", "max_calls", "①"),
    ("sip", "max_calls", "9" * 5000),
    ("pbx", "rtp_port_min", "١٠٠٠٠"),
]


def test_bad_parameter_values_name_the_parameter(live: ControlledApi) -> None:
    c = live.client
    nid = add_node(c, unique("params"), public_ip="203.0.113.81")["node_id"]
    with unchanged(c, nid):
        for role, name, value in BAD_PARAMETERS:
            data = refused(
                c,
                nid,
                "POST",
                f"{API}/nodes/{nid}/roles",
                status=422,
                check=False,
                json={"role": role, "parameters": {name: value}},
            )
            named = [loc[-2:] for loc in field_locs(data)]
            assert named == [("parameters", name)], (role, name, value, data)
    # several bad parameters at once: each is named
    data = refused(
        c,
        nid,
        "POST",
        f"{API}/nodes/{nid}/roles",
        status=422,
        json={"role": "sip", "parameters": {"sip_port": 0, "max_calls": -1, "nope": 1}},
    )
    assert {loc[-2:] for loc in field_locs(data)} == {
        ("parameters", "sip_port"),
        ("parameters", "max_calls"),
        ("parameters", "nope"),
    }
    # a range that ends before it starts
    data = refused(
        c,
        nid,
        "POST",
        f"{API}/nodes/{nid}/roles",
        status=422,
        json={"role": "pbx", "parameters": {"rtp_port_min": 30000, "rtp_port_max": 20000}},
    )
    assert ("parameters", "rtp_port_max") in [loc[-2:] for loc in field_locs(data)]
    # too many parameters
    refused(
        c,
        nid,
        "POST",
        f"{API}/nodes/{nid}/roles",
        status=422,
        json={"role": "sip", "parameters": {f"p{i}": 1 for i in range(65)}},
    )
    # the same checks when editing an assigned role
    assign(c, nid, "sip")
    for name, value in (("sip_port", 70000), ("sip_domain", "bad domain"), ("nope", 1)):
        data = refused(
            c,
            nid,
            "PATCH",
            f"{API}/nodes/{nid}/roles/sip",
            status=422,
            json={"parameters": {name: value}},
        )
        assert [loc[-2:] for loc in field_locs(data)] == [("parameters", name)]
    # and values that are fine are normalized
    edited = expect(
        c.patch(
            f"{API}/nodes/{nid}/roles/sip",
            json={"parameters": {"sip_port": "5070", "sip_domain": "Voice.Example.COM."}},
        ),
        200,
    )
    params = edited["assignments"][0]["parameters"]
    assert params["sip_port"]["value"] == 5070
    assert params["sip_domain"]["value"] == "voice.example.com"


# --- addresses, host names, sizes -----------------------------------------------------------------

BAD_IPS = [
    "",
    " ",
    "10.0.0",
    "10.0.0.256",
    "256.1.1.1",
    "1.2.3.4.5",
    "10.0.0.1/24",
    "10.0.0.-1",
    "abc",
    "localhost",
    "0x0a.0.0.1",
    "010.0.0.1",
    "10.0.0.1 10.0.0.2",
    "10,0,0,1",
    "1.2.3.4:80",
    "１０.0.0.1",
    "::g",
    "1::2::3",
    "12345::1",
    "[::1]",
    "2001:db8::1/64",
    "fe80::1%",
    ":::",
]


def test_malformed_ips_are_refused_and_ipv6_is_fine(live: ControlledApi) -> None:
    c = live.client
    nid = add_node(c, unique("ips"))["node_id"]
    with unchanged(c, nid):
        for bad in BAD_IPS:
            invalid(
                c,
                None,
                "POST",
                f"{API}/nodes",
                [("body", "private_ip")],
                check=False,
                json={"hostname": unique("badip"), "private_ip": bad},
            )
            if bad:  # an empty public IP means "none"
                invalid(
                    c,
                    None,
                    "POST",
                    f"{API}/nodes",
                    [("body", "public_ip")],
                    check=False,
                    json={"hostname": unique("badip"), "private_ip": "10.0.0.1", "public_ip": bad},
                )
            for field in ("private_ip", "public_ip") if bad else ("private_ip",):
                invalid(
                    c,
                    nid,
                    "PATCH",
                    f"{API}/nodes/{nid}",
                    [("body", field)],
                    check=False,
                    json={field: bad},
                )
    for given_ip, stored in (
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("::1", "::1"),
        ("::ffff:10.0.0.1", "::ffff:a00:1"),
        ("fd00::a:b", "fd00::a:b"),
        (" 10.0.0.7 ", "10.0.0.7"),
    ):
        created = add_node(c, unique("v6"), private_ip=given_ip, public_ip=given_ip)
        assert created["private_ip"] == stored
        assert created["public_ip"] == stored
    patched = expect(c.patch(f"{API}/nodes/{nid}", json={"public_ip": "2001:DB8::2"}), 200)
    assert patched["public_ip"] == "2001:db8::2"
    # a public IP given as IPv6 satisfies the roles that need one
    assert "sip" in assign(c, nid, "sip")["roles"]


def test_bad_hostnames_are_refused(live: ControlledApi) -> None:
    c = live.client
    bad_names = (
        "",
        "   ",
        "-lead",
        "trail-",
        "a..b",
        "under_score",
        "with space",
        "hôst",
        "a" * 64,
        ".",
        "a/b",
        "x" * 300,
        ("a" * 63 + ".") * 4,
    )
    with unchanged(c):
        for bad in bad_names:
            invalid(
                c,
                None,
                "POST",
                f"{API}/nodes",
                [("body", "hostname")],
                check=False,
                json={"hostname": bad, "private_ip": "10.0.0.1"},
            )


def test_oversized_input(live: ControlledApi, node: dict[str, Any]) -> None:
    c = live.client
    nid = node["node_id"]
    invalid(
        c,
        None,
        "POST",
        f"{API}/nodes",
        [("body", "hostname")],
        json={"hostname": "h" * 300, "private_ip": "10.0.0.1"},
    )
    invalid(
        c,
        None,
        "POST",
        f"{API}/nodes",
        [("body", "container_id")],
        json={"hostname": unique("big"), "private_ip": "10.0.0.1", "container_id": "c" * 200},
    )
    invalid(
        c, nid, "PATCH", f"{API}/nodes/{nid}", [("body", "hostname")], json={"hostname": "h" * 300}
    )
    for name in ("standby", "mark-damaged", "regenerate-session-key"):
        invalid(
            c,
            nid,
            "POST",
            f"{API}/nodes/{nid}/actions/{name}",
            [("body", "reason")],
            json={"reason": "r" * 5000},
        )
    invalid(
        c,
        None,
        "POST",
        f"{API}/extensions",
        [("body", "label")],
        json={"number": "1234", "label": "l" * 300},
    )
    invalid(c, None, "POST", f"{API}/extensions", [("body", "number")], json={"number": "9" * 21})
    invalid(c, None, "GET", f"{API}/nodes", [("query", "q")], params={"q": "q" * 300})
    # a body of 2 MB is refused before it is read: 413, as JSON, and nothing changes
    huge = json.dumps({"hostname": "big", "private_ip": "10.0.0.1", "container_id": "c" * 2**21})
    data = refused(
        c,
        None,
        "POST",
        f"{API}/nodes",
        status=413,
        content=huge.encode(),
        headers={"content-type": "application/json"},
    )
    assert "larger" in data["detail"]


def test_oversized_chunked_body_is_413(live: ControlledApi, node: dict[str, Any]) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(32):
            yield b" " * 65536

    nid = node["node_id"]
    with live.isolated() as client:  # the server closes the connection after a 413
        data = refused(
            client,
            nid,
            "PATCH",
            f"{API}/nodes/{nid}",
            status=413,
            content=chunks(),
            headers={"content-type": "application/json"},
        )
    assert "larger" in data["detail"]


def test_chunked_body_within_the_limit_is_read(live: ControlledApi, node: dict[str, Any]) -> None:
    """A body without Content-Length reaches the application whole."""
    nid = node["node_id"]
    payload = json.dumps({"container_id": "ctr-chunked", "hostname": node["hostname"]}).encode()
    pieces = [payload[i : i + 7] for i in range(0, len(payload), 7)]
    edited = expect(
        live.client.patch(
            f"{API}/nodes/{nid}",
            content=iter(pieces),
            headers={"content-type": "application/json"},
        ),
        200,
    )
    assert edited["container_id"] == "ctr-chunked"
    # and a chunked body that is not JSON is a 422, not a 413 or a 400
    refused(
        live.client,
        nid,
        "PATCH",
        f"{API}/nodes/{nid}",
        status=422,
        content=iter([b"{bad", b"json"]),
        headers={"content-type": "application/json"},
    )


# --- unknown things, bad queries ------------------------------------------------------------------

NODE_PATHS: list[tuple[str, str, Any]] = [
    ("GET", "", None),
    ("PATCH", "", {"hostname": "ghost"}),
    ("DELETE", "", None),
    ("GET", "/events", None),
    ("POST", "/roles", {"role": "jabber"}),
    ("PATCH", "/roles/jabber", {"parameters": {"c2s_port": 5223}}),
    ("DELETE", "/roles/jabber", None),
    ("POST", "/roles/jabber/remove", {"confirm": True}),
    ("POST", "/maintenance", {"reason": "disk swap"}),
    ("DELETE", "/maintenance", None),
    *(
        ("POST", f"/actions/{name}", None)
        for name in (
            "standby",
            "activate",
            "deactivate",
            "mark-damaged",
            "fix",
            "regenerate-session-key",
        )
    ),
]


def test_unknown_node_is_404_on_every_node_path(live: ControlledApi) -> None:
    c = live.client
    schema = expect(c.get("/openapi.json"), 200)
    node_paths = {p for p in schema["paths"] if p.startswith(f"{API}/nodes/{{node_id}}")}
    covered = {f"{API}/nodes/{{node_id}}" + suffix for _, suffix, _ in NODE_PATHS}
    covered = {p.replace("/jabber", "/{code}") for p in covered}
    assert node_paths <= covered, node_paths - covered
    for node_id in (UNKNOWN, 0, -1):
        for method, suffix, payload in NODE_PATHS:
            data = refused(
                c, None, method, f"{API}/nodes/{node_id}{suffix}", status=404, json=payload
            )
            assert str(node_id) in data["detail"], data
    refused(c, None, "GET", f"{API}/events", status=404, params={"node_id": UNKNOWN})
    for fmt in ("csv", "jsonl"):  # an export is refused before it starts streaming
        params = {"node_id": UNKNOWN, "format": fmt}
        refused(c, None, "GET", f"{API}/events", status=404, params=params)


@pytest.mark.parametrize("node_id", [2**31, 2**63, 10**20], ids=["2^31", "2^63", "10^20"])
def test_huge_node_ids_are_404(live: ControlledApi, node_id: int) -> None:
    with unchanged(live.client):
        for method, suffix, payload in NODE_PATHS:
            data = refused(
                live.client,
                None,
                method,
                f"{API}/nodes/{node_id}{suffix}",
                status=404,
                check=False,
                json=payload,
            )
            assert str(node_id) in data["detail"]
        refused(live.client, None, "GET", f"{API}/events", status=404, params={"node_id": node_id})


def test_huge_offsets(live: ControlledApi, node: dict[str, Any]) -> None:
    nid = node["node_id"]
    paths = ("/nodes", "/events", "/extensions", f"/nodes/{nid}/events")
    # the largest offset accepted finds nothing
    for path in paths:
        data = expect(live.client.get(f"{API}{path}", params={"offset": 2**31 - 1}), 200)
        assert data["items"] == []
        assert data["total"] >= 0
    # beyond it: 422 naming the offset
    for value in (2**31, 2**63, 10**20):
        for path in paths:
            invalid(
                live.client,
                None,
                "GET",
                f"{API}{path}",
                [("query", "offset")],
                params={"offset": value},
            )


def test_unknown_action_is_422(live: ControlledApi, node: dict[str, Any]) -> None:
    c = live.client
    nid = node["node_id"]
    for name in ("explode", "delete", "Standby", "STANDBY", "activate ", "online", "x" * 300):
        invalid(c, nid, "POST", f"{API}/nodes/{nid}/actions/{name}", [("path", "action")])
    assert get_node(c, nid)["status"] == "Offline"


def test_bad_query_values_name_the_query_field(live: ControlledApi) -> None:
    c = live.client
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/nodes", {"status": "Nope"}, "status"),
        ("/nodes", {"status": "online"}, "status"),
        ("/nodes", {"sort": "evil"}, "sort"),
        ("/nodes", {"sort": "hostname; DROP TABLE nodes"}, "sort"),
        ("/nodes", {"sort": "--id"}, "sort"),
        ("/nodes", {"sort": "session_key_digest"}, "sort"),
        ("/nodes", {"limit": 0}, "limit"),
        ("/nodes", {"limit": -1}, "limit"),
        ("/nodes", {"limit": 501}, "limit"),
        ("/nodes", {"offset": -1}, "offset"),
        ("/nodes", {"role": "zz"}, "role"),
        ("/events", {"limit": 0}, "limit"),
        ("/events", {"offset": -1}, "offset"),
        ("/extensions", {"limit": 0}, "limit"),
    ]
    for path, params, field in cases:
        invalid(c, None, "GET", f"{API}{path}", [("query", field)], params=params)
    # several at once: each is named
    named = invalid(
        c,
        None,
        "GET",
        f"{API}/nodes",
        [("query", "status"), ("query", "sort")],
        params={"status": "Nope", "sort": "evil"},
    )
    assert len(named) == 2
    # and good values work
    listing = expect(c.get(f"{API}/nodes", params={"status": "Offline", "sort": "-hostname"}), 200)
    hostnames = [n["hostname"] for n in listing["items"]]
    assert hostnames == sorted(hostnames, reverse=True)


# --- numbers: ASCII digits only ---------------------------------------------------------------
# str.isdigit() takes '³', '①', '٣' and fullwidth digits; int() refuses some of them (a 500
# once) and takes others. Every numeric query parameter takes ASCII digits 0-9 only, in one
# shared place (voipcloud.domain.numbers, and voipcloud.api.params.Whole for the API).

NON_ASCII_DIGITS = ["³", "①", "٣", "１", "1١", "٣٠"]
NOT_PLAIN_DIGITS = ["+1", " 1", "1 ", "1_000", "1.0", "0x10", "1e3", "-0", "", "٣\n"]
HUGE_DIGITS = ["9" * 33, "9" * 400, "9" * 5000]


def _numeric_query_params(nid: int) -> list[tuple[str, str]]:
    paths = ["/nodes", "/events", f"/nodes/{nid}/events", "/extensions"]
    found = [(path, name) for path in paths for name in ("limit", "offset")]
    found += [("/storage/voicemail/resources", "limit"), ("/storage/voicemail/resources", "offset")]
    return [*found, ("/events", "node_id")]


def test_numeric_query_params_take_ascii_digits_only(
    live: ControlledApi, node: dict[str, Any]
) -> None:
    c = live.client
    nid = node["node_id"]
    cases = 0
    with unchanged(c, nid):
        for path, name in _numeric_query_params(nid):
            for value in NON_ASCII_DIGITS + NOT_PLAIN_DIGITS + HUGE_DIGITS:
                data = refused(
                    c, None, "GET", f"{API}{path}", status=422, check=False, params={name: value}
                )
                assert field_locs(data) == [("query", name)], (path, name, value, data)
                cases += 1
            # plain ASCII digits still work, leading zeros too
            expect(
                c.get(f"{API}{path}", params={name: str(nid) if name == "node_id" else "01"}), 200
            )
    assert cases == 11 * (len(NON_ASCII_DIGITS) + len(NOT_PLAIN_DIGITS) + len(HUGE_DIGITS))
    data = refused(
        c, None, "GET", f"{API}/events", status=422, params={"limit": "³", "offset": "①"}
    )
    assert sorted(field_locs(data)) == [("query", "limit"), ("query", "offset")]
    assert "digits 0-9" in data["detail"][0]["msg"]


def test_search_text_with_non_ascii_digits_is_text(live: ControlledApi) -> None:
    """`q` is text that may also be a NodeID: a digit-like character is searched, never a 500."""
    c = live.client
    nid = add_node(c, unique("digit-search"))["node_id"]
    for value in [*NON_ASCII_DIGITS, "9" * 30, "9" * 253, f"{nid}"]:
        found = expect(c.get(f"{API}/nodes", params={"q": value}), 200)
        ids = [n["node_id"] for n in found["items"]]
        assert (nid in ids) == (value == str(nid)), (value, ids)


def test_every_int_query_or_form_param_is_strict(tmp_path: Path) -> None:
    """A guard for routes added later: each int query, header or form parameter of the API and
    the web pages is declared with voipcloud.api.params.Whole (strict ASCII digits)."""
    app = create_app(Settings(data_dir=tmp_path))
    seen: list[str] = []
    loose: list[str] = []

    def visit(dependant: Any, path: str) -> None:
        for param in (*dependant.query_params, *dependant.header_params, *dependant.body_params):
            annotation = param.field_info.annotation
            if annotation is int or int in get_args(annotation):
                seen.append(f"{path} {param.name}")
                if STRICT not in param.field_info.metadata:
                    loose.append(f"{path} {param.name}")
        for sub in dependant.dependencies:
            visit(sub, path)

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                visit(route.dependant, route.path)
            elif hasattr(route, "original_router"):  # FastAPI's included router
                walk(route.original_router.routes)

    walk(app.routes)
    assert len(seen) >= 11, seen  # the 11 of test_numeric_query_params_take_ascii_digits_only
    assert not loose, f"int parameters not parsed strictly: {loose}"
    app.state.controller.ctx.db.dispose()


def test_huge_content_length_is_refused_not_500(live: ControlledApi) -> None:
    """A Content-Length of thousands of digits: refused by the parser (400) or the body limit
    (413); the body limit itself never calls int() on thousands of digits."""
    assert _declared_length({"headers": [(b"content-length", b"9" * 5000)]}) >= 10**18
    assert _declared_length({"headers": [(b"content-length", "٣".encode())]}) == -1
    for value in ("9" * 5000, "9" * 30, "１０"):
        with socket.create_connection(("127.0.0.1", int(live.base_url.rsplit(":", 1)[1]))) as s:
            s.settimeout(10)
            s.sendall(
                f"POST {API}/nodes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {value}\r\n\r\n{{}}".encode()
            )
            status = s.recv(100).split(b"\r\n")[0]
        assert status.split()[1] in (b"400", b"413"), (value[:10], status)


# --- numbers in the web pages: a notice on the page or a form error, never a 500 ---------------


def _web_client(live: ControlledApi) -> httpx.Client:
    from tests.conftest import ADMIN_PASSWORD

    web = httpx.Client(base_url=live.base_url, timeout=30)
    page = web.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    answer = web.post(
        "/login",
        data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token.group(1)},
    )
    assert answer.status_code in (302, 303), answer.text[:500]
    return web


WEB_PAGING = [("/", "page"), ("/", "per_page"), ("/nodes/listing", "page")]
WEB_PAGING += [("/nodes/listing", "per_page"), ("/events", "page")]


def test_web_numeric_params_with_non_ascii_digits(live: ControlledApi) -> None:
    nid = add_node(live.client, unique("web-digits"))["node_id"]
    checked = 0
    web = _web_client(live)
    try:
        for path, name in WEB_PAGING:
            for value in [*NON_ASCII_DIGITS, "+1", "1_000", "9" * 7, "9" * 5000, "0"]:
                answer = web.get(path, params={name: value})
                if answer.status_code == 422:  # longer than the query field takes at all
                    assert len(value) > 7, (path, name, value)
                    assert field_locs(answer.json()) == [("query", name)]
                else:  # the page, with a notice; the defaults are shown instead
                    assert answer.status_code == 200, (path, name, value, answer.status_code)
                    assert "flash-error" in answer.text, (path, name, value)
                    assert "must be" in answer.text, (path, name, value)
                checked += 1
            good = web.get(path, params={name: "1" if name == "page" else "50"})
            assert good.status_code == 200
            assert "flash-error" not in good.text, (path, name)
        # events of one node by a digit-like "NodeID": a notice that there is no such node
        for value in NON_ASCII_DIGITS:
            answer = web.get("/events", params={"node": value})
            assert answer.status_code == 200, (value, answer.status_code)
            assert "There is no node" in answer.text, value
            checked += 1
        assert web.get("/events", params={"node": str(nid)}).status_code == 200
        # a numeric role parameter in the Assign Role form: a form error (422) naming it
        page = web.get(f"/nodes/{nid}/roles/new", params={"role": "sip"})
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, page.text[:300]
        for value in ["٥٠٦٠", "５０６０", "5060³", "①", "9" * 5000]:
            answer = web.post(
                f"/nodes/{nid}/roles",
                data={"csrf_token": token.group(1), "role": "sip", "p_sip_port": value},
            )
            assert answer.status_code == 422, (value, answer.status_code, answer.text[:300])
            assert "must be an integer" in answer.text.lower(), value
            checked += 1
    finally:
        web.close()
    assert checked == len(WEB_PAGING) * 11 + len(NON_ASCII_DIGITS) + 5
    assert get_node(live.client, nid)["roles"] == []


# --- input the database cannot store ---------------------------------------------------------
# PostgreSQL cannot store NUL; no one-line field should hold any other control character either.
# Each is refused with a 422 naming the field (or a 404 for a path naming nothing).

CONTROL_CASES: list[tuple[str, str, str, dict[str, Any], int, tuple[Any, ...]]] = [
    (
        "add-container",
        "POST",
        "/nodes",
        {"json": {"hostname": "{host}", "private_ip": "10.0.0.1", "container_id": "a\0"}},
        422,
        ("body", "container_id"),
    ),
    (
        "add-hostname",
        "POST",
        "/nodes",
        {"json": {"hostname": "nul\0host", "private_ip": "10.0.0.1"}},
        422,
        ("body", "hostname"),
    ),
    (
        "add-private-ip",
        "POST",
        "/nodes",
        {"json": {"hostname": "{host}", "private_ip": "10.0.0.1\0"}},
        422,
        ("body", "private_ip"),
    ),
    (
        "edit-container",
        "PATCH",
        "/nodes/{nid}",
        {"json": {"container_id": "a\0b"}},
        422,
        ("body", "container_id"),
    ),
    (
        "edit-container-newline",
        "PATCH",
        "/nodes/{nid}",
        {"json": {"container_id": "a\nb"}},
        422,
        ("body", "container_id"),
    ),
    (
        "edit-hostname-escape",
        "PATCH",
        "/nodes/{nid}",
        {"json": {"hostname": "host\x1b[2J"}},
        422,
        ("body", "hostname"),
    ),
    (
        "action-reason",
        "POST",
        "/nodes/{nid}/actions/regenerate-session-key",
        {"json": {"reason": "a\0b"}},
        422,
        ("body", "reason"),
    ),
    (
        "action-reason-bell",
        "POST",
        "/nodes/{nid}/actions/standby",
        {"json": {"reason": "ding\x07"}},
        422,
        ("body", "reason"),
    ),
    (
        "role-string-parameter",
        "POST",
        "/nodes/{nid}/roles",
        {"json": {"role": "que", "parameters": {"username": "qu\0eue"}}},
        422,
        ("body", "parameters", "username"),
    ),
    (
        "role-secret-parameter",
        "POST",
        "/nodes/{nid}/roles",
        {"json": {"role": "que", "parameters": {"password": "secret\0secret"}}},
        422,
        ("body", "parameters", "password"),
    ),
    (
        "edit-role-parameter",
        "PATCH",
        "/nodes/{nid}/roles/jabber",
        {"json": {"parameters": {"xmpp_domain": "chat\0.example.com"}}},
        422,
        ("body", "parameters", "xmpp_domain"),
    ),
    ("q", "GET", "/nodes", {"params": {"q": "a\0b"}}, 422, ("query", "q")),
    (
        "ext-label",
        "POST",
        "/extensions",
        {"json": {"number": "4321", "label": "a\0b"}},
        422,
        ("body", "label"),
    ),
    (
        "ext-label-tab",
        "POST",
        "/extensions",
        {"json": {"number": "4322", "label": "a\tb"}},
        422,
        ("body", "label"),
    ),
    (
        "ext-number",
        "POST",
        "/extensions",
        {"json": {"number": "43\x0023"}},
        422,
        ("body", "number"),
    ),
    ("ext-path", "DELETE", "/extensions/12%0034", {}, 404, ()),
    (
        "login",
        "POST",
        "/auth/token",
        {"json": {"username": "ad\0min", "password": "whatever"}},
        422,
        ("body", "username"),
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "loc"),
    [pytest.param(*case[1:], id=case[0]) for case in CONTROL_CASES],
)
def test_control_characters_are_refused_naming_the_field(
    live: ControlledApi,
    node: dict[str, Any],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    loc: tuple[Any, ...],
) -> None:
    nid = node["node_id"]
    if "json" in kwargs and kwargs["json"].get("hostname") == "{host}":
        kwargs = {"json": {**kwargs["json"], "hostname": unique("ctl")}}
    data = refused(live.client, nid, method, API + path.format(nid=nid), status=status, **kwargs)
    if status == 422:
        locs = field_locs(data)
        assert loc in locs, (loc, locs)
        assert len(locs) == 1, locs
        assert data["detail"][0]["msg"]


def test_multiline_reason_is_kept(live: ControlledApi, node: dict[str, Any]) -> None:
    """A reason is free text: tabs and line breaks are fine (NUL and the like are not)."""
    nid = node["node_id"]
    reason = "maintenance window:\n\tnew disks"
    standby = expect(
        live.client.post(f"{API}/nodes/{nid}/actions/standby", json={"reason": reason}), 200
    )
    assert standby["status"] == "StandBy"
    assert standby["status_reason"] == reason


SURROGATE_CASES = [
    (
        "POST",
        "/nodes",
        '{"hostname": "{host}", "private_ip": "10.0.0.1", "container_id": "\\ud800"}',
        ("body", "container_id"),
    ),
    ("POST", "/nodes", '{"hostname": "\\udfff", "private_ip": "10.0.0.1"}', ("body", "hostname")),
    (
        "POST",
        "/nodes/{nid}/actions/regenerate-session-key",
        '{"reason": "\\ud800"}',
        ("body", "reason"),
    ),
    ("POST", "/nodes/{nid}/roles", '{"role": "\\ud800"}', ("body", "role")),
    (
        "POST",
        "/nodes/{nid}/roles",
        '{"role": "que", "parameters": {"username": "x\\udc00"}}',
        ("body", "parameters", "username"),
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "raw", "loc"),
    SURROGATE_CASES,
    ids=["container", "hostname", "reason", "role", "parameter"],
)
def test_lone_surrogates_are_422(
    live: ControlledApi,
    node: dict[str, Any],
    method: str,
    path: str,
    raw: str,
    loc: tuple[Any, ...],
) -> None:
    nid = node["node_id"]
    data = refused(
        live.client,
        nid,
        method,
        API + path.format(nid=nid),
        status=422,
        content=raw.replace("{host}", unique("sur")).encode(),
        headers={"content-type": "application/json"},
    )
    assert loc in field_locs(data)


@pytest.mark.parametrize("field", ["hostname", "private_ip"])
def test_null_hostname_or_private_ip_is_422(
    live: ControlledApi, node: dict[str, Any], field: str
) -> None:
    nid = node["node_id"]
    invalid(live.client, nid, "PATCH", f"{API}/nodes/{nid}", [("body", field)], json={field: None})


# --- what a node's agent reports is stored, cleaned ---------------------------------------------

DIRTY = "\0\x07\x1b\x7f"


def test_agent_inventory_with_control_characters_is_stored_cleaned(live: ControlledApi) -> None:
    """An agent's report is never lost: NUL, control characters and lone surrogates are
    dropped (line breaks become spaces), the rest is stored and shown."""
    c = live.client
    nid = add_node(c, unique("dirty-agent"))["node_id"]
    key = assign(c, nid, "jabber")["session_key"]
    inventory = {
        "os": f"Debian{DIRTY} GNU/Linux\n12",
        "kernel": f"6.1.0{DIRTY}-amd64",
        "container_id": f"ctr{DIRTY}-7",
        "version": f"1.0{DIRTY}",
        "components": [{"name": f"open{DIRTY}sips", "version": f"3.4{DIRTY}"}],
    }
    with live.anonymous() as agent:
        joined = expect(
            agent.post(
                f"{API}/agent/join",
                content=json.dumps({"session_key": key, "inventory": inventory}).encode(),
                headers={"content-type": "application/json"},
            ),
            200,
        )
    assert joined["node_id"] == nid
    node = get_node(c, nid)
    assert node["os"] == "Debian GNU/Linux 12"
    assert node["kernel"] == "6.1.0-amd64"
    assert node["container_id"] == "ctr-7"
    assert node["version"] == "1.0"
    assert node["components"] == [{"name": "opensips", "version": "3.4"}]
    joined_event = expect(c.get(f"{API}/nodes/{nid}/events"), 200)["items"][0]
    assert joined_event["operation"] == "agent-joined"
    assert "agent 1.0 joined" in joined_event["reason"]

    # a later inventory update through the service the agent channel calls
    live.controller.agents.record_inventory(
        nid, protocol.Inventory(os=f"Alpine{DIRTY}", kernel="6.6\r\n")
    )
    node = get_node(c, nid)
    assert (node["os"], node["kernel"]) == ("Alpine", "6.6")


def test_agent_failure_reason_with_control_characters_is_stored_cleaned(
    live: ControlledApi,
) -> None:
    c = live.client
    nid = add_node(c, unique("dirty-report"))["node_id"]
    assign(c, nid, "jabber")
    pending = action(c, nid, "activate")["pending_operation"]
    agents = live.controller.agents
    outcome = agents.report(
        nid,
        protocol.OutcomeReport(
            operation_id=pending["operation_id"],
            success=False,
            reason=f"apt-get failed{DIRTY}:\n\tE: no space left",
        ),
    )
    assert outcome.recorded
    node = get_node(c, nid)
    assert node["status"] == "ActivateFailed"
    assert node["status_reason"] == "apt-get failed:\n\tE: no space left"
    latest = expect(c.get(f"{API}/nodes/{nid}/events"), 200)["items"][0]
    assert latest["operation"] == "activation-failed"
    assert latest["reason"] == "apt-get failed:\n\tE: no space left"
    # a problem the agent reports is recorded the same way
    agents.problem(nid, f"handler crashed{DIRTY}")
    latest = expect(c.get(f"{API}/nodes/{nid}/events"), 200)["items"][0]
    assert latest["operation"] == "agent-problem"
    assert latest["reason"] == "handler crashed"


# --- fuzz -----------------------------------------------------------------------------------------

SAFE_TEXT = st.text(max_size=30)  # any text, NUL and lone surrogates included
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | SAFE_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(SAFE_TEXT, children, max_size=4)
    ),
    max_leaves=10,
)
HOSTNAMEISH = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.-]{0,30}", fullmatch=True)
IPISH = st.ip_addresses().map(str) | st.from_regex(r"[0-9a-f:.]{1,20}", fullmatch=True)
NODE_FIELD = JSON | HOSTNAMEISH | IPISH
NODE_BODY = JSON | st.dictionaries(
    st.sampled_from(["hostname", "private_ip", "public_ip", "container_id", "extra"]),
    NODE_FIELD,
    max_size=5,
)
PARAMETER_NAMES = sorted({p.name for role in ROLES.values() for p in role.parameters})
PARAMETER_VALUE = (
    JSON
    | st.integers(min_value=-10, max_value=70000)
    | HOSTNAMEISH
    | st.from_regex(r"[0-9]{1,6}", fullmatch=True)
)
ROLE_BODY = JSON | st.fixed_dictionaries(
    {"role": st.sampled_from(sorted(ROLES)) | SAFE_TEXT},
    optional={
        "parameters": st.dictionaries(
            st.sampled_from(PARAMETER_NAMES) | SAFE_TEXT, PARAMETER_VALUE, max_size=5
        )
        | JSON,
        "extra": JSON,
    },
)
FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _post(client: httpx.Client, path: str, payload: Any) -> httpx.Response:
    return client.post(
        path, content=json.dumps(payload).encode(), headers={"content-type": "application/json"}
    )


@FUZZ
@given(payload=NODE_BODY)
def test_fuzz_add_node(live: ControlledApi, payload: Any) -> None:
    response = _post(live.client, f"{API}/nodes", payload)
    data = body(response)
    assert response.status_code in (201, 409, 422), response.text
    if response.status_code == 201:
        assert data["status"] == "Offline"
        assert data["roles"] == []
        assert data["hostname"] == payload["hostname"].strip().lower().rstrip(".")
    elif response.status_code == 409:
        assert data["rule"] == "hostname-unique"
    else:
        assert field_locs(data)


@pytest.fixture(scope="module")
def fuzz_node(live: ControlledApi) -> int:
    created = add_node(live.client, unique("fuzz-target"), public_ip="203.0.113.99")
    return int(created["node_id"])


@FUZZ
@given(payload=ROLE_BODY)
def test_fuzz_assign_role(live: ControlledApi, fuzz_node: int, payload: Any) -> None:
    response = _post(live.client, f"{API}/nodes/{fuzz_node}/roles", payload)
    data = body(response)
    assert response.status_code in (201, 409, 422), response.text
    if response.status_code == 201:
        assert payload["role"] in data["roles"]
        # take it off again so that the next example can assign it too
        expect(live.client.delete(f"{API}/nodes/{fuzz_node}/roles/{payload['role']}"), 200)
    elif response.status_code == 409:
        assert data["rule"] in ("controller-role-reserved", "role-already-assigned"), data
    else:
        assert field_locs(data)
    assert get_node(live.client, fuzz_node)["status"] == "Offline"


def test_a_method_a_path_does_not_answer_is_405_naming_those_it_does(
    live: ControlledApi, node: dict[str, Any]
) -> None:
    """405 with `Allow` listing every method of the path, the API's routes being included
    under routers (FastAPI lists those routers, not their routes, at the application's top),
    and only the path's own: a later route whose path matches too is another resource."""
    c = live.client
    nid = node["node_id"]
    for method, path, allowed in (
        ("DELETE", "/nodes", "GET, POST"),
        ("PUT", f"/nodes/{nid}", "DELETE, GET, PATCH"),
        ("GET", f"/nodes/{nid}/actions/standby", "POST"),
        # not a node: only their own methods, not /nodes/{node_id}'s, nor their 405 routes'
        ("OPTIONS", "/nodes/summary", "GET"),
        ("OPTIONS", "/nodes/import", "POST"),
    ):
        answer = c.request(method, f"{API}{path}")
        assert answer.status_code == 405, (method, path, answer.text)
        assert answer.headers["Allow"] == allowed, (method, path)
        assert answer.json()["detail"] == f"Method Not Allowed; this path answers {allowed}"
