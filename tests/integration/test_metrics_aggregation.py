"""How /metrics combines across the processes of `serve --workers N` (services/metrics.py,
`AGGREGATION`), seen from one process: every family it exposes has its rule, the gauges'
multiprocess modes are those rules, and a single process (`serve`, no --workers) keeps its
figures in memory even when PROMETHEUS_MULTIPROC_DIR is set: no file written, none to clean.
The workers themselves: tests/e2e/test_workers_metrics.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import Gauge
from prometheus_client.parser import text_string_to_metric_families

from voipcloud.services import metrics as metrics_module
from voipcloud.services.controller import Controller
from voipcloud.services.metrics import AGGREGATION, Metrics


def test_every_family_has_its_rule_and_one_process_writes_no_file(
    services: Controller, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "multiproc"
    shared.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    assert metrics_module._shared_dir is None  # no worker of several here
    collected = Metrics(services)
    collected.begin()
    collected.count_beat()
    collected.count_beat()
    collected.http_duration.labels("GET", "/metrics", "200").observe(0.01)
    families = {f.name: f for f in text_string_to_metric_families(collected.exposition().decode())}

    # a new family must say how it combines (the text parser shows counters' `_created` as
    # families of their own: one process exposes them, several processes do not)
    assert {n for n in families if not n.endswith("_created")} == set(AGGREGATION)
    assert families["voipcloud_agent_heartbeats"].samples[0].value == 2
    assert list(shared.iterdir()) == []  # in memory: nothing written under the directory
    assert set(AGGREGATION.values()) <= {"sum", "livesum", "max", "serving"}

    # the gauges a process keeps (not computed at scrape time) carry their rule as their mode
    for name, metric in vars(collected).items():
        if isinstance(metric, Gauge):
            assert metric._multiprocess_mode == AGGREGATION[metric._name], name


def test_prepare_wipes_and_dead_process_leaves_live_sums(tmp_path: Path) -> None:
    directory = tmp_path / "metrics-workers"
    directory.mkdir()
    for name in ("counter_11.db", "gauge_livesum_11.db", "gauge_max_11.db", "events-tail.json"):
        (directory / name).write_bytes(b"x")
    metrics_module.prepare_shared_dir(directory)  # a new run: counters start again
    assert list(directory.iterdir()) == []
    for name in ("counter_12.db", "gauge_livesum_12.db", "gauge_livesum_13.db"):
        (directory / name).write_bytes(b"x")
    metrics_module.process_died(directory, 12)  # its live gauges go, its counts stay
    assert sorted(p.name for p in directory.iterdir()) == ["counter_12.db", "gauge_livesum_13.db"]
