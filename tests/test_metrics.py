"""The broker's Prometheus series, scraped from the node's real metrics endpoint after traffic."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections import defaultdict

import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

# Ray exports what actors record every few seconds; the group coordinator reports lag every 5 s.
SCRAPE_DEADLINE_S = 90


@pytest.fixture
def broker(shared_broker):
    """The module's broker: its tests use topics of their own."""
    return shared_broker


def scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
    port = ray.nodes()[0]["MetricsExportPort"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    series: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ray_broker_"):
                series[sample.name].append((sample.labels, sample.value))
    return series


def total(series: dict, name: str, **labels: str) -> float:
    return sum(
        value
        for sample_labels, value in series.get(name, [])
        if all(sample_labels.get(k) == v for k, v in labels.items())
    )


def test_traffic_shows_up_in_the_nodes_prometheus_endpoint(broker) -> None:
    topic, group = f"metrics-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    broker.admin().create_topic(topic, partitions=2)
    producer = broker.producer()
    for i in range(1_000):
        producer.send(topic, b"x" * 100, key=b"%d" % i)
    producer.flush()
    consumer = broker.consumer(topic, group_id=group, auto_offset_reset="earliest")
    read = 0
    while read < 1_000:
        read += sum(len(r) for r in consumer.poll(timeout_ms=2_000).values())
    consumer.commit()
    consumer.close()

    deadline = time.monotonic() + SCRAPE_DEADLINE_S
    while True:
        series = scrape()
        done = (
            total(series, "ray_broker_records_in_total", topic=topic) == 1_000
            and total(series, "ray_broker_high_watermark", topic=topic) == 1_000
            and ("ray_broker_consumer_lag", group)
            in {
                (name, labels.get("group"))
                for name, samples in series.items()
                for labels, _ in samples
            }
        )
        if done or time.monotonic() > deadline:
            break
        time.sleep(2)

    assert total(series, "ray_broker_records_in_total", topic=topic) == 1_000
    assert total(series, "ray_broker_bytes_in_total", topic=topic) > 100_000
    assert total(series, "ray_broker_records_out_total", topic=topic) >= 1_000
    assert total(series, "ray_broker_log_end_offset", topic=topic) == 1_000
    assert total(series, "ray_broker_high_watermark", topic=topic) == 1_000
    assert total(series, "ray_broker_isr_size", topic=topic) == 2  # one per partition, RF=1
    assert total(series, "ray_broker_under_replicated", topic=topic) == 0
    produced = total(series, "ray_broker_produce_latency_ms_count", topic=topic)
    assert produced >= 2  # at least one request per partition
    assert total(series, "ray_broker_produce_latency_ms_sum", topic=topic) > 0
    assert total(series, "ray_broker_fetch_latency_ms_count", topic=topic) >= 2
    assert total(series, "ray_broker_consumer_lag", group=group, topic=topic) == 0
    assert ("ray_broker_offline_partitions", broker.namespace) in {
        (name, labels.get("namespace")) for name, samples in series.items() for labels, _ in samples
    }
    assert total(series, "ray_broker_offline_partitions", namespace=broker.namespace) == 0


def test_the_grafana_dashboard_queries_only_series_the_broker_exports() -> None:
    import json
    import re
    from pathlib import Path

    from ray_broker import metrics

    dashboard = json.loads(
        (Path(__file__).resolve().parents[1] / "deploy" / "grafana-dashboard.json").read_text()
    )
    source = Path(metrics.__file__).read_text()
    defined = {f"ray_{name}" for name in re.findall(r'"(broker_[a-z_]+)"', source)}
    assert len(defined) >= 12
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried |= set(re.findall(r"ray_broker_[a-z_]+", target["expr"]))
    base = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in queried}
    assert base <= defined, base - defined
    assert {"ray_broker_consumer_lag", "ray_broker_under_replicated"} <= base
