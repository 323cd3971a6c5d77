"""The pure parts of enrolling many nodes (domain/imports.py) and the group commit's answers
(services/group_commit.py): the CSV form, the keys file, one outcome per caller."""

from __future__ import annotations

import asyncio
import csv
import io
import threading

import pytest

from voipcloud.domain import imports
from voipcloud.domain.errors import DatabaseUnavailable, FieldError, InvalidInput
from voipcloud.domain.imports import ImportOutcome, ImportResult
from voipcloud.services.group_commit import GroupCommit


def file_error(text: str) -> str:
    with pytest.raises(InvalidInput) as refused:
        imports.rows_from_csv(text)
    assert [e.loc for e in refused.value.errors] == [("file",)]
    return refused.value.errors[0].message


def test_csv_rows_become_the_import_rows_with_roles_and_parameters() -> None:
    text = (
        "\ufeffHostname,private_ip,public_ip,roles,sip.sip_port,container_id\n"
        "sip-1.example.com, 10.0.0.1 ,203.0.113.1,sip wk,5070,\n"
        "\n"  # blank lines are skipped
        "wk-1,10.0.0.2,,wk,,c-1\n"
        "plain,10.0.0.3\n"  # fewer cells: the rest empty
    )
    assert imports.rows_from_csv(text) == [
        {
            "hostname": "sip-1.example.com",
            "private_ip": "10.0.0.1",
            "public_ip": "203.0.113.1",
            "roles": [{"role": "sip", "parameters": {"sip_port": "5070"}}, "wk"],
        },
        {"hostname": "wk-1", "private_ip": "10.0.0.2", "container_id": "c-1", "roles": ["wk"]},
        {"hostname": "plain", "private_ip": "10.0.0.3"},
    ]
    assert imports.role_codes(" SIP;wk,  pbx ") == ["sip", "wk", "pbx"]


def test_a_csv_that_is_not_the_form_is_refused_naming_the_file_and_why() -> None:
    assert "empty" in file_error("")
    assert "unknown column 'colour'" in file_error("hostname,private_ip,colour\nh,10.0.0.1,red\n")
    assert "needs a private_ip column" in file_error("hostname\nh\n")
    assert "appears twice" in file_error("hostname,private_ip,hostname\n")
    assert "only the header" in file_error("hostname,private_ip\n")
    assert "line 2: 3 cells for 2 columns" in file_error("hostname,private_ip\nh,10.0.0.1,x\n")
    # a parameter for a role the row does not assign
    assert "line 2: sip.sip_port" in file_error(
        "hostname,private_ip,roles,sip.sip_port\nh,1,wk,5\n"
    )
    many = "hostname,private_ip\n" + "h,10.0.0.1\n" * (imports.MAX_IMPORT + 1)
    assert f"more than {imports.MAX_IMPORT}" in file_error(many)


def test_the_count_of_rows_is_bounded_naming_nodes() -> None:
    for count in (0, imports.MAX_IMPORT + 1):
        with pytest.raises(InvalidInput) as refused:
            imports.check_count(count)
        assert refused.value.errors[0].loc == ("body", "nodes")
    imports.check_count(imports.MAX_IMPORT)


def test_a_refused_row_names_its_field_within_the_row() -> None:
    one = imports.from_invalid(
        3, "h", InvalidInput.one(("body", "parameters", "sip_port"), "too big"), prefix="roles.1."
    )
    assert (one.index, one.outcome, one.field, one.reason) == (
        3,
        ImportOutcome.REFUSED,
        "roles.1.parameters.sip_port",
        "too big",
    )
    two = imports.from_invalid(
        0,
        "h",
        InvalidInput([FieldError(("body", "hostname"), "bad"), FieldError(("body", "x"), "no")]),
    )
    assert two.field == "hostname"
    assert two.reason == "hostname: bad; x: no"


def test_the_keys_file_holds_only_the_created_nodes_with_a_key() -> None:
    results = [
        ImportResult(0, ImportOutcome.CREATED, "a", node_id=7, session_key="k7"),
        ImportResult(1, ImportOutcome.REFUSED, "b", reason="no"),
        ImportResult(2, ImportOutcome.CREATED, "c", node_id=8),  # no role: no key
    ]
    assert list(csv.reader(io.StringIO(imports.keys_csv(results)))) == [
        ["node_id", "hostname", "session_key"],
        ["7", "a", "k7"],
    ]
    assert imports.summary(results) == (2, 1)


def test_group_commit_answers_each_caller_alone_and_batches_what_waits() -> None:
    entered = threading.Event()
    release = threading.Event()
    batches: list[list[int]] = []

    def write(items: list[int]) -> list[int | BaseException]:
        batches.append(items)
        if len(batches) == 1:  # hold the first batch until the others queue behind it
            entered.set()
            assert release.wait(10)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(write, max_batch=3)

    async def main() -> list[int | BaseException]:
        first = asyncio.ensure_future(group.submit(0))
        while not entered.is_set():
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(group.submit(i)) for i in range(1, 6)]
        await asyncio.sleep(0.01)
        release.set()
        return list(await asyncio.gather(first, *rest, return_exceptions=True))

    outcomes = asyncio.run(main())
    assert outcomes[0::2] == [0, 20, 40]
    assert [str(e) for e in outcomes[1::2]] == ["odd 1", "odd 3", "odd 5"]
    assert batches == [[0], [1, 2, 3], [4, 5]]  # the waiting ones together, at most 3
    assert (group.batches, group.items, group.largest) == (3, 6, 3)


def test_group_commit_gives_a_failure_of_the_whole_batch_to_each_caller() -> None:
    def write(items: list[int]) -> list[int | BaseException]:
        raise DatabaseUnavailable("cannot connect")

    group: GroupCommit[int, int] = GroupCommit(write)

    async def main() -> list[int | BaseException]:
        return list(
            await asyncio.gather(*(group.submit(i) for i in range(3)), return_exceptions=True)
        )

    outcomes = asyncio.run(main())
    assert all(isinstance(o, DatabaseUnavailable) for o in outcomes)
    # a later loop (another event loop) gets a writer of its own
    group2_out = asyncio.run(main())
    assert len(group2_out) == 3


def test_a_join_stores_what_sanitized_would() -> None:
    from voipcloud import protocol
    from voipcloud.services.agents import sanitized, stored_inventory

    reported = protocol.Inventory(
        os="Debian\x00 12\nbookworm",
        kernel=" 6.1\x07 ",
        container_id="",
        version="1.0\r\n",
        components=[protocol.ComponentInfo(name="kam\x00ailio", version="5.7\n1")],
    )
    clean = sanitized(reported)
    assert stored_inventory(reported) == {
        "os": clean.os,
        "kernel": clean.kernel,
        "container_id": None,
        "agent_version": clean.version,
        "components": [{"name": c.name, "version": c.version} for c in clean.components],
    }
    assert stored_inventory(reported)["os"] == "Debian 12 bookworm"
