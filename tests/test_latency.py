"""Latency: the bound a parked fetch promises, the hop stamps, and the latency bench's quick mode
(loadtest/latency.py) — that it runs and reports every cell, not how fast they are."""

from __future__ import annotations

import argparse
import math
import time
import uuid
from types import ModuleType

import pytest
import ray

from ray_broker.hops import BREAKDOWN, HopStamps, by_offset

# A correctness bound, generous on purpose: a parked fetch answers when the append lands, not
# on a timer (it would otherwise return after its whole max_wait_ms, here 10 s).
PARKED_FETCH_BOUND_S = 0.05


@pytest.fixture
def latency(import_loadtest) -> ModuleType:
    return import_loadtest("latency")


@pytest.fixture
def broker(shared_broker):
    """The module's broker: its tests use topics of their own."""
    return shared_broker


def test_hop_stamps_are_kept_only_while_enabled_and_keep_the_first_per_hop() -> None:
    stamps = HopStamps(max_stamps=3)
    stamps.stamp("appended", 1, 10)
    assert stamps.drain() == []
    stamps.enabled = True
    for hop, offset, ns in [("appended", 1, 10), ("appended", 1, 12), ("acked", 1, 20)]:
        stamps.stamp(hop, offset, ns)
    stamps.stamp("acked", 2, 30)  # bounded: the oldest goes
    taken = stamps.drain()
    assert taken == [("appended", 1, 12), ("acked", 1, 20), ("acked", 2, 30)]
    assert by_offset(taken + [("acked", 1, 99)]) == {
        1: {"appended": 12, "acked": 20},
        2: {"acked": 30},
    }
    assert stamps.drain() == []


def test_a_parked_fetch_returns_soon_after_an_append(broker) -> None:
    topic = f"parked-{uuid.uuid4().hex[:6]}"
    broker.admin().create_topic(topic, partitions=1)
    producer = broker.producer(linger_ms=0)
    producer.send(topic, b"warm-up").result(timeout=30)
    leader = broker._metadata.topic(topic).leader(0)
    end = ray.get(leader.offsets.remote()).high_watermark
    for attempt in range(5):
        parked = leader.fetch.remote(end, 10, 1 << 20, 10_000)
        ready, _ = ray.wait([parked], timeout=0.3)
        assert not ready, "a fetch at the log end must wait for data"
        producer.send(topic, b"now %d" % attempt).result(timeout=30)
        acked = time.monotonic()
        ready, _ = ray.wait([parked], timeout=5)
        answered = time.monotonic()
        assert ready, "the parked fetch did not return after the append"
        response = ray.get(parked)
        assert response.num_records == 1
        assert answered - acked < PARKED_FETCH_BOUND_S, f"answered {answered - acked:.3f} s late"
        end += 1
    producer.close()


@pytest.mark.slow  # bench.py --quick covers the latency figures; this runs the matrix
def test_quick_latency_bench_reports_every_cell(broker, latency: ModuleType) -> None:
    args = argparse.Namespace(
        rates=list(latency.RATES),
        lingers=list(latency.LINGERS_MS),
        seconds=latency.QUICK_SECONDS,
        breakdown=True,
        breakdown_only=False,
        breakdown_rate=latency.BREAKDOWN_RATE,
        max_in_flight=5,
        peers=False,
    )
    rows = latency.run(args, broker, ray.get_runtime_context().gcs_address)

    cells = [row for row in rows if "figure" not in row]
    assert sorted((r["linger_ms"], r["rate"]) for r in cells) == sorted(
        (linger, rate) for linger in latency.LINGERS_MS for rate in latency.RATES
    )
    for row in cells:
        assert row["sent"] > 0 and row["received"] == row["sent"], row
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["p999_ms"], row

    hops = {row["hop"]: row for row in rows if row.get("figure") == "latency_hop"}
    assert list(hops) == [label for label, _start, _end in BREAKDOWN]
    for row in hops.values():
        assert row["records"] > 0 and math.isfinite(row["p50_ms"]) and row["p50_ms"] >= 0, row
    assert hops["end to end"]["p50_ms"] >= hops["append to the log"]["p50_ms"]
