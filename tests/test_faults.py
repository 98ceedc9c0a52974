"""Fault injection with real kills: partition actor processes, the Controller, the whole broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pyarrow as pa
import pytest
import ray

import ray_broker as rb
from ray_broker import TopicPartition


def read_everything(broker, topic: str, partitions: int) -> dict[int, list[bytes]]:
    consumer = broker.consumer(auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    ends = consumer.end_offsets(consumer.assignment())
    values: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + 60
    while (
        any(consumer.position(tp) < end for tp, end in ends.items()) and time.monotonic() < deadline
    ):
        table = consumer.poll_arrow(timeout_ms=500)
        for partition, value in zip(
            table.column("partition").to_pylist(), table.column("value").to_pylist(), strict=True
        ):
            values[partition].append(value)
    consumer.close()
    return values


def partition_pid(broker, topic: str, partition: int) -> int:
    """The pid of a partition's actor, waiting for it if it is restarting."""
    leader = broker._metadata.topic(topic).leaders[partition]
    deadline = time.monotonic() + 60
    while True:
        try:
            return ray.get(leader.info.remote(), timeout=10)["pid"]
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            assert time.monotonic() < deadline, "the partition actor did not come back"
            time.sleep(0.1)


def test_acknowledged_records_survive_partition_actor_kills(broker):
    topic = f"kill-{uuid.uuid4().hex[:6]}"
    broker.admin().create_topic(topic, partitions=2)
    producer = broker.producer(linger_ms=2, batch_size=500, delivery_timeout_ms=60_000)
    total = 30_000
    futures = []

    def produce() -> None:
        for i in range(total):
            futures.append(producer.send(topic, value=b"%08d" % i, partition=i % 2))
            if i % 1_000 == 0:
                time.sleep(0.02)  # spread the stream over the kills

    sender = threading.Thread(target=produce)
    sender.start()
    killed = []
    for _ in range(2):
        time.sleep(0.4)
        pid = partition_pid(broker, topic, 0)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    sender.join()
    producer.flush(timeout=90)
    acked = [f.result().partition for f in futures]
    assert len(acked) == total  # every send was acknowledged despite the kills
    assert partition_pid(broker, topic, 0) not in killed  # the actor really restarted

    values = read_everything(broker, topic, 2)
    for partition in (0, 1):
        got = [int(v) for v in values[partition]]
        expected = list(range(partition, total, 2))
        assert got == expected, f"partition {partition}: lost, duplicated or reordered records"


def test_topics_and_data_survive_a_controller_kill(broker, topic):
    producer = broker.producer()
    producer.send_batch(topic, pa.table({"value": [b"x"] * 100})).result(timeout=30)
    controller = broker._controller
    old_pid = ray.get(controller.__ray_call__.remote(lambda self: os.getpid()))
    ray.kill(controller, no_restart=False)
    deadline = time.monotonic() + 60
    while True:
        try:
            topics = broker.admin().list_topics()
            break
        except rb.errors.BrokerError:
            assert time.monotonic() < deadline, "the Controller did not come back"
            time.sleep(0.2)
    assert topic in topics
    assert ray.get(controller.__ray_call__.remote(lambda self: os.getpid())) != old_pid
    described = broker.admin().describe_topic(topic)
    assert sum(p.log_end_offset for p in described.partitions) == 100
    assert producer.send(topic, b"after", partition=0).result(timeout=30).offset >= 0


def test_broker_shutdown_and_reconnect_recovers_everything(ray_session, tmp_path):
    namespace = f"restart-{uuid.uuid4().hex[:6]}"
    first = rb.connect(
        data_dir=tmp_path, namespace=namespace, config={"log.retention.check.interval.ms": 100}
    )
    first.admin().create_topic("orders", partitions=2, config={"segment.bytes": 64 * 1024})
    producer = first.producer()
    rows = pa.table({"value": [b"%06d" % i for i in range(20_000)]})
    for start in range(0, rows.num_rows, 1_000):  # many requests, so segments roll and seal
        producer.send_batch("orders", rows.slice(start, 1_000))
    producer.flush(timeout=60)
    producer.send("orders", b"tail", partition=1).result(timeout=30)
    first.shutdown()

    second = rb.connect(data_dir=tmp_path, namespace=namespace)
    try:
        assert second.admin().list_topics() == ["orders"]
        values = read_everything(second, "orders", 2)
        assert sorted(values[0] + values[1]) == sorted(rows.column("value").to_pylist() + [b"tail"])
        assert list((tmp_path / "orders").glob("partition=*/*.parquet"))  # sealed while running
    finally:
        second.shutdown()


@pytest.mark.slow  # test_broker_shutdown_and_reconnect_recovers_everything covers the restart
def test_embedded_broker_restart_in_new_processes_keeps_all_data(tmp_path):
    """Two separate processes, each with its own embedded Ray, on one data directory."""
    write = textwrap.dedent(
        f"""
        import pyarrow as pa, ray_broker as rb
        with rb.connect(data_dir={str(tmp_path)!r}) as broker:
            broker.admin().create_topic("logs", partitions=3)
            producer = broker.producer()
            producer.send_batch("logs", pa.table({{"value": [b"%d" % i for i in range(5000)]}}))
            producer.flush()
        """
    )
    read = textwrap.dedent(
        f"""
        import ray_broker as rb
        with rb.connect(data_dir={str(tmp_path)!r}) as broker:
            consumer = broker.consumer("logs", auto_offset_reset="earliest")
            seen = set()
            for _ in range(40):
                table = consumer.poll_arrow(timeout_ms=500)
                seen.update(table.column("value").to_pylist())
                if len(seen) == 5000:
                    break
            print("READ", len(seen), sorted(int(v) for v in seen) == list(range(5000)))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for script in (write, read):
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert "READ 5000 True" in done.stdout


def test_send_to_a_partition_that_stays_down_fails_after_delivery_timeout(broker, topic):
    """A hung partition (its process stopped): the send fails at delivery.timeout.ms even
    though request.timeout.ms is longer, with the last error as its cause."""
    producer = broker.producer(delivery_timeout_ms=1_500, retry_backoff_ms=50)
    assert producer.send(topic, b"before", partition=2).result(timeout=30).offset == 0
    leader = broker._metadata.topic(topic).leaders[2]
    pid = ray.get(leader.info.remote(), timeout=30)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        future = producer.send(topic, b"lost", partition=2)
        with pytest.raises(rb.errors.BrokerTimeoutError) as caught:
            future.result(timeout=30)
        assert "delivery.timeout.ms=1500" in str(caught.value)
        assert (caught.value.topic, caught.value.partition) == (topic, 2)
        assert 1.4 < time.monotonic() - started < 20
    finally:
        os.kill(pid, signal.SIGCONT)
    # Other partitions kept serving.
    assert producer.send(topic, b"ok", partition=0).result(timeout=30).offset == 0


def test_a_partition_actor_gone_for_good_is_started_again_by_the_controller(broker, topic):
    producer = broker.producer(linger_ms=0)
    assert producer.send(topic, b"before", partition=2).result(timeout=30).offset == 0
    ray.kill(broker._metadata.topic(topic).leaders[2], no_restart=True)
    # Retried within delivery.timeout.ms until the Controller has started it again from disk.
    assert producer.send(topic, b"after", partition=2).result(timeout=60).offset == 1
    producer.close()
