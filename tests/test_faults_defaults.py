"""Faults met with **default** broker and client settings, as a new user meets them: a local
cluster (head + 3 workers on 127.0.0.1), ``rb.connect(address=...)`` with no broker config, a
topic with replication_factor=3 and min.insync.replicas=2, producers with defaults.

The tuned fault tests live in ``test_replication.py``; these prove the defaults work too.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid

import pytest
import ray

import ray_broker as rb
from ray_broker import TopicPartition, errors
from tests.cluster_helpers import LocalCluster, partition_info, replica_pid, wait_until


def _worker_led_partition(broker, topic: str, workers: set[str]) -> int:
    for info in broker.admin().describe_topic(topic).partitions:
        if info.leader_node_id in workers:
            return info.partition
    raise AssertionError("no partition is led from a worker node")


def connect_with_defaults(local: LocalCluster, data_dir, topic: str, partitions: int):
    """A user's first steps: connect by address with no broker config; an RF=3 topic."""
    broker = rb.connect(
        address=local.cluster.address, data_dir=data_dir, namespace=f"d{uuid.uuid4().hex[:6]}"
    )
    broker.admin().create_topic(
        topic, partitions=partitions, replication_factor=3, config={"min.insync.replicas": 2}
    )
    return broker


def sync_sender(
    producer,
    topic: str,
    partition: int | None,
    prefix: bytes,
    acked: dict,
    failures: list,
    stop: threading.Event,
) -> threading.Thread:
    """A thread sending one record at a time, each ``send().result()`` before the next."""

    def run() -> None:
        i = 0
        while not stop.is_set():
            value = b"%s%d" % (prefix, i)
            try:
                future = producer.send(topic, value=value, partition=partition)
                acked[value] = future.result(timeout=300).offset
            except errors.BrokerError as exc:  # typed, never a raw Ray failure
                failures.append(f"{type(exc).__name__}: {exc}")
            i += 1

    return threading.Thread(target=run)


def assert_every_acked_record_once(broker, topic: str, partition: int, acked: dict) -> None:
    """A fresh consumer reads every acknowledged record exactly once, at its offset."""
    reader = broker.consumer(auto_offset_reset="earliest")
    reader.assign([TopicPartition(topic, partition)])
    rows: dict[int, bytes] = {}
    deadline = time.monotonic() + 120
    while len(rows) < len(acked) and time.monotonic() < deadline:
        for records in reader.poll(timeout_ms=500, max_records=50_000).values():
            rows.update((r.offset, r.value) for r in records)
    reader.close()
    by_value = {value: offset for offset, value in rows.items()}
    lost = [v for v, offset in acked.items() if by_value.get(v) != offset]
    assert not lost, (
        f"{len(lost)} acknowledged records lost, e.g. "
        f"{[(v, acked[v], by_value.get(v)) for v in lost[:5]]} (value, acked at, read at); "
        f"{len(rows)} rows read, offsets {min(rows, default=None)}..{max(rows, default=None)}; "
        f"replicas {replica_states(broker, topic, partition)}"
    )
    assert len(by_value) == len(rows), "a record was written twice"


def test_defaults_sync_and_pipelined_producers_and_a_group_survive_leader_node_loss(tmp_path):
    local = LocalCluster()
    try:
        topic = "signups"
        broker = connect_with_defaults(local, tmp_path, topic, partitions=3)
        partition = _worker_led_partition(broker, topic, {n.node_id for n in local.workers})
        sync_producer = broker.producer(acks="all")
        pipelined = broker.producer(acks="all")
        acked: dict[bytes, int] = {}
        errors_seen: list[str] = []
        stop = threading.Event()

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
            sync_sender(sync_producer, topic, partition, b"s", acked, errors_seen, stop),
            threading.Thread(target=send_pipelined),
            threading.Thread(target=consume_and_commit),
        ]
        for thread in threads:
            thread.start()
        time.sleep(3)
        before = partition_info(broker, topic, partition)
        # By default records travel over the data plane: clients to the leader, the leader
        # to its followers (acks=all waits on those pushes).
        leader = ray.get_actor(
            f"ray_broker.partition.{broker.admin().describe_topic(topic).topic_id}"
            f".{partition}.{before.leader}",
            namespace=broker.namespace,
        )
        followers = len(before.replicas) - 1
        wait_until(
            lambda: len(ray.get(leader.info.remote(), timeout=10)["followers_direct"]) == followers,
            timeout_s=30,
        )
        assert sync_producer._sender._transport.counts["direct"] > 0
        direct_before = sync_producer._sender._transport.counts["direct"]
        acked_before = len(acked)
        local.kill_node(before.leader_node_id)
        wait_until(
            lambda: partition_info(broker, topic, partition).leader_epoch > before.leader_epoch,
            timeout_s=90,
        )
        # The synchronous producer goes on after the failover, over the data plane again.
        wait_until(lambda: len(acked) >= acked_before + 100, timeout_s=120)
        wait_until(
            lambda: sync_producer._sender._transport.counts["direct"] > direct_before + 20,
            timeout_s=60,
        )
        stop.set()
        for thread in threads:
            thread.join(timeout=240)
            assert not thread.is_alive(), "a client thread hung"
        pipelined.flush(timeout=180)
        for value, future in pipelined_futures:
            acked[value] = future.result(timeout=1).offset
        assert acked and not errors_seen, errors_seen

        assert_every_acked_record_once(broker, topic, partition, acked)
        # The group member kept consuming across the failover, skipping nothing (a rebalance
        # may hand it records again: at-least-once).
        offsets = sorted({offset for offset, _ in consumed})
        assert offsets == list(range(offsets[0], offsets[-1] + 1))
        assert offsets[-1] >= before.high_watermark
        consumer.close()
        sync_producer.close(timeout=60)
        pipelined.close(timeout=60)
    finally:
        local.shutdown()


def replica_states(broker, topic: str, partition: int) -> dict[str, object]:
    """What each replica says of itself (or why it cannot), for failure messages."""
    record_id = broker.admin().describe_topic(topic).topic_id
    states: dict[str, object] = {}
    for slot in partition_info(broker, topic, partition).replicas:
        name = f"ray_broker.partition.{record_id}.{partition}.{slot}"
        try:
            info = ray.get(ray.get_actor(name, namespace=broker.namespace).info.remote(), timeout=5)
            states[slot] = {k: info[k] for k in ("node_id", "role", "epoch", "isr", "offsets")}
        except Exception as exc:  # a diagnostic: whatever stops the answer is the answer
            states[slot] = f"{type(exc).__name__}: {exc}"[:300]
    return states


def _inject(rng: random.Random, local: LocalCluster, broker, topic: str, partition: int) -> str:
    """One fault of a random kind, against the partition under load; returns its name."""
    info = partition_info(broker, topic, partition)
    kind = rng.choice(
        ["leader_node", "follower_node", "sigkill_leader", "sigstop_leader", "coordinator"]
    )
    workers = {n.node_id for n in local.workers}
    if kind in ("leader_node", "follower_node"):
        if kind == "leader_node" and info.leader_node_id in workers:
            local.kill_node(info.leader_node_id)
        else:  # a node holding a follower (or, if the leader is on the head, any worker)
            victims = [n for n in local.workers if n.node_id != info.leader_node_id]
            local.kill_node(rng.choice(victims).node_id)
        local.add_worker()  # keep the cluster's size: the lost replica is replaced
    elif kind == "sigkill_leader":
        os.kill(replica_pid(broker, topic, partition, info.leader), signal.SIGKILL)
    elif kind == "sigstop_leader":
        pid = replica_pid(broker, topic, partition, info.leader)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(5)  # past the default leader.probe.timeout.ms (3 s): a failover
        os.kill(pid, signal.SIGCONT)
    else:
        ray.kill(broker._coordinator, no_restart=False)  # restarts, members rejoin
    return kind


@pytest.mark.chaos
def test_chaos_with_defaults_twenty_faults_lose_no_acknowledged_record(tmp_path):
    """On demand (``pytest -m chaos``): 20 mixed faults under a synchronous producer, a
    pipelined producer and a committing group member, all with default settings."""
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "7")))
    local = LocalCluster(token_auth=False)
    try:
        topic = "chaos"
        broker = connect_with_defaults(local, tmp_path, topic, partitions=1)
        producer = broker.producer(acks="all")
        acked: dict[bytes, int] = {}
        failures: list[str] = []
        stop = threading.Event()

        committed: list[int] = []
        consumer = broker.consumer(topic, group_id="chaos", auto_offset_reset="earliest")

        def consume() -> None:
            while not stop.is_set():
                try:
                    consumer.poll(timeout_ms=200)
                    consumer.commit()
                    committed.append(consumer.committed(TopicPartition(topic, 0)) or 0)
                except errors.BrokerError as exc:  # a rebalance after the coordinator restart
                    if not exc.retriable and not isinstance(exc, errors.CommitFailed):
                        failures.append(f"consumer {type(exc).__name__}: {exc}")

        threads = [
            sync_sender(producer, topic, None, b"", acked, failures, stop),
            threading.Thread(target=consume),
        ]
        for thread in threads:
            thread.start()
        kinds = []
        for _ in range(20):
            time.sleep(3)
            wait_until(lambda: partition_info(broker, topic, 0).leader, timeout_s=120)
            kinds.append(_inject(rng, local, broker, topic, 0))
        try:
            wait_until(lambda: len(partition_info(broker, topic, 0).isr) >= 2, timeout_s=120)
        except AssertionError:
            alive = sorted(n["NodeID"][:8] for n in ray.nodes() if n["Alive"])
            raise AssertionError(
                f"ISR did not recover after {kinds}: {partition_info(broker, topic, 0)}; "
                f"alive nodes {alive}; replicas {replica_states(broker, topic, 0)}"
            ) from None
        count = len(acked)
        wait_until(lambda: len(acked) > count + 50, timeout_s=120)  # still producing
        stop.set()
        for thread in threads:
            thread.join(timeout=360)
            assert not thread.is_alive(), "a client thread hung"
        print(f"chaos faults: {kinds}; acked {len(acked)}; failures {failures}")
        assert_every_acked_record_once(broker, topic, 0, acked)
        assert committed == sorted(committed), "a committed offset went back"
        assert not failures, failures
        producer.close(timeout=120)
        consumer.close()
    finally:
        local.shutdown()
