"""Transactions on a real local Ray: atomic writes across partitions, read_committed, fencing,
timeouts, consume-transform-produce with offsets in the transaction, a coordinator restart."""

from __future__ import annotations

import random
import time
import uuid

import pyarrow as pa
import pytest
import ray

from ray_broker import errors
from ray_broker.config import TRANSACTION_COORDINATOR_NAME
from ray_broker.structs import TopicPartition


@pytest.fixture
def broker(shared_broker):
    """The module's broker: its tests use topics of their own."""
    return shared_broker


def _topic(broker, partitions: int = 2) -> str:
    name = f"tx-{uuid.uuid4().hex[:8]}"
    broker.admin().create_topic(name, partitions=partitions)
    return name


def _read_all(consumer, expected: int, timeout_s: float = 30.0) -> list:
    records: list = []
    deadline = time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    # and nothing more arrives
    for batch in consumer.poll(timeout_ms=300).values():
        records.extend(batch)
    return records


def _reader(broker, topic: str, isolation: str):
    consumer = broker.consumer(isolation_level=isolation, auto_offset_reset="earliest")
    partitions = broker.admin().describe_topic(topic).partitions
    consumer.assign([TopicPartition(topic, p.partition) for p in partitions])
    return consumer


def _open_short_transaction(broker, value: bytes):
    """A one-partition topic with an open transaction (1 s timeout) holding ``value``."""
    topic = _topic(broker, partitions=1)
    producer = broker.producer(
        transactional_id=f"short-{uuid.uuid4().hex[:6]}", transaction_timeout_ms=1_000
    )
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, value).result(timeout=30)
    return topic, producer


def _wait_for_the_abort(reader, topic: str, timeout_s: float) -> None:
    """Until the abort marker frees the last stable offset of partition 0."""
    tp = TopicPartition(topic, 0)
    deadline = time.monotonic() + timeout_s
    while reader.end_offsets([tp])[tp] == 0:
        assert time.monotonic() < deadline, "nobody aborted the transaction"
        time.sleep(0.2)


def test_commit_is_atomic_across_partitions_and_abort_is_never_read(broker) -> None:
    topic = _topic(broker)
    producer = broker.producer(transactional_id=f"app-{uuid.uuid4().hex[:6]}")
    producer.init_transactions()
    producer.begin_transaction()
    for i in range(10):
        producer.send(topic, b"aborted-%d" % i, partition=i % 2)
    producer.abort_transaction()
    producer.begin_transaction()
    for i in range(10):
        producer.send(topic, b"committed-%d" % i, partition=i % 2)
    producer.commit_transaction()

    committed = _reader(broker, topic, "read_committed")
    values = sorted(r.value for r in _read_all(committed, 10))
    assert values == sorted(b"committed-%d" % i for i in range(10))
    # Positions move past the markers: nothing is left to read and no lag.
    ends = committed.end_offsets(committed.assignment())
    assert all(committed.position(tp) == ends[tp] for tp in ends)
    uncommitted = _reader(broker, topic, "read_uncommitted")
    seen = [r.value for r in _read_all(uncommitted, 20)]
    assert len(seen) == 20  # both transactions' records, and never a control record
    assert all(v.startswith((b"aborted", b"committed")) for v in seen)
    committed.close()
    uncommitted.close()
    producer.close()


def test_read_committed_waits_for_an_open_transaction(broker) -> None:
    topic = _topic(broker, partitions=1)
    plain = broker.producer()
    txn = broker.producer(transactional_id=f"app-{uuid.uuid4().hex[:6]}")
    txn.init_transactions()
    txn.begin_transaction()
    txn.send(topic, b"in-txn").result(timeout=30)
    plain.send(topic, b"after").result(timeout=30)
    reader = _reader(broker, topic, "read_committed")
    assert _read_all(reader, 1, timeout_s=2) == []  # the LSO holds at the open transaction
    tp = TopicPartition(topic, 0)
    assert reader.end_offsets([tp])[tp] == 0
    txn.commit_transaction()
    assert [r.value for r in _read_all(reader, 2)] == [b"in-txn", b"after"]
    for client in (reader, txn, plain):
        client.close()


def test_a_newer_incarnation_fences_the_zombie_and_aborts_its_transaction(broker) -> None:
    topic = _topic(broker)
    tid = f"app-{uuid.uuid4().hex[:6]}"
    zombie = broker.producer(transactional_id=tid)
    zombie.init_transactions()
    zombie.begin_transaction()
    zombie.send(topic, b"zombie", partition=0).result(timeout=30)
    successor = broker.producer(transactional_id=tid)
    successor.init_transactions()  # aborts the zombie's open transaction
    with pytest.raises(errors.ProducerFenced):
        zombie.commit_transaction()
    successor.begin_transaction()
    successor.send(topic, b"successor", partition=0)
    successor.commit_transaction()
    (listed,) = [t for t in broker.admin().list_transactions() if t["transactional_id"] == tid]
    assert listed["state"] == "CompleteCommit" and listed["epoch"] == 3  # init, abort, commit
    reader = _reader(broker, topic, "read_committed")
    assert [r.value for r in _read_all(reader, 1)] == [b"successor"]
    for client in (reader, zombie, successor):
        client.close()


def test_a_timed_out_transaction_is_aborted_by_the_coordinator(broker) -> None:
    topic, producer = _open_short_transaction(broker, b"too-slow")
    reader = _reader(broker, topic, "read_committed")
    _wait_for_the_abort(reader, topic, timeout_s=20)
    with pytest.raises(errors.TransactionTimedOut):
        producer.commit_transaction()
    producer.abort_transaction()
    producer.begin_transaction()
    producer.send(topic, b"on-time")
    producer.commit_transaction()
    assert [r.value for r in _read_all(reader, 1)] == [b"on-time"]
    reader.close()
    producer.close()


def test_wrong_state_calls_are_typed_errors_and_the_broker_stays_consistent(broker) -> None:
    topic = _topic(broker)
    plain = broker.producer()
    with pytest.raises(errors.InvalidTxnState, match="no transactional_id"):
        plain.init_transactions()
    producer = broker.producer(transactional_id=f"app-{uuid.uuid4().hex[:6]}")
    with pytest.raises(errors.InvalidTxnState, match="init_transactions"):
        producer.begin_transaction()
    producer.init_transactions()
    with pytest.raises(errors.InvalidTxnState, match="begin_transaction"):
        producer.send(topic, b"outside")
    with pytest.raises(errors.InvalidTxnState, match="begin_transaction"):
        producer.commit_transaction()
    producer.begin_transaction()
    with pytest.raises(errors.InvalidTxnState, match="commit or abort"):
        producer.begin_transaction()
    with pytest.raises(errors.InvalidTxnState, match="group"):
        producer.send_offsets_to_transaction({TopicPartition(topic, 0): 1}, {"group_id": None})
    with pytest.raises(errors.InvalidConfig):
        broker.producer(transactional_id="x", acks=1)
    producer.send(topic, b"fine", partition=1)
    producer.commit_transaction()
    reader = _reader(broker, topic, "read_committed")
    assert [r.value for r in _read_all(reader, 1)] == [b"fine"]
    # A write that claims a transaction the coordinator never opened is refused (KIP-890).
    leader = broker._metadata.topic(topic).leader(0)
    with pytest.raises(errors.InvalidTxnState):
        ray.get(
            leader.produce.remote(pa.table({"value": [b"rogue"]}), 12345, 0, 0, -1, False, True)
        )
    for client in (reader, producer, plain):
        client.close()


def test_consume_transform_produce_commits_offsets_with_the_output(broker) -> None:
    source, sink = _topic(broker), _topic(broker)
    feed = broker.producer()
    for i in range(200):
        feed.send(source, b"%d" % i, key=b"k%d" % (i % 7))
    feed.flush()
    group = f"g-{uuid.uuid4().hex[:6]}"
    consumer = broker.consumer(
        source, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    producer = broker.producer(transactional_id=f"etl-{uuid.uuid4().hex[:6]}")
    producer.init_transactions()
    rng = random.Random(7)
    done = 0
    aborted_rounds = 0
    while done < 200:
        batch = consumer.poll(timeout_ms=500, max_records=37)
        if not batch:
            continue
        producer.begin_transaction()
        for records in batch.values():
            for record in records:
                producer.send(sink, record.value.upper() + b"!", key=record.key)
        positions = {tp: consumer.position(tp) for tp in batch}
        producer.send_offsets_to_transaction(positions, consumer.group_metadata())
        if rng.random() < 0.3:  # a crash-like failure: abort and go back to the committed offsets
            producer.abort_transaction()
            aborted_rounds += 1
            for tp in batch:
                committed = consumer.committed(tp)
                consumer.seek(tp, committed if committed is not None else 0)
            continue
        producer.commit_transaction()
        done += sum(len(r) for r in batch.values())
    assert aborted_rounds > 0
    reader = _reader(broker, sink, "read_committed")
    outputs = sorted(int(r.value[:-1]) for r in _read_all(reader, 200))
    assert outputs == list(range(200))  # each input exactly once
    committed = {tp: consumer.committed(tp) for tp in consumer.assignment()}
    assert sum(committed.values()) == 200
    for client in (reader, consumer, producer, feed):
        client.close()


def test_a_restarted_coordinator_resumes_the_open_transaction(broker) -> None:
    topic = _topic(broker)
    producer = broker.producer(transactional_id=f"app-{uuid.uuid4().hex[:6]}")
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, b"before", partition=0).result(timeout=30)
    coordinator = ray.get_actor(TRANSACTION_COORDINATOR_NAME, namespace=broker.namespace)
    ray.kill(coordinator, no_restart=False)  # a crash: Ray restarts it from its state log
    producer.send(topic, b"after", partition=1)
    producer.commit_transaction()
    reader = _reader(broker, topic, "read_committed")
    assert sorted(r.value for r in _read_all(reader, 2)) == [b"after", b"before"]
    reader.close()
    producer.close()


@ray.remote(num_cpus=0, max_restarts=0)
class EtlWorker:
    """A consume-transform-produce loop in its own process, killed and replaced by the test."""

    def __init__(self, namespace: str, source: str, sink: str, group: str, tid: str) -> None:
        import ray_broker as rb

        self.broker = rb.connect(namespace=namespace)
        self.consumer = self.broker.consumer(
            source,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
            # Static membership: the next incarnation takes the dead one's place at once
            # instead of waiting out its session.
            group_instance_id="etl-0",
        )
        self.producer = self.broker.producer(transactional_id=tid)
        self.producer.init_transactions()
        self.sink = sink

    def run(self, seconds: float) -> int:
        done = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = self.consumer.poll(timeout_ms=200, max_records=500)
            if not batch:
                continue
            self.producer.begin_transaction()
            for records in batch.values():
                for record in records:
                    self.producer.send(self.sink, record.value + b"!", key=record.key)
            positions = {tp: self.consumer.position(tp) for tp in batch}
            self.producer.send_offsets_to_transaction(positions, self.consumer.group_metadata())
            self.producer.commit_transaction()
            done += sum(len(r) for r in batch.values())
        return done


@pytest.mark.chaos  # a long kill run: pytest -m chaos
def test_exactly_once_while_the_loop_process_and_the_coordinator_are_killed(broker) -> None:
    """Kafka TransactionsTest's assertion: the sink, read with read_committed, holds every input
    exactly once, in order per key, though loop processes die mid-transaction (twice here, ten
    times under ``-m chaos``) and a new incarnation (same transactional id) takes over, and the
    coordinator crashes once."""
    _exactly_once_with_kills(broker, total=5_000, rounds=2)


@pytest.mark.chaos
def test_exactly_once_through_many_kills(broker) -> None:
    """On demand (``pytest -m chaos``): the same with 50k records and ten loop kills."""
    _exactly_once_with_kills(broker, total=50_000, rounds=10)


def _exactly_once_with_kills(broker, total: int, rounds: int) -> None:
    source, sink = _topic(broker, partitions=3), _topic(broker, partitions=3)
    feed = broker.producer()
    for i in range(total):
        feed.send(source, b"%06d" % i, key=b"k%d" % (i % 50))
    feed.flush()
    group, tid = f"eos-{uuid.uuid4().hex[:6]}", f"eos-{uuid.uuid4().hex[:6]}"
    rng = random.Random(11)
    reader = _reader(broker, sink, "read_committed")
    seen: list = []
    for round_number in range(rounds):
        worker = EtlWorker.remote(broker.namespace, source, sink, group, tid)
        running = worker.run.remote(30.0)
        time.sleep(rng.uniform(2.0, 5.0))
        if round_number == 1:
            coordinator = ray.get_actor(TRANSACTION_COORDINATOR_NAME, namespace=broker.namespace)
            ray.kill(coordinator, no_restart=False)
            time.sleep(rng.uniform(0.5, 2.0))
        ray.kill(worker)  # mid-transaction, most likely
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(running, timeout=60)
    finisher = EtlWorker.remote(broker.namespace, source, sink, group, tid)
    deadline = time.monotonic() + 120
    while len(seen) < total and time.monotonic() < deadline:
        ray.get(finisher.run.remote(2.0), timeout=120)
        for records in reader.poll(timeout_ms=500, max_records=10_000).values():
            seen.extend(records)
    seen.extend(_read_all(reader, 0, timeout_s=1))
    values = [r.value for r in seen]
    assert len(values) == total, f"{len(values)} outputs for {total} inputs"
    assert sorted(values) == [b"%06d!" % i for i in range(total)]  # each exactly once
    by_key: dict[bytes, list[bytes]] = {}
    for record in seen:
        by_key.setdefault(record.key, []).append(record.value)
    for key, outputs in by_key.items():
        assert outputs == sorted(outputs), f"key {key!r} out of order"
    ray.kill(finisher)
    reader.close()
    feed.close()


def test_a_restarted_coordinator_aborts_an_abandoned_transaction_on_its_own(broker) -> None:
    """The producer is gone and never calls again; the coordinator crashed and restarted. The
    Controller's nudge starts its housekeeping, which times the transaction out, so the last
    stable offset moves on."""
    topic, _ = _open_short_transaction(broker, b"abandoned")
    coordinator = ray.get_actor(TRANSACTION_COORDINATOR_NAME, namespace=broker.namespace)
    ray.kill(coordinator, no_restart=False)
    reader = _reader(broker, topic, "read_committed")
    _wait_for_the_abort(reader, topic, timeout_s=60)
    assert _read_all(reader, 0, timeout_s=1) == []
    reader.close()
