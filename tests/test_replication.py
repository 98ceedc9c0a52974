"""Replication and failover on real multi-node Ray clusters (all nodes on 127.0.0.1).

The tests share one cluster (a head node with the Controller and no replicas, and three
worker nodes, with Ray's node health checks tightened so a killed node is declared dead in
~1.5 s); each gets its own broker (namespace and data directory) on it, and the cluster is
topped up to three live workers after each test that killed some.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import defaultdict

import pytest
import ray

import ray_broker as rb
from ray_broker import TopicPartition, errors
from tests.cluster_helpers import LocalCluster, partition_info, replica_pid, wait_until

BROKER = {
    "replicas.on.head.node": False,
    "controller.check.interval.ms": 200,
    "leader.probe.timeout.ms": 2_000,
}
TOPIC = {"min.insync.replicas": 2, "replica.lag.time.max.ms": 2_000}


WORKERS = 3


@pytest.fixture(scope="module")
def shared_cluster():
    """One multi-node cluster for the module: building one costs 13-17 s."""
    local = LocalCluster(WORKERS)
    yield local
    local.shutdown()


@pytest.fixture
def cluster(shared_cluster, tmp_path):
    local = shared_cluster
    broker = rb.connect(data_dir=tmp_path, namespace=f"repl-{uuid.uuid4().hex[:6]}", config=BROKER)
    yield local, broker
    try:
        broker.shutdown()
    finally:
        while len(local.workers) < WORKERS:  # a test killed nodes: the next one gets three
            local.add_worker()
        local.cluster.wait_for_nodes()


def read_partition(broker, topic: str, partition: int) -> list[tuple[int, bytes, bytes]]:
    consumer = broker.consumer(auto_offset_reset="earliest")
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    end = wait_until(lambda: consumer.end_offsets([tp])[tp] + 1) - 1
    rows: list[tuple[int, bytes, bytes]] = []
    deadline = time.monotonic() + 60
    while (not rows or rows[-1][0] < end - 1) and end and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500, max_records=50_000).values():
            rows.extend((r.offset, r.key, r.value) for r in records)
    consumer.close()
    return rows


def jepsen_summary(acked: dict, partitions: dict[int, list]) -> dict[str, int]:
    """acked: value -> (partition, offset). Checks every acknowledged write is present exactly
    once at its offset and that each key's values stay in send order."""
    present: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    reordered = 0
    for partition, rows in partitions.items():
        last_by_key: dict[bytes, int] = {}
        offsets = [o for o, _, _ in rows]
        assert offsets == sorted(set(offsets)), "offsets not increasing"
        for offset, key, value in rows:
            present[value].append((partition, offset))
            number = int(value)
            if key in last_by_key and number < last_by_key[key]:
                reordered += 1
            last_by_key[key] = number
    lost = sum(1 for value, where in acked.items() if where not in present.get(value, []))
    duplicated = sum(len(where) - 1 for where in present.values() if len(where) > 1)
    unacked_present = sum(1 for value in present if value not in acked)
    return {
        "acked": len(acked),
        "lost": lost,
        "duplicated": duplicated,
        "reordered": reordered,
        "unacked_but_present": unacked_present,
    }


def produce_in_background(broker, topic: str, count: int, rate: int, acks="all"):
    producer = broker.producer(
        acks=acks, linger_ms=2, delivery_timeout_ms=90_000, request_timeout_ms=5_000
    )
    futures: list[tuple[bytes, object]] = []

    def run() -> None:
        started = time.monotonic()
        for i in range(count):
            value = b"%d" % i
            futures.append((value, producer.send(topic, value=value, key=b"k%d" % (i % 40))))
            if i % 200 == 0:
                ahead = i / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    thread = threading.Thread(target=run)
    thread.start()
    return producer, futures, thread


def collect(producer, futures) -> dict[bytes, tuple[int, int]]:
    producer.flush(timeout=120)
    acked = {}
    for value, future in futures:
        try:
            meta = future.result(timeout=1)
        except errors.BrokerError:
            continue
        acked[value] = (meta.partition, meta.offset)
    producer.close()
    return acked


@pytest.mark.slow  # tuned twin of test_faults_defaults' leader-node-loss test, which stays
def test_acked_records_survive_leader_node_loss(cluster):
    local, broker = cluster
    topic = "orders"
    broker.admin().create_topic(topic, partitions=2, replication_factor=3, config=TOPIC)
    producer, futures, sender = produce_in_background(broker, topic, 100_000, rate=10_000)
    failovers = []
    for _ in range(3):
        time.sleep(2.0)
        before = partition_info(broker, topic, 0)
        local.kill_node(before.leader_node_id)
        started = time.monotonic()
        local.add_worker()  # keep three workers, so the lost replica is replaced
        after = wait_until(
            lambda b=before: (
                (p := partition_info(broker, topic, 0)).leader_epoch > b.leader_epoch
                and p.leader
                and p.log_end_offset >= 0
                and p
            )
        )
        failovers.append(time.monotonic() - started)
        assert after.leader_node_id != before.leader_node_id
    sender.join()
    acked = collect(producer, futures)
    summary = jepsen_summary(acked, {p: read_partition(broker, topic, p) for p in (0, 1)})
    print(f"leader node kills: {summary}; failover seconds: {[round(f, 2) for f in failovers]}")
    assert summary["acked"] > 90_000
    assert summary["lost"] == 0
    assert summary["duplicated"] == 0
    assert summary["reordered"] == 0
    # The replicas were replaced and caught up: three in sync again.
    wait_until(lambda: len(partition_info(broker, topic, 0).isr) == 3, timeout_s=60)


@pytest.mark.chaos  # a long kill run: pytest -m chaos
def test_killed_replica_processes_lose_nothing(cluster):
    _, broker = cluster
    topic = "payments"
    broker.admin().create_topic(topic, partitions=1, replication_factor=3, config=TOPIC)
    producer, futures, sender = produce_in_background(broker, topic, 20_000, rate=5_000)
    time.sleep(1.0)
    info = partition_info(broker, topic, 0)
    follower = next(s for s in info.replicas if s != info.leader)
    os.kill(replica_pid(broker, topic, 0, follower), signal.SIGKILL)
    time.sleep(1.0)
    os.kill(replica_pid(broker, topic, 0, info.leader), signal.SIGKILL)
    sender.join()
    acked = collect(producer, futures)
    summary = jepsen_summary(acked, {0: read_partition(broker, topic, 0)})
    print(f"replica process kills: {summary}")
    assert summary["acked"] == 20_000
    assert (summary["lost"], summary["duplicated"], summary["reordered"]) == (0, 0, 0)
    # A replica whose actor is gone for good (killed without restart, as when its start failed)
    # is started again by the Controller on its node and rejoins the in-sync replicas.
    info = partition_info(broker, topic, 0)
    follower = next(s for s in info.replicas if s != info.leader)
    old_pid = replica_pid(broker, topic, 0, follower)
    record_id = broker.admin().describe_topic(topic).topic_id
    name = f"ray_broker.partition.{record_id}.0.{follower}"
    ray.kill(ray.get_actor(name, namespace=broker.namespace), no_restart=True)

    def restarted() -> bool:
        try:
            pid = replica_pid(broker, topic, 0, follower)
        except (ValueError, ray.exceptions.RayError):
            return False
        return pid != old_pid and len(partition_info(broker, topic, 0).isr) == 3

    wait_until(restarted, timeout_s=60)


def test_lagging_follower_leaves_the_isr_and_rejoins_after_catching_up(cluster):
    _, broker = cluster
    topic = "lag"
    broker.admin().create_topic(topic, partitions=1, replication_factor=3, config=TOPIC)
    info = partition_info(broker, topic, 0)
    follower = next(s for s in info.replicas if s != info.leader)
    pid = replica_pid(broker, topic, 0, follower)
    producer = broker.producer(acks="all")
    os.kill(pid, signal.SIGSTOP)  # the follower hangs
    try:
        wait_until(lambda: follower not in partition_info(broker, topic, 0).isr, timeout_s=30)
        for i in range(100):  # two in-sync replicas still satisfy min.insync.replicas=2
            producer.send(topic, b"%d" % i)
        producer.flush(timeout=30)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: follower in partition_info(broker, topic, 0).isr, timeout_s=30)
    assert partition_info(broker, topic, 0).high_watermark == 100


def test_acks_all_refuses_when_too_few_replicas_are_in_sync_and_acks_1_continues(cluster):
    _, broker = cluster
    topic = "strict"
    broker.admin().create_topic(topic, partitions=1, replication_factor=3, config=TOPIC)
    info = partition_info(broker, topic, 0)
    pids = [replica_pid(broker, topic, 0, s) for s in info.replicas if s != info.leader]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: partition_info(broker, topic, 0).isr == [info.leader], timeout_s=30)
        strict = broker.producer(acks="all", delivery_timeout_ms=3_000)
        with pytest.raises(errors.BrokerTimeoutError, match="NotEnoughReplicas"):
            strict.send(topic, b"needs two copies").result(timeout=30)
        relaxed = broker.producer(acks=1)
        assert relaxed.send(topic, b"one copy is enough").result(timeout=30).offset == 0
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: len(partition_info(broker, topic, 0).isr) == 3, timeout_s=30)
    rows = read_partition(broker, topic, 0)
    assert [value for _, _, value in rows] == [b"one copy is enough"]  # nothing half-committed


def test_a_hung_leader_is_replaced_and_cannot_get_writes_acknowledged(cluster):
    _, broker = cluster
    topic = "fenced"
    broker.admin().create_topic(topic, partitions=1, replication_factor=3, config=TOPIC)
    old = partition_info(broker, topic, 0)
    old_handle = broker._metadata.topic(topic).leader(0)
    pid = replica_pid(broker, topic, 0, old.leader)
    os.kill(pid, signal.SIGSTOP)
    try:
        new = wait_until(
            lambda: (p := partition_info(broker, topic, 0)).leader != old.leader and p.leader and p,
            timeout_s=30,
        )
        assert new.leader_epoch > old.leader_epoch
        producer = broker.producer(acks="all", request_timeout_ms=3_000)
        assert producer.send(topic, b"to the new leader").result(timeout=30).offset == 0
    finally:
        os.kill(pid, signal.SIGCONT)
    import pyarrow as pa

    zombie_write = old_handle.produce.remote(pa.table({"value": [b"zombie"]}), None, 0, 0, -1)
    with pytest.raises((errors.NotLeader, errors.NotEnoughReplicas, errors.FencedLeaderEpoch)):
        from ray_broker._ray import resolve

        resolve(zombie_write, timeout_s=60)
    assert [v for _, _, v in read_partition(broker, topic, 0)] == [b"to the new leader"]


@pytest.mark.chaos
def test_chaos_random_kills_keep_every_acknowledged_write(cluster):
    """On demand (``pytest -m chaos``): 20+ random node and process kills under load."""
    import random

    local, broker = cluster
    topic = "chaos"
    broker.admin().create_topic(topic, partitions=3, replication_factor=3, config=TOPIC)
    producer, futures, sender = produce_in_background(broker, topic, 300_000, rate=5_000)
    rng = random.Random(7)
    kills = 0
    while sender.is_alive() and kills < 30:
        time.sleep(rng.uniform(0.5, 2.0))
        info = partition_info(broker, topic, rng.randrange(3))
        if rng.random() < 0.4 and info.leader_node_id:
            local.kill_node(info.leader_node_id)
            local.add_worker()
        elif info.leader:
            slot = rng.choice(info.replicas)
            try:
                os.kill(replica_pid(broker, topic, info.partition, slot), signal.SIGKILL)
            except (ray.exceptions.RayError, ProcessLookupError, ValueError):
                continue
        kills += 1
    sender.join()
    acked = collect(producer, futures)
    summary = jepsen_summary(acked, {p: read_partition(broker, topic, p) for p in range(3)})
    print(f"chaos: {kills} kills, {summary}")
    assert kills >= 20
    assert (summary["lost"], summary["duplicated"], summary["reordered"]) == (0, 0, 0)


def test_reassignment_moves_a_replica_to_a_new_node_without_losing_writes(cluster):
    local, broker = cluster
    topic = "moving"
    broker.admin().create_topic(
        topic, partitions=1, replication_factor=2, config={"replica.lag.time.max.ms": 2_000}
    )
    before = partition_info(broker, topic, 0)
    newcomer = local.add_worker()
    local.cluster.wait_for_nodes()
    keep = before.leader_node_id
    producer, futures, sender = produce_in_background(broker, topic, 20_000, rate=5_000)
    time.sleep(1.0)
    moved = broker.admin().reassign_partitions({TopicPartition(topic, 0): [newcomer.node_id, keep]})
    sender.join()
    acked = collect(producer, futures)
    after = wait_until(
        lambda: (p := partition_info(broker, topic, 0)).leader_node_id == newcomer.node_id and p
    )
    assert after.replicas == moved[TopicPartition(topic, 0)]
    assert len(after.replicas) == 2 and sorted(after.isr) == sorted(after.replicas)
    summary = jepsen_summary(acked, {0: read_partition(broker, topic, 0)})
    assert summary["acked"] == 20_000
    assert (summary["lost"], summary["duplicated"], summary["reordered"]) == (0, 0, 0)


def test_a_new_leader_keeps_open_transactions_hidden_and_their_markers(cluster):
    """LSO and markers under failover: the leader holding an open transaction's records dies;
    the new leader (a follower that copied them) neither shows them to read_committed nor
    loses the transaction, and the commit's markers land on it."""
    local, broker = cluster
    topic = "ledger"
    broker.admin().create_topic(topic, partitions=1, replication_factor=3, config=TOPIC)
    plain = broker.producer(acks="all")
    plain.send(topic, b"before").result(timeout=60)
    producer = broker.producer(transactional_id="ledger-writer")
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, b"in-txn-1").result(timeout=60)
    plain.send(topic, b"behind-txn").result(timeout=60)
    before = partition_info(broker, topic, 0)
    local.kill_node(before.leader_node_id)
    local.add_worker()
    wait_until(lambda: partition_info(broker, topic, 0).leader_epoch > before.leader_epoch)
    reader = broker.consumer(isolation_level="read_committed", auto_offset_reset="earliest")
    tp = TopicPartition(topic, 0)
    reader.assign([tp])
    assert wait_until(lambda: reader.end_offsets([tp])[tp] == 1)  # the LSO: the open txn
    seen = [r.value for records in reader.poll(timeout_ms=2_000).values() for r in records]
    assert seen == [b"before"]
    producer.send(topic, b"in-txn-2")
    producer.commit_transaction()  # the markers go to the new leader
    deadline = time.monotonic() + 60
    while len(seen) < 4 and time.monotonic() < deadline:
        seen += [r.value for records in reader.poll(timeout_ms=500).values() for r in records]
    assert seen == [b"before", b"in-txn-1", b"behind-txn", b"in-txn-2"]
    for client in (reader, producer, plain):
        client.close()


@pytest.mark.chaos  # a long kill run: pytest -m chaos
def test_share_state_and_delayed_records_survive_leader_node_loss(shared_cluster, tmp_path):
    """A worker node dies holding the leader of a share-group topic's partition: what was
    accepted before is never delivered again, everything else is. Then (the cluster topped up)
    the node holding the schedule topic's leader dies with delayed records pending: each
    appears once, none early, none lost."""
    from ray_broker.config import DELAY_TOPIC
    from ray_broker.delay_index import DUE_HEADER

    local = shared_cluster
    broker = rb.connect(
        data_dir=tmp_path,
        namespace=f"queues-{uuid.uuid4().hex[:6]}",
        config={**BROKER, "default.replication.factor": 3},
    )
    try:
        admin = broker.admin()
        admin.create_topic("jobs", partitions=1, replication_factor=3, config=TOPIC)
        admin.create_topic("later", partitions=1, replication_factor=3, config=TOPIC)
        with broker.producer() as producer:
            for i in range(600):
                producer.send("jobs", value=b"%d" % i)
            producer.send("later", value=b"warm-up", delay_ms=1).result(timeout=120)
        member = broker.share_consumer(
            "jobs", group_id="w", auto_offset_reset="earliest", max_poll_records=200
        )
        accepted = []
        while len(accepted) < 200:
            accepted += [r.offset for rs in member.poll(timeout_ms=1_000).values() for r in rs]
        member.commit_sync()
        local.kill_node(partition_info(broker, "jobs", 0).leader_node_id)
        rest: list[int] = []
        deadline = time.monotonic() + 120
        while len(set(rest)) < 400 and time.monotonic() < deadline:
            rest += [r.offset for rs in member.poll(timeout_ms=1_000).values() for r in rs]
        member.close()
        assert not set(accepted) & set(rest), "accepted records were delivered again"
        assert set(accepted) | set(rest) == set(range(600))

        local.add_worker()
        local.cluster.wait_for_nodes()
        wait_until(lambda: len(partition_info(broker, DELAY_TOPIC, 0).isr) == 3, 120)
        wait_until(lambda: len(partition_info(broker, "later", 0).isr) == 3, 120)
        reader = broker.consumer(
            "later", auto_offset_reset="latest", isolation_level="read_committed"
        )
        reader.poll(timeout_ms=500)
        with broker.producer() as producer:
            for i in range(2_000):
                producer.send("later", value=b"%d" % i, delay_ms=3_000 + i)
        local.kill_node(partition_info(broker, DELAY_TOPIC, 0).leader_node_id)
        arrived: list[tuple[bytes, int, float]] = []
        deadline = time.monotonic() + 120
        while len(arrived) < 2_000 and time.monotonic() < deadline:
            for rs in reader.poll(timeout_ms=500).values():
                now = time.time() * 1000
                arrived += [(r.value, int(dict(r.headers)[DUE_HEADER]), now) for r in rs]
        reader.close()
        values = [v for v, _, _ in arrived]
        assert len(values) == len(set(values)) == 2_000, "delayed records lost or doubled"
        assert all(at >= due for _, due, at in arrived), "a delayed record came early"
    finally:
        broker.shutdown()
        while len(local.workers) < WORKERS:
            local.add_worker()
        local.cluster.wait_for_nodes()
