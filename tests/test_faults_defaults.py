"""Faults met with **default** broker and client settings, as a new user meets them: a local
cluster (head + 3 workers on 127.0.0.1), ``rb.connect(address=...)`` with no broker config, a
topic with replication_factor=3 and min.insync.replicas=2, producers with defaults.

The tuned fault tests live in ``test_replication.py``; these prove the defaults work too.
"""

from __future__ import annotations

import threading
import time
import uuid

import ray_broker as rb
from ray_broker import TopicPartition, errors
from tests.test_replication import LocalCluster, partition_info, wait_until


def _worker_led_partition(broker, topic: str, workers: set[str]) -> int:
    for info in broker.admin().describe_topic(topic).partitions:
        if info.leader_node_id in workers:
            return info.partition
    raise AssertionError("no partition is led from a worker node")


def test_defaults_sync_and_pipelined_producers_and_a_group_survive_leader_node_loss(tmp_path):
    local = LocalCluster()
    try:
        broker = rb.connect(
            address=local.cluster.address, data_dir=tmp_path, namespace=f"d{uuid.uuid4().hex[:6]}"
        )
        topic = "signups"
        broker.admin().create_topic(
            topic, partitions=3, replication_factor=3, config={"min.insync.replicas": 2}
        )
        partition = _worker_led_partition(broker, topic, {n.node_id for n in local.workers})
        sync_producer = broker.producer(acks="all")
        pipelined = broker.producer(acks="all")
        acked: dict[bytes, int] = {}
        errors_seen: list[str] = []
        stop = threading.Event()

        def send_one_at_a_time() -> None:
            i = 0
            while not stop.is_set():
                value = b"s%d" % i
                try:
                    acked[value] = (
                        sync_producer.send(topic, value=value, partition=partition)
                        .result(timeout=180)
                        .offset
                    )
                except errors.BrokerError as exc:  # typed, never a raw Ray failure
                    errors_seen.append(type(exc).__name__)
                i += 1

        pipelined_futures = []

        def send_pipelined() -> None:
            i = 0
            while not stop.is_set():
                value = b"p%d" % i
                pipelined_futures.append(
                    (value, pipelined.send(topic, value=value, partition=partition))
                )
                i += 1
                time.sleep(0.002)

        consumed: list[tuple[int, bytes]] = []
        consumer = broker.consumer(topic, group_id="mailer", auto_offset_reset="earliest")

        def consume_and_commit() -> None:
            while not stop.is_set():
                for tp, records in consumer.poll(timeout_ms=200).items():
                    if tp.partition == partition:
                        consumed.extend((r.offset, r.value) for r in records)
                consumer.commit()

        threads = [
            threading.Thread(target=send_one_at_a_time),
            threading.Thread(target=send_pipelined),
            threading.Thread(target=consume_and_commit),
        ]
        for thread in threads:
            thread.start()
        time.sleep(3)
        before = partition_info(broker, topic, partition)
        acked_before = len(acked)
        local.kill_node(before.leader_node_id)
        wait_until(
            lambda: partition_info(broker, topic, partition).leader_epoch > before.leader_epoch,
            timeout_s=90,
        )
        # The synchronous producer goes on after the failover.
        wait_until(lambda: len(acked) >= acked_before + 100, timeout_s=120)
        stop.set()
        for thread in threads:
            thread.join(timeout=240)
            assert not thread.is_alive(), "a client thread hung"
        pipelined.flush(timeout=180)
        for value, future in pipelined_futures:
            acked[value] = future.result(timeout=1).offset
        assert acked and not errors_seen, errors_seen

        # A fresh consumer reads every acknowledged record once, at its offset.
        reader = broker.consumer(auto_offset_reset="earliest")
        tp = TopicPartition(topic, partition)
        reader.assign([tp])
        rows: dict[int, bytes] = {}
        deadline = time.monotonic() + 120
        while len(rows) < len(acked) and time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=500, max_records=50_000).values():
                rows.update((r.offset, r.value) for r in records)
        by_value = {value: offset for offset, value in rows.items()}
        lost = [v for v, offset in acked.items() if by_value.get(v) != offset]
        assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"
        assert len(by_value) == len(rows), "a record was written twice"
        # The group member kept consuming across the failover, skipping nothing (a rebalance
        # may hand it records again: at-least-once).
        offsets = sorted({offset for offset, _ in consumed})
        assert offsets == list(range(offsets[0], offsets[-1] + 1))
        assert offsets[-1] >= before.high_watermark
        consumer.close()
        reader.close()
        sync_producer.close(timeout=60)
        pipelined.close(timeout=60)
    finally:
        local.shutdown()
