"""The broker's Prometheus series, recorded with ``ray.util.metrics``.

Ray exports them on every node's metrics port (``ray start --metrics-export-port``), beside
Ray's own, with its ``ray_`` prefix: ``ray_broker_records_in_total`` and so on — so Prometheus
and Grafana see the broker without another exporter (``deploy/grafana-dashboard.json``).

Recorded per batch or per request, never per record; a recording that fails is logged and
dropped (metrics must never fail a produce or a fetch).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

PARTITION_TAGS = ("topic", "partition")
# Milliseconds; produce includes waiting for acks=all, fetch includes a long poll's wait.
LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 5_000, 30_000]


def _safely(record: Any, *args: Any, **kwargs: Any) -> None:
    try:
        record(*args, **kwargs)
    except Exception as exc:  # a metric must not fail the request it measures
        logger.debug("metric not recorded: %s", exc)


class PartitionMetrics:
    """The series of one partition replica (one per partition actor process)."""

    def __init__(self, topic: str, partition: int) -> None:
        from ray.util import metrics

        self.tags = {"topic": topic, "partition": str(partition)}
        counter, gauge = metrics.Counter, metrics.Gauge
        self.records_in = counter(
            "broker_records_in", "Records appended by producers.", tag_keys=PARTITION_TAGS
        )
        self.bytes_in = counter(
            "broker_bytes_in", "Bytes of Arrow data appended.", tag_keys=PARTITION_TAGS
        )
        self.records_out = counter(
            "broker_records_out", "Records returned to consumers.", tag_keys=PARTITION_TAGS
        )
        self.bytes_out = counter(
            "broker_bytes_out", "Bytes of fetch answers (Arrow IPC).", tag_keys=PARTITION_TAGS
        )
        self.produce_ms = metrics.Histogram(
            "broker_produce_latency_ms",
            "Time a produce request spends in the leader, including acks=all waits.",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=PARTITION_TAGS,
        )
        self.fetch_ms = metrics.Histogram(
            "broker_fetch_latency_ms",
            "Time a fetch spends in the leader, including a long poll's wait for data.",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=PARTITION_TAGS,
        )
        self.log_end_offset = gauge(
            "broker_log_end_offset", "Next offset to be written.", tag_keys=PARTITION_TAGS
        )
        self.high_watermark = gauge(
            "broker_high_watermark", "Offset below which records are committed.", PARTITION_TAGS
        )
        self.isr_size = gauge(
            "broker_isr_size", "In-sync replicas (as the leader sees them).", PARTITION_TAGS
        )
        self.under_replicated = gauge(
            "broker_under_replicated",
            "1 while the leader's in-sync replicas are fewer than its replicas.",
            tag_keys=PARTITION_TAGS,
        )

    def produced(self, records: int, nbytes: int, seconds: float) -> None:
        _safely(self.records_in.inc, records, self.tags)
        _safely(self.bytes_in.inc, nbytes, self.tags)
        _safely(self.produce_ms.observe, seconds * 1000, self.tags)

    def fetched(self, records: int, nbytes: int, seconds: float) -> None:
        if records:
            _safely(self.records_out.inc, records, self.tags)
            _safely(self.bytes_out.inc, nbytes, self.tags)
        _safely(self.fetch_ms.observe, seconds * 1000, self.tags)

    def state(self, log_end: int, high_watermark: int, isr: int, replicas: int) -> None:
        """The leader's view, set periodically (gauges keep their last value)."""
        _safely(self.log_end_offset.set, log_end, self.tags)
        _safely(self.high_watermark.set, high_watermark, self.tags)
        _safely(self.isr_size.set, isr, self.tags)
        _safely(self.under_replicated.set, int(isr < replicas), self.tags)


class ControllerMetrics:
    """Leader elections (failovers and preferred-leader moves) of a broker namespace."""

    def __init__(self, namespace: str) -> None:
        from ray.util import metrics

        self.namespace = namespace
        self.leader_elections = metrics.Counter(
            "broker_leader_elections",
            "Partitions whose leader changed (failover, restart or preferred leader).",
            tag_keys=("namespace", "topic"),
        )
        self.offline = metrics.Gauge(
            "broker_offline_partitions", "Partitions without a leader.", tag_keys=("namespace",)
        )

    def elected(self, topic: str) -> None:
        _safely(self.leader_elections.inc, 1, {"namespace": self.namespace, "topic": topic})

    def offline_partitions(self, count: int) -> None:
        _safely(self.offline.set, count, {"namespace": self.namespace})


class GroupMetrics:
    """Consumer groups: rebalances, and lag per group and partition."""

    def __init__(self) -> None:
        from ray.util import metrics

        self.rebalances = metrics.Counter(
            "broker_group_rebalances",
            "New generations of a group's assignment.",
            tag_keys=("group",),
        )
        self.lag = metrics.Gauge(
            "broker_consumer_lag",
            "High watermark minus the group's committed offset.",
            tag_keys=("group", "topic", "partition"),
        )

    def rebalanced(self, group: str) -> None:
        _safely(self.rebalances.inc, 1, {"group": group})

    def lagging(self, group: str, topic: str, partition: int, lag: int) -> None:
        _safely(self.lag.set, lag, {"group": group, "topic": topic, "partition": str(partition)})
