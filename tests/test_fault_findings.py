"""Findings of the fault review (issue "Robustness under faults with default settings"), each
proven on a real local Ray: stale leader handles in the group coordinator, producers the
partition no longer knows, back-pressure from unsealed segments, bounded group state."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest
import ray

from ray_broker import TopicPartition, errors


@pytest.fixture
def broker(shared_broker):
    """The module's broker: its tests use topics of their own."""
    return shared_broker


def _leader(broker, topic: str, partition: int = 0):
    record_id = broker.admin().describe_topic(topic).topic_id
    return ray.get_actor(
        f"ray_broker.partition.{record_id}.{partition}.r0", namespace=broker.namespace
    )


def test_group_commits_follow_new_partition_actors_after_the_cached_ones_died(broker):
    """The coordinator caches leader handles; when the actors behind them are replaced (here:
    the topic is re-created with the same partition count, as a failover replaces a leader),
    commits must re-resolve the leaders instead of failing for good."""
    admin = broker.admin()
    admin.create_topic("orders", partitions=2)
    producer = broker.producer()
    producer.send("orders", value=b"x", partition=0).result(timeout=30)
    consumer = broker.consumer(group_id="billing", enable_auto_commit=False)
    consumer.commit({TopicPartition("orders", 0): 1})  # the coordinator caches the handles
    admin.delete_topic("orders")
    admin.create_topic("orders", partitions=2)
    producer.send("orders", value=b"y", partition=0).result(timeout=30)
    consumer.commit({TopicPartition("orders", 0): 1})
    assert consumer.committed(TopicPartition("orders", 0)) == 1
    description = admin.describe_group("billing")
    assert [lag.log_end_offset for lag in description.partitions if lag.partition == 0] == [1]
    producer.close()
    consumer.close()


def test_a_producer_the_partition_forgot_resumes_without_waiting(broker, topic):
    """An unknown producer id with sequence > 0 and nothing in flight before it used to wait
    out SEQUENCE_WAIT_MS (5 s) on every batch."""
    from ray_broker.actors.partition.produce_calls import SEQUENCE_WAIT_MS

    leader = _leader(broker, topic)
    batch = pa.table({"value": pa.array([b"a", b"b"], pa.binary())})
    started = time.monotonic()
    result = ray.get(leader.produce.remote(batch, 4242, 0, 1_000, 1, False), timeout=30)
    assert time.monotonic() - started < SEQUENCE_WAIT_MS / 1000 / 2
    assert result.base_offset == 0 and not result.duplicate
    again = ray.get(leader.produce.remote(batch, 4242, 0, 1_000, 1, False), timeout=30)
    assert again.duplicate and again.base_offset == 0


def test_writes_wait_for_sealing_so_unsealed_segments_stay_bounded(broker):
    """Rolled segments wait in memory for their Parquet write; past log.unsealed.bytes.max a
    write waits for sealing instead of growing memory with the backlog (a 40M-record burst
    once held 2 GiB of unsealed segments)."""
    admin = broker.admin()
    admin.create_topic(
        "burst",
        partitions=1,
        config={"segment.bytes": 1024 * 1024, "log.unsealed.bytes.max": 1024 * 1024},
    )
    leader = _leader(broker, "burst")
    big = pa.table({"value": pa.array([b"x" * 1000] * 1500, pa.binary())})  # ~1.5 MB: rolls
    pending = [leader.produce.remote(big, None, 0, 0, 1) for _ in range(20)]
    busy = 0
    for ref in pending:
        try:
            ray.get(ref, timeout=60)
        except errors.BrokerBusy as exc:
            assert exc.retriable
            busy += 1
        unsealed = ray.get(leader.info.remote(), timeout=30)["unsealed_bytes"]
        # One rolled segment may wait, plus the one the write that passed the check rolled.
        assert unsealed <= 1024 * 1024 + 1_600_000
    offsets = ray.get(leader.offsets.remote(), timeout=30)
    # Every acknowledged batch is there; a refused one wrote nothing.
    assert offsets.log_end_offset == (20 - busy) * 1500
    assert busy == 0  # sealing 1 MiB takes far less than UNSEALED_WAIT_S
    producer = broker.producer()  # the client retries BrokerBusy within delivery.timeout.ms
    producer.send_batch("burst", big).result(timeout=120)
    producer.close()


def test_unknown_assignment_strategy_is_a_typed_error(broker, topic):
    coordinator = broker._coordinator
    with pytest.raises(errors.InvalidConfig):
        ray.get(
            coordinator.join.remote("g", None, None, "c", [topic], None, "bogus", 10_000),
            timeout=30,
        )
