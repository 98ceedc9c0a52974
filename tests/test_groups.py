"""Consumer groups on a real local Ray: members in their own actor processes, real kills."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
import ray

import ray_broker as rb
from ray_broker import TopicPartition, errors

FAST_GROUP = {
    "session_timeout_ms": 1_500,
    "heartbeat_interval_ms": 150,
    "auto_commit_interval_ms": 200,
    "auto_offset_reset": "earliest",
}


@pytest.fixture
def broker(shared_broker):
    """One broker for the module: every test makes its own topics and group ids."""
    return shared_broker


@ray.remote(num_cpus=0)
class GroupWorker:
    """One group member in its own process; appends what it consumes to a file, so what a
    killed member saw survives it."""

    def __init__(self, namespace: str, topic: str, log: str, options: dict) -> None:
        import ray_broker as rb
        from ray_broker.consumer import ConsumerRebalanceListener

        class Recorder(ConsumerRebalanceListener):
            def __init__(self) -> None:
                self.events: list[tuple[str, list]] = []

            def on_partitions_revoked(self, revoked):
                self.events.append(("revoked", sorted(revoked)))

            def on_partitions_assigned(self, assigned):
                self.events.append(("assigned", sorted(assigned)))

        self.broker = rb.connect(namespace=namespace)
        self.listener = Recorder()
        self.consumer = self.broker.consumer(**options)
        self.consumer.subscribe([topic], listener=self.listener)
        self.log = open(log, "a")  # noqa: SIM115 - kept open for the actor's life

    def poll_for(self, seconds: float) -> int:
        count = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=100, max_records=2_000).values():
                for r in records:
                    self.log.write(f"{r.partition},{r.offset}\n")
                count += sum(1 for _ in records)
            self.log.flush()
        return count

    def assignment(self) -> list[tuple[str, int]]:
        return sorted(tuple(tp) for tp in self.consumer.assignment())

    def events(self) -> list:
        return self.listener.events

    def close(self) -> None:
        self.consumer.close()
        self.log.close()


def make_topic(broker, partitions: int) -> str:
    name = f"g-{uuid.uuid4().hex[:6]}"
    broker.admin().create_topic(name, partitions=partitions)
    return name


def produce(broker, topic: str, count: int, partitions: int) -> None:
    producer = broker.producer()
    for i in range(count):
        producer.send(topic, b"%d" % i, partition=i % partitions)
    producer.flush(timeout=60)
    producer.close()


def workers(broker, topic, tmp_path: Path, n: int, **options):
    group = options.pop("group_id", f"grp-{uuid.uuid4().hex[:6]}")
    opts = {**FAST_GROUP, "group_id": group, **options}
    return group, [
        GroupWorker.remote(broker.namespace, topic, str(tmp_path / f"w{i}.log"), opts)
        for i in range(n)
    ]


def seen(tmp_path: Path, n: int) -> list[Counter]:
    out = []
    for i in range(n):
        path = tmp_path / f"w{i}.log"
        lines = path.read_text().split() if path.exists() else []
        out.append(Counter(tuple(map(int, line.split(","))) for line in lines))
    return out


def wait_until(condition, timeout_s: float = 30, step_s: float = 0.1) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, "condition not met in time"
        time.sleep(step_s)
    return time.monotonic() - started


def test_members_share_partitions_disjointly_and_cover_all(broker, tmp_path):
    topic = make_topic(broker, 6)
    _, members = workers(broker, topic, tmp_path, 3)
    ray.get([m.poll_for.remote(3) for m in members])
    assignments = ray.get([m.assignment.remote() for m in members])
    flat = [tp for a in assignments for tp in a]
    assert sorted(flat) == [(topic, p) for p in range(6)]
    assert all(len(a) == 2 for a in assignments)
    ray.get([m.close.remote() for m in members])


@pytest.mark.chaos  # a long kill run: pytest -m chaos
def test_killed_member_partitions_move_without_skipping_records(broker, tmp_path):
    topic = make_topic(broker, 12)
    group, members = workers(broker, topic, tmp_path, 3)
    ray.get([m.poll_for.remote(2) for m in members])
    victim_partitions = {p for _, p in ray.get(members[2].assignment.remote())}
    total = 12_000
    producing = threading.Thread(target=produce, args=(broker, topic, total, 12))
    producing.start()
    polls = [m.poll_for.remote(2) for m in members]
    time.sleep(1.0)
    ray.kill(members[2])
    polls = polls[:2] + [m.poll_for.remote(8) for m in members[:2]]  # survivors keep polling
    admin = broker.admin()
    moved_after = wait_until(
        lambda: (
            len(admin.describe_group(group).members) == 2
            and admin.describe_group(group).state == "Stable"
        )
    )
    assert moved_after <= FAST_GROUP["session_timeout_ms"] / 1000 + 3
    ray.get(polls)
    producing.join()
    ray.get([m.poll_for.remote(3) for m in members[:2]])
    counts = seen(tmp_path, 3)
    union = counts[0] + counts[1] + counts[2]
    expected = {(i % 12, i // 12) for i in range(total)}
    assert set(union) == expected, f"skipped {len(expected - set(union))} records"
    duplicates = {tp: c - 1 for tp, c in union.items() if c > 1}
    assert {p for p, _ in duplicates} <= victim_partitions  # only the victim's uncommitted tail
    assert sum(duplicates.values()) <= sum(counts[2].values())
    print(f"rebalance after kill: {moved_after:.2f}s; duplicates: {sum(duplicates.values())}")
    ray.get([m.close.remote() for m in members[:2]])


def test_cooperative_rebalance_keeps_retained_partitions(broker, tmp_path):
    topic = make_topic(broker, 6)
    opts = {"partition_assignment_strategy": "cooperative-sticky"}
    group, first = workers(broker, topic, tmp_path, 2, **opts)
    ray.get([m.poll_for.remote(2) for m in first])
    before = ray.get([m.assignment.remote() for m in first])
    events_before = [len(e) for e in ray.get([m.events.remote() for m in first])]
    (tmp_path / "x").mkdir()
    _, (newcomer,) = workers(broker, topic, tmp_path / "x", 1, group_id=group, **opts)
    # Two cooperative phases (revoke, then assign): poll until they are done, not for a fixed
    # time — on a busy machine 3 s was seen not to be enough.
    deadline = time.monotonic() + 30
    while True:
        ray.get([m.poll_for.remote(1) for m in [*first, newcomer]])
        if len(ray.get(newcomer.assignment.remote())) == 2 or time.monotonic() > deadline:
            break
    after = ray.get([m.assignment.remote() for m in first])
    assert len(ray.get(newcomer.assignment.remote())) == 2
    for old, new, member, skip in zip(before, after, first, events_before, strict=True):
        assert set(new) <= set(old)  # kept a subset, got nothing new
        events = ray.get(member.events.remote())[skip:]
        revoked = {tuple(tp) for kind, tps in events if kind == "revoked" for tp in tps}
        assert revoked == set(old) - set(new)  # only what moved was revoked, nothing else
    ray.get([m.close.remote() for m in [*first, newcomer]])


def test_every_group_receives_every_message(broker):
    topic = make_topic(broker, 3)
    produce(broker, topic, 300, 3)
    for group in ("billing", "email", "sms"):
        consumer = broker.consumer(topic, group_id=group, **FAST_GROUP)
        got = set()
        deadline = time.monotonic() + 30
        while len(got) < 300 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                got.update(r.value for r in records)
        assert got == {b"%d" % i for i in range(300)}
        consumer.close()
    groups = {g.group_id for g in broker.admin().list_groups()}
    assert {"billing", "email", "sms"} <= groups


def test_commit_lag_and_typed_errors(broker):
    topic = make_topic(broker, 2)
    produce(broker, topic, 200, 2)
    admin = broker.admin()
    consumer = broker.consumer(
        topic,
        group_id="lag",
        enable_auto_commit=False,
        **{k: v for k, v in FAST_GROUP.items() if k != "auto_commit_interval_ms"},
    )
    wait_until(lambda: consumer.poll(timeout_ms=200) is not None and consumer.assignment())
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer.commit({tp0: 40, tp1: 100})
    assert consumer.committed(tp0) == 40
    described = admin.describe_group("lag")
    lag = {p.partition: (p.committed_offset, p.log_end_offset, p.lag) for p in described.partitions}
    assert lag == {0: (40, 100, 60), 1: (100, 100, 0)}
    assert described.state in ("Stable", "Reconciling") and len(described.members) == 1
    with pytest.raises(errors.OffsetOutOfRange, match=r"valid offsets are \[0, 100\]"):
        consumer.commit({tp0: 101})
    other = make_topic(broker, 1)
    with pytest.raises(errors.CommitFailed, match="not assigned"):
        consumer.commit({TopicPartition(other, 0): 0})
    with pytest.raises(errors.GroupNotEmpty):
        admin.reset_offsets("lag", topic, "earliest")
    with pytest.raises(errors.GroupNotEmpty):
        admin.delete_group("lag")
    with pytest.raises(errors.GroupNotFound):
        admin.describe_group("no-such-group")
    consumer.close()
    moved = admin.reset_offsets("lag", topic, "offset", 10)
    assert moved == {tp0: 10, tp1: 10}
    admin.delete_group("lag")
    assert "lag" not in {g.group_id for g in admin.list_groups()}


def test_zombie_member_is_fenced_and_the_group_continues(broker):
    topic = make_topic(broker, 2)
    produce(broker, topic, 20, 2)
    options = {**FAST_GROUP, "enable_auto_commit": False}
    zombie = broker.consumer(topic, group_id="fence", **options)
    wait_until(lambda: zombie.poll(timeout_ms=100) is not None and len(zombie.assignment()) == 2)
    zombie._membership._stop.set()  # its heartbeats stop, as if the process hung
    survivor = broker.consumer(topic, group_id="fence", **options)
    wait_until(
        lambda: survivor.poll(timeout_ms=100) is not None and len(survivor.assignment()) == 2,
        timeout_s=20,
    )
    with pytest.raises(errors.IllegalGeneration, match="rejoin"):
        zombie.commit({TopicPartition(topic, 0): 5})
    survivor.commit({TopicPartition(topic, 0): 5})
    assert survivor.committed(TopicPartition(topic, 0)) == 5


def test_static_member_restart_gets_its_partitions_back_without_rebalance(broker):
    topic = make_topic(broker, 4)
    options = {**FAST_GROUP, "session_timeout_ms": 10_000}
    a = broker.consumer(topic, group_id="static", group_instance_id="host-a", **options)
    b = broker.consumer(topic, group_id="static", group_instance_id="host-b", **options)
    wait_until(
        lambda: (
            a.poll(timeout_ms=50) is not None
            and b.poll(timeout_ms=50) is not None
            and len(a.assignment()) == 2
            and len(b.assignment()) == 2
            # Both members own their partitions and the rebalance is over: no bump pending.
            and broker.admin().describe_group("static").state == "Stable"
        )
    )
    generation = broker.admin().describe_group("static").generation
    mine = a.assignment()
    a.close()  # a static member does not leave the group
    again = broker.consumer(topic, group_id="static", group_instance_id="host-a", **options)
    wait_until(lambda: again.poll(timeout_ms=50) is not None and again.assignment() == mine)
    assert broker.admin().describe_group("static").generation == generation
    again.close()
    b.close()


def test_pattern_subscription_and_new_partitions_trigger_rebalance(broker):
    prefix = f"logs{uuid.uuid4().hex[:4]}"
    admin = broker.admin()
    admin.create_topic(f"{prefix}-a", partitions=1)
    consumer = broker.consumer(group_id="pattern", **FAST_GROUP)
    consumer.subscribe(pattern=rf"{prefix}-.*")
    wait_until(lambda: consumer.poll(timeout_ms=50) is not None and len(consumer.assignment()) == 1)
    admin.create_topic(f"{prefix}-b", partitions=2)
    wait_until(lambda: consumer.poll(timeout_ms=50) is not None and len(consumer.assignment()) == 3)
    admin.create_partitions(f"{prefix}-a", 3)
    wait_until(lambda: consumer.poll(timeout_ms=50) is not None and len(consumer.assignment()) == 5)
    consumer.close()


@pytest.mark.chaos  # a long kill run: pytest -m chaos
def test_offsets_survive_coordinator_kill_and_broker_restart(ray_session, tmp_path):
    namespace = f"offsets-{uuid.uuid4().hex[:6]}"
    broker = rb.connect(data_dir=tmp_path, namespace=namespace)
    broker.admin().create_topic("orders", partitions=1)
    broker.producer().send_batch("orders", pa.table({"value": [b"x"] * 50})).result(timeout=30)
    consumer = broker.consumer(
        "orders",
        group_id="keep",
        enable_auto_commit=False,
        **{k: v for k, v in FAST_GROUP.items() if k != "auto_commit_interval_ms"},
    )
    wait_until(lambda: consumer.poll(timeout_ms=100) is not None and consumer.assignment())
    consumer.commit({TopicPartition("orders", 0): 30})
    consumer.close()
    ray.kill(broker._coordinator, no_restart=False)
    wait_until(lambda: _committed(broker, "keep") == {("orders", 0): 30}, timeout_s=60)
    broker.shutdown()

    again = rb.connect(data_dir=tmp_path, namespace=namespace)
    try:
        # The restarted coordinator replays its log first (slower on a busy machine).
        wait_until(lambda: _committed(again, "keep") == {("orders", 0): 30}, timeout_s=60)
        resumed = again.consumer("orders", group_id="keep", **FAST_GROUP)
        records = []
        wait_until(
            lambda: (
                records.extend(r for rs in resumed.poll(timeout_ms=100).values() for r in rs)
                or len(records) >= 20
            )
        )
        assert records[0].offset == 30  # resumes at the committed offset
        resumed.close()
    finally:
        again.shutdown()


def _committed(broker, group):
    try:
        return ray.get(broker._coordinator.committed.remote(group), timeout=5)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def test_no_committed_offset_with_reset_none_raises(broker):
    topic = make_topic(broker, 1)
    consumer = broker.consumer(
        topic, group_id="strict", **{**FAST_GROUP, "auto_offset_reset": "none"}
    )
    with pytest.raises(errors.NoOffsetForPartition, match="no committed offset"):
        for _ in range(50):
            consumer.poll(timeout_ms=100)
    consumer.close()


def test_group_members_must_use_the_same_strategy(broker):
    topic = make_topic(broker, 1)
    first = broker.consumer(topic, group_id="proto", **FAST_GROUP)
    first.poll(timeout_ms=100)
    second = broker.consumer(
        topic, group_id="proto", partition_assignment_strategy="roundrobin", **FAST_GROUP
    )
    with pytest.raises(errors.InconsistentGroupProtocol):
        second.poll(timeout_ms=100)
    first.close()
