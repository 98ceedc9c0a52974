"""A short flash sale (loadtest/peak_shaving.py) end to end: Locust in its own process, the order
front end and the consumer group as processes of their own (the run without the broker is the
same code with the producer swapped for direct calls; the full script runs both).
Asserts the outcome — no order lost, backlog drained, the report written — not timings."""

from __future__ import annotations

import json
from types import ModuleType

import pytest
import ray


@pytest.fixture
def peak_shaving(import_loadtest) -> ModuleType:
    return import_loadtest("peak_shaving")


def test_a_short_flash_sale_loses_no_order_and_drains(broker, peak_shaving, tmp_path) -> None:
    scenario = peak_shaving.Scenario(
        shape=[[2, 10], [5, 60], [3, 10]], capacity=30, drain_timeout_s=60.0
    )
    address = ray.get_runtime_context().gcs_address
    summary = peak_shaving.run(broker, address, scenario, tmp_path, ("broker",))

    with_broker = summary["broker"]
    assert with_broker["accepted"] > 100, with_broker
    assert with_broker["lost"] == 0 and with_broker["drained"], with_broker
    assert with_broker["processed"] == with_broker["accepted"]
    assert with_broker["peak_backlog"] > 0, "the burst exceeds capacity: a backlog must form"
    for name in (
        "report.md",
        "peak_shaving.png",
        "summary.json",
        "timeline-broker.json",
        "locust-broker_stats_history.csv",
        "locust-broker.html",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    report = (tmp_path / "report.md").read_text()
    assert "with the broker" in report and "accepted but lost" in report
    assert json.loads((tmp_path / "summary.json").read_text())["broker"]["lost"] == 0
