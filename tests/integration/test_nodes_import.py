"""Enrolling many nodes (`POST /nodes/import`) and many agents joining at once, through the real
API over HTTP, on SQLite and PostgreSQL.

An imported row must end exactly as Add Node followed by Assign Role would leave it (the node,
its roles, its history); a refused row must leave nothing; the joins written together (group
commit) must each get their own answer, record their own event once, and a wrong key among
them must be refused alone.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import LiveApi
from tests.integration.accounts_helpers import add_account, api_token, session
from voipcloud import protocol
from voipcloud.domain.imports import MAX_IMPORT

API = "/api/v1"
INVENTORY = protocol.Inventory(
    os="Debian GNU/Linux 12",
    kernel="Linux 6.1",
    version="9.9.9",
    components=[protocol.ComponentInfo(name="kamailio", version="5.7")],
).model_dump()


def imported(client: httpx.Client, rows: list[dict[str, Any]], status: int = 200) -> Any:
    answer = client.post(f"{API}/nodes/import", json={"nodes": rows})
    assert answer.status_code == status, answer.text[:1000]
    return answer.json()


def node_events(client: httpx.Client, node_id: int) -> list[dict[str, Any]]:
    answer = client.get(f"{API}/nodes/{node_id}/events", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    return list(reversed(answer.json()["items"]))  # oldest first


def summary_total(client: httpx.Client) -> int:
    return int(client.get(f"{API}/nodes/summary").json()["total"])


def listed(client: httpx.Client, q: str) -> int:
    return int(client.get(f"{API}/nodes", params={"q": q, "limit": 1}).json()["total"])


def join(base_url: str, key: str, **extra: Any) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=60) as anon:
        return anon.post(
            f"{API}/agent/join", json={"session_key": key, "inventory": INVENTORY, **extra}
        )


def test_a_mixed_batch_creates_the_valid_rows_and_refuses_the_others_alone(api: LiveApi) -> None:
    client = api.client
    taken = client.post(f"{API}/nodes", json={"hostname": "mx-taken", "private_ip": "10.0.0.1"})
    assert taken.status_code == 201
    before = summary_total(client)
    rows: list[dict[str, Any]] = [
        {"hostname": "MX-1.example.com ", "private_ip": "10.0.1.1", "roles": ["wk"]},
        {"hostname": "mx-bad host", "private_ip": "10.0.1.2", "roles": ["wk"]},
        {"hostname": "mx-2", "private_ip": "10.0.1.300"},
        {"hostname": "mx-1.example.com", "private_ip": "10.0.1.4", "roles": ["wk"]},  # twice
        {"hostname": "mx-taken", "private_ip": "10.0.1.5"},
        {"hostname": "mx-3", "private_ip": "10.0.1.6", "roles": ["sip"]},  # no public IP
        {
            "hostname": "mx-4",
            "private_ip": "10.0.1.7",
            "public_ip": "203.0.113.7",
            "roles": [{"role": "sip", "parameters": {"sip_port": 70000}}],
        },
        {"hostname": "mx-5", "private_ip": "10.0.1.8", "roles": ["wk", "nope"]},
        {"hostname": "mx-6", "private_ip": "10.0.1.9", "roles": ["que", "que"]},
        {"hostname": "mx-7", "private_ip": "10.0.1.10", "roles": ["ic"]},
        {
            "hostname": "mx-8",
            "private_ip": "10.0.1.11",
            "public_ip": "203.0.113.11",
            "roles": [{"role": "sip", "parameters": {"sip_port": "5070"}}, "wk"],
        },
        {"hostname": "mx-9", "private_ip": "10.0.1.12"},  # no role: created, no key
    ]
    answer = imported(client, rows)
    results = answer["results"]
    assert [r["index"] for r in results] == list(range(len(rows)))
    outcome = {r["index"]: (r["outcome"], r.get("field"), r.get("rule")) for r in results}
    assert outcome == {
        0: ("created", None, None),
        1: ("refused", "hostname", None),
        2: ("refused", "private_ip", None),
        3: ("refused", "hostname", "hostname-unique"),  # the rule of a second Add Node
        4: ("refused", "hostname", "hostname-unique"),
        5: ("refused", "public_ip", "public-ip-required"),
        6: ("refused", "roles.0.parameters.sip_port", None),
        7: ("refused", "roles.1.role", None),
        8: ("refused", "roles.1.role", "role-already-assigned"),
        9: ("refused", "roles.0.role", "controller-role-reserved"),
        10: ("created", None, None),
        11: ("created", None, None),
    }
    assert (answer["created"], answer["refused"]) == (3, 9)
    assert all(r["reason"] for r in results if r["outcome"] == "refused")
    assert all(r.get("session_key") is None for r in results if r["outcome"] == "refused")
    first, eighth, ninth = results[0], results[10], results[11]
    assert first["hostname"] == "mx-1.example.com"  # normalized as Add Node stores it
    assert first["session_key"]
    assert eighth["session_key"]
    assert ninth["session_key"] is None
    assert answer["enrolment"]["controller_url"] == api.base_url
    # the created nodes as the single path leaves them; nothing of the refused rows
    eight = client.get(f"{API}/nodes/{eighth['node_id']}").json()
    assert eight["status"] == "Offline"
    assert eight["roles"] == ["sip", "wk"]
    assert eight["assignments"][0]["parameters"]["sip_port"]["value"] == 5070
    assert eight["session_key"] == eighth["session_key"]
    for hostname in ("mx-bad", "mx-2", "mx-3", "mx-4", "mx-5", "mx-6", "mx-7"):
        assert listed(client, hostname) == 0, hostname
    assert listed(client, "mx-1.example.com") == 1
    # the kept counts (triggers) and the listing agree
    assert summary_total(client) == before + 3
    assert client.get(f"{API}/nodes", params={"limit": 1}).json()["total"] == before + 3
    # the same history as Add Node then Assign Role: actor, operation, statuses, reasons
    history = [
        (e["actor"], e["operation"], e["status_before"], e["status_after"], e["reason"])
        for e in node_events(client, eighth["node_id"])
    ]
    assert history == [
        ("admin:admin", "add-node", None, "Offline", "node mx-8 added"),
        ("admin:admin", "assign-role", "Offline", "Offline", "role sip assigned"),
        ("admin:admin", "assign-role", "Offline", "Offline", "role wk assigned"),
    ]


def test_an_imported_node_is_the_node_add_and_assign_make(api: LiveApi) -> None:
    client = api.client
    single = client.post(
        f"{API}/nodes",
        json={"hostname": "eq-single", "private_ip": "10.0.2.1", "public_ip": "203.0.113.21"},
    ).json()["node_id"]
    for role, parameters in (("sip", {"sip_port": 5071}), ("wk", {})):
        assigned = client.post(
            f"{API}/nodes/{single}/roles", json={"role": role, "parameters": parameters}
        )
        assert assigned.status_code == 201, assigned.text
    row = {
        "hostname": "eq-import",
        "private_ip": "10.0.2.1",
        "public_ip": "203.0.113.21",
        "roles": [{"role": "sip", "parameters": {"sip_port": 5071}}, "wk"],
    }
    made = imported(client, [row])["results"][0]["node_id"]
    varying = {"node_id", "hostname", "created_at", "updated_at", "session_key", "etag"}

    def comparable(node_id: int, hostname: str) -> dict[str, Any]:
        answer = client.get(f"{API}/nodes/{node_id}")
        detail = {k: v for k, v in answer.json().items() if k not in varying}
        for assignment in detail["assignments"]:  # the version, not the digest of the name
            assignment["etag"] = assignment["etag"].split("-")[0]
        text = json.dumps(detail, sort_keys=True).replace(hostname, "H")
        return {"detail": json.loads(text), "version": answer.headers["etag"].split("-")[0]}

    assert comparable(made, "eq-import") == comparable(single, "eq-single")

    def events_of(node_id: int, hostname: str) -> list[tuple[Any, ...]]:
        return [
            (
                e["actor"],
                e["operation"],
                e["status_before"],
                e["status_after"],
                e["reason"].replace(hostname, "H"),
            )
            for e in node_events(client, node_id)
        ]

    assert events_of(made, "eq-import") == events_of(single, "eq-single")


def test_more_than_the_limit_or_none_is_422_naming_nodes(api: LiveApi) -> None:
    rows = [{"hostname": f"lim-{i}", "private_ip": "10.0.3.1"} for i in range(MAX_IMPORT + 1)]
    for body in ({"nodes": rows}, {"nodes": []}):
        answer = api.client.post(f"{API}/nodes/import", json=body)
        assert answer.status_code == 422, answer.text[:300]
        assert answer.json()["detail"][0]["loc"] == ["body", "nodes"]
    # a row that is not an object of the form: the request is malformed as a whole
    answer = api.client.post(f"{API}/nodes/import", json={"nodes": [{"hostname": "x"}]})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "nodes", 0, "private_ip"]
    assert listed(api.client, "lim-") == 0
    # /nodes/import is not a node
    wrong = api.client.get(f"{API}/nodes/import")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"


def test_viewers_and_read_tokens_may_not_import(api: LiveApi) -> None:
    add_account(api, "victor", "viewer")
    add_account(api, "olga", "operator")
    row = [{"hostname": "perm-1", "private_ip": "10.0.4.1", "roles": ["wk"]}]
    victor = session(api.base_url, "victor")
    refused = victor.post(f"{API}/nodes/import", json={"nodes": row})
    victor.close()
    assert refused.status_code == 403
    assert refused.json()["rule"] == "role-forbidden"
    read_only = api_token(api.client, "reader", "read")["token"]
    with httpx.Client(
        base_url=api.base_url, headers={"Authorization": f"Bearer {read_only}"}
    ) as reader:
        refused = reader.post(f"{API}/nodes/import", json={"nodes": row})
        assert refused.status_code == 403
        assert refused.json()["rule"] == "token-read-only"
    assert listed(api.client, "perm-1") == 0
    olga = session(api.base_url, "olga")
    done = olga.post(f"{API}/nodes/import", json={"nodes": row})
    olga.close()
    assert done.status_code == 200, done.text
    node_id = done.json()["results"][0]["node_id"]
    assert {e["actor"] for e in node_events(api.client, node_id)} == {"operator:olga"}


def test_concurrent_joins_each_get_their_own_answer_and_one_event(api: LiveApi) -> None:
    count = 24
    rows = [
        {"hostname": f"cj-{i}", "private_ip": "10.0.5.1", "roles": ["wk"]} for i in range(count)
    ]
    results = imported(api.client, rows)["results"]
    keys = {r["node_id"]: r["session_key"] for r in results}
    other_node, other_key = next(iter(keys.items()))
    wrong_keys = ["not-a-key-" + "x" * 30, "another-wrong-key-" + "y" * 20]
    answers: dict[str, httpx.Response] = {}
    start = threading.Barrier(count + len(wrong_keys) + 1)

    def attempt(label: str, key: str, **extra: Any) -> None:
        start.wait(timeout=30)
        answers[label] = join(api.base_url, key, **extra)

    threads = [threading.Thread(target=attempt, args=(str(n), k)) for n, k in keys.items()]
    threads += [
        threading.Thread(target=attempt, args=(f"wrong-{i}", k)) for i, k in enumerate(wrong_keys)
    ]
    # the key of one node presented by the agent of another: refused, that one alone
    stranger = max(keys)
    threads.append(
        threading.Thread(target=attempt, args=("stranger", other_key), kwargs={"node_id": stranger})
    )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == count + len(wrong_keys) + 1
    for node_id in keys:
        ok = answers[str(node_id)]
        assert ok.status_code == 200, ok.text
        assert ok.json()["node_id"] == node_id
    for label in ("wrong-0", "wrong-1", "stranger"):
        assert answers[label].status_code == 401, answers[label].text
    assert "another node" in answers["stranger"].json()["detail"]
    # each credential works for its own node only
    tokens = {n: answers[str(n)].json()["agent_token"] for n in keys}
    assert len(set(tokens.values())) == count
    # every join recorded once; the refusals recorded, with the node of the borrowed key
    found = api.client.get(
        f"{API}/events",
        params={"operation": "agent-joined,agent-join-refused", "limit": 500},
    ).json()["items"]
    joined = Counter(e["node_id"] for e in found if e["operation"] == "agent-joined")
    assert joined == Counter(dict.fromkeys(keys, 1))  # each once, the refused ones never
    refused = [e for e in found if e["operation"] == "agent-join-refused"]
    assert sorted(e["node_id"] for e in refused if e["node_id"]) == [other_node]
    assert sum(1 for e in refused if e["node_id"] is None) == len(wrong_keys)
    assert all(e["actor"] == "agent" for e in refused)
    for e in found:
        if e["operation"] == "agent-joined":
            assert e["actor"] == f"node:{e['node_id']}"
            assert "9.9.9 joined from 127.0.0.1" in e["reason"]
    # the inventory each agent sent is stored
    node = api.client.get(f"{API}/nodes/{other_node}").json()
    assert node["version"] == "9.9.9"
    assert node["os"] == "Debian GNU/Linux 12"


@pytest.mark.parametrize("rows", [30])
def test_import_of_rows_over_several_chunks_keeps_order_and_counts(api: LiveApi, rows: int) -> None:
    """Rows written in several transactions (a small chunk): the order of the answer, the
    duplicates across chunks, the kept counts."""
    from voipcloud.services import imports as service

    original = service.CHUNK
    service.CHUNK = 7  # the live server runs in this process
    try:
        body = [
            {"hostname": f"ch-{i % 25}", "private_ip": "10.0.6.1", "roles": ["wk"]}
            for i in range(rows)
        ]
        before = summary_total(api.client)
        answer = imported(api.client, body)
    finally:
        service.CHUNK = original
    outcomes = [(r["index"], r["outcome"], r.get("rule")) for r in answer["results"]]
    assert outcomes == [
        (i, "created", None) if i < 25 else (i, "refused", "hostname-unique") for i in range(rows)
    ]
    assert len({r["node_id"] for r in answer["results"] if r["node_id"]}) == 25
    assert summary_total(api.client) == before + 25
