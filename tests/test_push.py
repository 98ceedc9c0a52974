"""Push consumption on a real broker: credits bound what a handler holds (in-process callables
and Ray actor methods), credits come back, a raising handler gets the batch again, a crashed
handler actor gets it again after its restart, a consumer group commits what finished and
dead-letters a batch that keeps failing, and bad subscriptions are refused."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pyarrow as pa
import pytest
import ray

from ray_broker.errors import GroupNotFound, InvalidConfig, InvalidFilter, TopicNotFound


def new_topic(broker, records: int, partitions: int = 2) -> str:
    name = f"p-{uuid.uuid4().hex[:8]}"
    broker.admin().create_topic(name, partitions=partitions)
    with broker.producer() as producer:
        for i in range(records):
            producer.send(name, value=b"%d" % i, key=b"k%d" % i)
    return name


@pytest.fixture(scope="module")
def empty_topic(shared_broker) -> str:
    return new_topic(shared_broker, 0)


def wait_until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def caught_up(broker, group: str) -> bool:
    """Whether the group committed every partition to its end (it may not exist yet)."""
    try:
        partitions = broker.admin().describe_group(group).partitions
    except GroupNotFound:
        return False
    return bool(partitions) and all(p.lag == 0 for p in partitions)


@ray.remote(max_concurrency=16)
class Recorder:
    """A handler actor that counts how many batches it holds at once."""

    def __init__(self, delay_s: float = 0.05, crash_marker: str | None = None) -> None:
        self.delay_s = delay_s
        self.holding = self.most = 0
        self.values: list[int] = []
        self.counts: list[int] = []
        self.lock = threading.Lock()
        self.crash_marker = crash_marker  # crash once: the marker file says it happened

    def handle(self, table: pa.Table) -> None:
        if self.crash_marker and not os.path.exists(self.crash_marker):
            open(self.crash_marker, "w").close()
            os._exit(1)  # the actor process dies holding this batch
        with self.lock:
            self.holding += 1
            self.most = max(self.most, self.holding)
        time.sleep(self.delay_s)
        with self.lock:
            self.holding -= 1
            self.values.extend(int(v) for v in table.column("value").to_pylist())
            if "delivery_count" in table.column_names:
                self.counts.extend(table.column("delivery_count").to_pylist())

    def seen(self) -> tuple[list[int], int, list[int]]:
        return list(self.values), self.most, list(self.counts)


@pytest.mark.parametrize("credits", [1, 4])
def test_credits_bound_what_a_handler_actor_holds(shared_broker, credits):
    topic = new_topic(shared_broker, 400)
    recorder = Recorder.remote()
    subscription = shared_broker.subscribe_push(
        topic,
        group_id=f"push-{credits}",
        handler=recorder.handle,
        credits=credits,
        auto_offset_reset="earliest",
        max_poll_records=20,
    )
    wait_until(lambda: len(ray.get(recorder.seen.remote())[0]) >= 400)
    values, most, _ = ray.get(recorder.seen.remote())
    assert sorted(set(values)) == list(range(400))
    assert most <= credits
    if credits > 1:
        assert most > 1  # credits really allow batches in parallel
    wait_until(lambda: subscription.stats()["in_flight"] == 0)  # the credits came back
    stats = subscription.stats()
    assert stats["max_in_flight"] <= credits and stats["failed_batches"] == 0
    subscription.close()
    ray.kill(recorder)


def test_an_in_process_handler_gets_batches_one_at_a_time(shared_broker):
    topic = new_topic(shared_broker, 300)
    seen: list[int] = []
    holding = [0, 0]  # now, most

    def handler(table: pa.Table) -> None:
        holding[0] += 1
        holding[1] = max(holding)
        seen.extend(int(v) for v in table.column("value").to_pylist())
        time.sleep(0.01)
        holding[0] -= 1

    with shared_broker.subscribe_push(
        topic, group_id="inproc", handler=handler, credits=1, auto_offset_reset="earliest"
    ) as subscription:
        wait_until(lambda: len(seen) >= 300)
        assert subscription.stats()["max_in_flight"] == 1
    assert sorted(seen) == list(range(300)) and holding[1] == 1
    described = shared_broker.admin().describe_share_group("inproc")
    assert all(p.lag == 0 for p in described.partitions)


def test_a_raising_handler_gets_the_batch_again_with_its_delivery_count(shared_broker):
    topic = new_topic(shared_broker, 50, partitions=1)
    attempts: list[list[int]] = []

    def flaky(table: pa.Table) -> None:
        attempts.append(table.column("delivery_count").to_pylist())
        if len(attempts) == 1:
            raise RuntimeError("database unavailable")

    with shared_broker.subscribe_push(
        topic, group_id="flaky", handler=flaky, credits=2, auto_offset_reset="earliest"
    ) as subscription:
        wait_until(lambda: sum(len(a) for a in attempts[1:]) >= 50)
        assert subscription.stats()["failed_batches"] == 1
        assert subscription.error is None  # a failed delivery, not a dead subscriber
    assert attempts[0][0] == 1 and 2 in [c for a in attempts[1:] for c in a]


def _seen(recorder) -> tuple[list[int], int, list[int]]:
    try:
        return ray.get(recorder.seen.remote())
    except ray.exceptions.RayActorError:  # restarting
        return [], 0, []


def test_a_crashed_handler_actor_gets_its_batch_again_after_restart(shared_broker, tmp_path):
    topic = new_topic(shared_broker, 100, partitions=1)
    marker = str(tmp_path / "crashed")
    recorder = Recorder.options(max_restarts=1).remote(delay_s=0.0, crash_marker=marker)
    with shared_broker.subscribe_push(
        topic,
        group_id="crashy",
        handler=recorder.handle,
        credits=1,
        auto_offset_reset="earliest",
    ) as subscription:
        wait_until(lambda: len(_seen(recorder)[0]) >= 100, timeout_s=90)
        values, _, counts = _seen(recorder)
        assert sorted(set(values)) == list(range(100))
        assert max(counts) >= 2  # the batch the crash held came back
        assert subscription.stats()["failed_batches"] >= 1
    ray.kill(recorder)


def test_a_consumer_group_subscription_commits_what_finished(shared_broker):
    topic = new_topic(shared_broker, 200)
    seen: list[int] = []
    failed_once: list[bool] = []

    def handler(table: pa.Table) -> None:
        if not failed_once:
            failed_once.append(True)
            raise ValueError("first batch fails once")
        seen.extend(int(v) for v in table.column("value").to_pylist())

    with shared_broker.subscribe_push(
        topic,
        group_id="logsync",
        handler=handler,
        credits=3,
        group_type="consumer",
        auto_offset_reset="earliest",
        max_poll_records=25,
    ):
        wait_until(lambda: set(range(200)) <= set(seen))
        wait_until(lambda: caught_up(shared_broker, "logsync"))


def test_a_consumer_group_batch_that_keeps_failing_goes_to_the_dead_letter_topic(shared_broker):
    topic = new_topic(shared_broker, 30, partitions=1)

    def poison(table: pa.Table) -> None:
        if 7 in [int(v) for v in table.column("value").to_pylist()]:
            raise ValueError("cannot parse record 7")

    with shared_broker.subscribe_push(
        topic,
        group_id="strict",
        handler=poison,
        credits=1,
        group_type="consumer",
        auto_offset_reset="earliest",
        max_poll_records=10,
        max_delivery_attempts=2,
    ) as subscription:
        admin = shared_broker.admin()
        wait_until(lambda: caught_up(shared_broker, "strict"))
        assert subscription.stats()["failed_batches"] == 2
    letters = admin.list_dead_letters(f"{topic}.strict.dlq")
    assert 7 in [int(d.value) for d in letters]
    assert {d.reason for d in letters} == {"failed"} and "record 7" in letters[0].error


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"credits": 0}, InvalidConfig),
        ({"credits": 10**6}, InvalidConfig),
        ({"credits": "3"}, InvalidConfig),
        ({"handler": 42}, InvalidConfig),
        ({"group_type": "fanout"}, InvalidConfig),
        ({"group_id": ""}, InvalidConfig),
        ({"filter": "key ="}, InvalidFilter),
        ({"max_poll_recordz": 5}, InvalidConfig),
        ({"topic": "no-such-topic"}, TopicNotFound),
    ],
)
def test_bad_subscriptions_are_refused(shared_broker, empty_topic, options, error):
    arguments = {
        "topic": empty_topic,
        "group_id": "bad",
        "handler": print,
        "credits": 2,
    }
    arguments.update(options)
    with pytest.raises(error):
        shared_broker.subscribe_push(arguments.pop("topic"), **arguments)
