"""`/metrics` under `voipcloud serve --workers 2` shows the whole controller, whichever worker
serves the scrape (issue 15; services/metrics.py, `AGGREGATION`).

Real processes on a private PostgreSQL database: real agents whose channels both workers
hold (read from the kernel, as tests/e2e/test_serve_workers.py does), scrapes on fresh
connections until each worker has answered some, parsed by prometheus_client's own parser.
Shown: the agent channels gauge is the total on every scrape; the requests counted and the
operations counted are the controller's sums (each /metrics request once, each activation
once, not once per worker) and never go down; the fleet gauges read from the database are
not summed over the workers; after one worker is killed with SIGKILL and started again, the
live gauges do not count its dead process.
"""

from __future__ import annotations

import http.client
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_agent_lifecycle import add_node_with_roles
from tests.e2e.test_serve_workers import Workers, _agent_holder, _env, _holder
from tests.support import databases
from tests.support.processes import AgentProcess, node, wait_for, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture
def database(postgres_template: str) -> Iterator[str]:
    name = databases.create_database(template=postgres_template)  # migrated, nothing else
    yield databases.url_for(name)
    databases.drop_database(name)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SCRAPED = [0]  # /metrics requests this test made, answered 200


def _scrape(controller: Workers, token: str, pids: list[int]) -> tuple[int | None, Samples]:
    """(the worker that served it, every sample) of one scrape on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", controller.port, timeout=30)
    conn.connect()
    assert conn.sock is not None
    holder = _holder(controller.port, conn.sock.getsockname()[1], pids)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
    answer = conn.getresponse()
    body = answer.read().decode()
    conn.close()
    assert answer.status == 200, body
    SCRAPED[0] += 1
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"{key} twice in one scrape"
            samples[key] = sample.value
    return holder, samples


def _total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= set(found))


def _one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _scrapes(controller: Workers, token: str, pids: list[int], least: int) -> list[Samples]:
    """At least `least` scrapes, until each worker has served at least one (at most 60)."""
    served: set[int] = set()
    found: list[Samples] = []
    while len(found) < least or served != set(pids):
        assert len(found) < 60, f"60 scrapes served by {served} only, workers {pids}"
        holder, samples = _scrape(controller, token, pids)
        if holder is not None:
            served.add(holder)
        found.append(samples)
    return found


CHANNELS = "voipcloud_controller_agent_channels"
BEATS = "voipcloud_agent_heartbeats_total"
REQUESTS = "voipcloud_http_request_duration_seconds_count"
STARTED = "voipcloud_operations_started_total"
SUCCEEDED = "voipcloud_operations_succeeded_total"


def test_metrics_are_the_whole_controller(tmp_path: Path, database: str) -> None:
    SCRAPED[0] = 0
    controller = Workers(
        data_dir=tmp_path / "controller",
        env={**_env(database), "VOIPCLOUD_HEARTBEAT_INTERVAL": "1"},
    )
    agents: list[AgentProcess] = []
    try:
        controller.start()
        pids = controller.wait_workers()
        admin = controller.admin()
        token = admin.headers["Authorization"].removeprefix("Bearer ")
        shared = controller.data_dir / "metrics-workers"
        assert shared.is_dir()

        # real agents until both workers hold some channels (the kernel's hash decides)
        ids: list[int] = []
        holders: dict[int, int] = {}
        while len(agents) < 4 or len(set(holders.values())) < 2:
            assert len(agents) < 10, f"10 agents, all held by {set(holders.values())}"
            n = len(agents)
            node_id, key = add_node_with_roles(admin, f"mx-{n}", ["wk"])
            ids.append(node_id)
            agents.append(
                AgentProcess(
                    controller_url=controller.url,
                    session_key=key,
                    state_dir=tmp_path / f"agent-{n}",
                ).start()
            )
            holders[n] = wait_for(
                lambda a=agents[n]: _agent_holder(controller, a, pids),  # type: ignore[misc]
                timeout=60,
                what=f"agent {n}'s channel held by a worker",
            )
        total = len(agents)
        for node_id in ids:  # each activation is one operation, whichever worker counts it
            wait_for(
                lambda i=node_id: node(admin, i)["connectivity"] == "connected",  # type: ignore[misc]
                timeout=60,
                what=f"node {node_id} connected",
            )
            admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
        for node_id in ids:
            assert wait_status(admin, node_id, "Online", timeout=30)["status"] == "Online"
        wait_for(
            lambda: (
                _one(_scrape(controller, token, pids)[1], SUCCEEDED, operation="activate") == total
            ),
            timeout=30,
            what="the activations counted",
        )

        scrapes = _scrapes(controller, token, pids, least=6)
        before = 0.0
        for samples in scrapes:
            assert _one(samples, CHANNELS) == total  # the sum of both workers' channels
            assert _one(samples, STARTED, operation="activate") == total  # once, not per worker
            assert _one(samples, SUCCEEDED, operation="activate") == total
            assert _one(samples, "voipcloud_nodes", status="Online") == total  # not summed
            # read by the serving worker alone (its presence knows the other's channels)
            live = _total(samples, "voipcloud_nodes") - _one(
                samples, "voipcloud_nodes", status="Deleted"
            )
            assert _total(samples, "voipcloud_agents") == live
            assert _total(samples, "voipcloud_info") == 1
            beats = _one(samples, BEATS)
            assert beats >= before, "the heartbeats counter went down between scrapes"
            before = beats
        wait_for(  # and still counting
            lambda: _one(_scrape(controller, token, pids)[1], BEATS) > before,
            timeout=30,
            what="more heartbeats counted",
        )
        # every /metrics request answered so far, whichever worker answered it: counted once
        time.sleep(0.5)
        _holder_pid, last = _scrape(controller, token, pids)
        done = _total(last, REQUESTS, route="/metrics", status="200")
        assert done == SCRAPED[0] - 1, (done, SCRAPED[0])  # all but this one, both workers'

        # one worker killed with SIGKILL, started again: its channels are not counted twice
        victim = pids[0]
        beats_before = _one(last, BEATS)
        os.kill(victim, signal.SIGKILL)
        restarted = wait_for(
            lambda: len(now := controller.live_workers()) == 2 and victim not in now and now,
            timeout=90,
            what=f"worker pid {victim} started again: {controller.log()}",
        )
        for n, agent in enumerate(agents):
            wait_for(
                lambda a=agent: _agent_holder(controller, a, restarted),  # type: ignore[misc]
                timeout=60,
                what=f"agent {n} back on a live worker",
            )
        wait_for(
            lambda: _one(_scrape(controller, token, restarted)[1], CHANNELS) == total,
            timeout=30,
            what="the channels gauge back to the total",
        )
        before = beats_before
        for samples in _scrapes(controller, token, restarted, least=6):
            assert _one(samples, CHANNELS) == total  # the dead process's value is gone
            assert _one(samples, "voipcloud_agent_channel_handshakes") >= 0
            assert _one(samples, STARTED, operation="activate") == total  # the dead one's kept
            beats = _one(samples, BEATS)
            assert beats >= before, "the heartbeats counter went down after the restart"
            before = beats
        assert not [f for f in os.listdir(shared) if f.startswith(f"gauge_livesum_{victim}")]
    finally:
        for agent in agents:
            agent.stop()
        controller.stop()
