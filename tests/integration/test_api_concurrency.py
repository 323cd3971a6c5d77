"""Two conflicting changes to one node at the same moment: exactly one wins, the other is a
409 naming a rule, and the event log records exactly one change. On SQLite and PostgreSQL.

Each round starts two threads at a barrier, each with its own HTTP client (its own connection)
against the live server, so the two requests really are in flight together. The loser may be
refused by the lifecycle rule (it saw the winner's change) or by the compare-and-set
(`concurrent-change`: it read the node before the winner wrote it); either way it changed
nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveApi
from tests.integration.live_controller import (
    API,
    ControlledApi,
    action,
    add_node,
    assign,
    bring_online,
    expect,
    get_node,
    node_events,
    running_app,
    unique,
)

ROUNDS = 5
RACE = "concurrent-change"
BUSY = "operation-in-progress"

Request = Callable[[httpx.Client], httpx.Response]


def race(base_url: str, token: str, first: Request, second: Request) -> list[httpx.Response]:
    """Send `first` and `second` at the same moment, each on its own client."""
    barrier = threading.Barrier(2, timeout=30)
    answers: list[httpx.Response | None] = [None, None]
    errors: list[BaseException] = []

    def run(index: int, request: Request) -> None:
        try:
            with httpx.Client(
                base_url=base_url, timeout=30, headers={"Authorization": token}
            ) as client:
                client.get("/healthz")  # open the connection before the race
                barrier.wait()
                answers[index] = request(client)
        except BaseException as exc:  # reported in the test's own thread
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(i, r), daemon=True)
        for i, r in enumerate((first, second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert all(not thread.is_alive() for thread in threads)
    done = [a for a in answers if a is not None]
    assert len(done) == 2
    for answer in done:
        assert answer.status_code < 500, answer.text
    return done


def one_winner(answers: list[httpx.Response], rules: set[str]) -> tuple[int, dict[str, Any]]:
    """Exactly one 200 and one 409 naming one of `rules`; returns (winner index, refusal)."""
    codes = [a.status_code for a in answers]
    assert sorted(codes) == [200, 409], [a.text for a in answers]
    winner = codes.index(200)
    refusal = answers[1 - winner].json()
    assert refusal["rule"] in rules, refusal
    assert refusal["detail"]
    return winner, refusal


def status_changes(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (e["operation"], e["status_before"], e["status_after"])
        for e in events
        if e["status_before"] is not None and e["status_before"] != e["status_after"]
    ]


def post(path: str) -> Request:
    return lambda client: client.post(path)


def delete(path: str) -> Request:
    return lambda client: client.delete(path)


def token(client: httpx.Client) -> str:
    return str(client.headers["Authorization"])


# --- through the `api` fixture: states an administrator reaches alone -------------------------


def test_two_standby_at_once(api: LiveApi) -> None:
    c = api.client
    for _ in range(ROUNDS):
        nid = add_node(c, unique("race-standby"))["node_id"]
        before = node_events(c, nid)
        answers = race(
            api.base_url,
            token(c),
            post(f"{API}/nodes/{nid}/actions/standby"),
            post(f"{API}/nodes/{nid}/actions/standby"),
        )
        one_winner(answers, {"standby-status", RACE})
        assert get_node(c, nid)["status"] == "StandBy"
        after = node_events(c, nid)
        assert len(after) == len(before) + 1
        assert status_changes(after) == [("standby", "Offline", "StandBy")]


def test_two_deactivate_of_a_standby_node_at_once(api: LiveApi) -> None:
    c = api.client
    for _ in range(ROUNDS):
        nid = add_node(c, unique("race-deactivate"))["node_id"]
        action(c, nid, "standby")
        before = node_events(c, nid)
        answers = race(
            api.base_url,
            token(c),
            post(f"{API}/nodes/{nid}/actions/deactivate"),
            post(f"{API}/nodes/{nid}/actions/deactivate"),
        )
        one_winner(answers, {"deactivate-status", RACE})
        assert get_node(c, nid)["status"] == "Deactivated"
        after = node_events(c, nid)
        assert len(after) == len(before) + 1
        assert status_changes(after)[-1] == ("deactivate", "StandBy", "Deactivated")
        assert len(status_changes(after)) == 2


def test_two_deletes_at_once(api: LiveApi) -> None:
    c = api.client
    for _ in range(ROUNDS):
        nid = add_node(c, unique("race-delete"))["node_id"]
        assign(c, nid, "jabber")
        before = node_events(c, nid)
        answers = race(
            api.base_url, token(c), delete(f"{API}/nodes/{nid}"), delete(f"{API}/nodes/{nid}")
        )
        one_winner(answers, {"delete-status", RACE})
        node = get_node(c, nid)
        assert node["status"] == "Deleted"
        assert node["roles"] == []
        assert node["session_key"] is None
        after = node_events(c, nid)
        assert len(after) == len(before) + 1
        assert status_changes(after) == [("delete", "Offline", "Deleted")]


def test_two_activations_at_once(api: LiveApi) -> None:
    c = api.client
    for _ in range(ROUNDS):
        nid = add_node(c, unique("race-activate"))["node_id"]
        assign(c, nid, "jabber")
        before = node_events(c, nid)
        answers = race(
            api.base_url,
            token(c),
            post(f"{API}/nodes/{nid}/actions/activate"),
            post(f"{API}/nodes/{nid}/actions/activate"),
        )
        winner, _ = one_winner(answers, {BUSY, RACE})
        node = get_node(c, nid)
        pending = node["pending_operation"]
        assert pending["kind"] == "activate"
        assert (
            pending["operation_id"] == answers[winner].json()["pending_operation"]["operation_id"]
        )
        after = node_events(c, nid)
        assert [e["operation"] for e in after[len(before) :]] == ["activate"]


def test_two_adds_with_one_hostname_at_once(api: LiveApi) -> None:
    c = api.client
    for _ in range(ROUNDS):
        hostname = unique("race-add")
        total = expect(c.get(f"{API}/events"), 200)["total"]

        def add(client: httpx.Client, host: str = hostname) -> httpx.Response:
            return client.post(f"{API}/nodes", json={"hostname": host, "private_ip": "10.0.0.9"})

        answers = race(api.base_url, token(c), add, add)
        codes = sorted(a.status_code for a in answers)
        assert codes == [201, 409], [a.text for a in answers]
        refusal = next(a for a in answers if a.status_code == 409).json()
        assert refusal["rule"] == "hostname-unique"
        listing = expect(c.get(f"{API}/nodes", params={"q": hostname}), 200)
        assert [n["hostname"] for n in listing["items"]] == [hostname]
        assert expect(c.get(f"{API}/events"), 200)["total"] == total + 1


# --- Online nodes: the agent's report goes through the running app's controller --------------


@pytest.fixture
def controlled(tmp_path: Path, database_url: str) -> Iterator[ControlledApi]:
    with running_app(tmp_path, database_url) as running:
        yield running


def test_mark_damaged_against_deactivate_on_an_online_node(controlled: ControlledApi) -> None:
    """Whichever comes first, the other is no longer allowed: Damaged cannot be deactivated,
    DeactivatePending cannot be marked Damaged."""
    live = controlled
    c = live.client
    winners = set()
    for _ in range(ROUNDS):
        nid = add_node(c, unique("race-online"))["node_id"]
        assign(c, nid, "jabber")
        bring_online(live, nid)
        before = node_events(c, nid)
        answers = race(
            live.base_url,
            token(c),
            post(f"{API}/nodes/{nid}/actions/mark-damaged"),
            post(f"{API}/nodes/{nid}/actions/deactivate"),
        )
        winner, refusal = one_winner(answers, {"mark-damaged-status", "deactivate-status", RACE})
        expected = ["Damaged", "DeactivatePending"][winner]
        winners.add(expected)
        node = get_node(c, nid)
        assert node["status"] == expected
        after = node_events(c, nid)
        assert len(after) == len(before) + 1
        operation = ["mark-damaged", "deactivate"][winner]
        assert status_changes(after)[-1] == (operation, "Online", expected)
        if refusal["rule"] != RACE:
            assert expected in refusal["detail"]  # it names the status the winner left
    assert winners  # (which one wins is up to the scheduler)


def test_edit_role_against_delete_assignment(controlled: ControlledApi) -> None:
    """Editing a role's parameters while another request takes the role off. Both may succeed
    one after the other; when they overlap, the later one is refused (404: no such role, or
    409 concurrent-change). Whatever happened, the node and its events agree: nothing is
    half-applied, and each success is exactly one event."""
    live = controlled
    c = live.client
    for _ in range(ROUNDS):
        nid = add_node(c, unique("race-role"))["node_id"]
        assign(c, nid, "jabber")
        assign(c, nid, "que")
        before = node_events(c, nid)
        edit, unassign = race(
            live.base_url,
            token(c),
            lambda client, n=nid: client.patch(
                f"{API}/nodes/{n}/roles/jabber", json={"parameters": {"c2s_port": 5223}}
            ),
            delete(f"{API}/nodes/{nid}/roles/jabber"),
        )
        assert edit.status_code in (200, 404, 409), edit.text
        assert unassign.status_code in (200, 409), unassign.text
        assert 200 in (edit.status_code, unassign.status_code)
        for answer in (edit, unassign):
            if answer.status_code == 409:
                assert answer.json()["rule"] == RACE
        node = get_node(c, nid)
        added = sorted(e["operation"] for e in node_events(c, nid)[len(before) :])
        expected_events = []
        if edit.status_code == 200:
            expected_events.append("edit-role")
        if unassign.status_code == 200:
            expected_events.append("delete-assignment")
            assert node["roles"] == ["que"]
        else:
            assert node["roles"] == ["jabber", "que"]
            (jabber,) = [a for a in node["assignments"] if a["role"] == "jabber"]
            assert jabber["parameters"]["c2s_port"]["value"] == 5223
        assert added == sorted(expected_events)
