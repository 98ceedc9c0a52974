"""The producer's decisions without Ray or threads: linger, sealing, partitioning of a buffer,
in-flight limits, sequence numbers, their rewind, retry order and timeouts — on a fake clock."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ray_broker import errors
from ray_broker.producer.accumulator import (
    MAX_NAGLE_WAIT_S,
    AccumulatorSettings,
    RecordAccumulator,
)
from ray_broker.producer.batch import PendingRecords, ProducerBatch
from ray_broker.producer.partitioner import partition_for_key
from ray_broker.structs import ProduceResult


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(**settings) -> tuple[RecordAccumulator, Clock]:
    clock = Clock()
    return RecordAccumulator(AccumulatorSettings(**settings), clock), clock


def send(acc: RecordAccumulator, topic="t", partitions=4, key=None, value=b"v", **kw):
    return acc.append(topic, partitions, key, value, len(value), 1, **kw)


def seal(acc: RecordAccumulator, now: float) -> list[ProducerBatch]:
    """What the sender does each round: split what is due and queue it."""
    out = []
    for item in acc.take_sealed(now):
        if isinstance(item, PendingRecords):
            acc.place(item, *acc.split(item))
            item.completion.fire()
            out.extend(item.pieces)
        else:
            acc.enqueue(item)
            out.extend(item)
    return out


def ack(acc: RecordAccumulator, batch: ProducerBatch) -> None:
    assert acc.finished(batch)
    batch.complete(ProduceResult(0, batch.record_count - 1, -1, 0), None)


def test_a_buffer_waits_for_linger_and_a_full_one_goes_at_once() -> None:
    acc, clock = make(linger_s=0.005, batch_records=3)
    _, wake = send(acc, partitions=1)
    assert wake  # a new buffer: the sender must learn its linger deadline
    clock.now = 0.004
    assert seal(acc, clock.now) == []
    clock.now = 0.006
    [batch] = seal(acc, clock.now)
    assert batch.record_count == 1
    for _ in range(2):
        send(acc, partitions=1)
    _, wake = send(acc, partitions=1)
    assert wake  # full: sealed without waiting for linger
    [full] = seal(acc, clock.now)
    assert full.record_count == 3


def test_a_lingered_buffer_waits_for_replies_in_flight_but_not_for_ever() -> None:
    acc, clock = make(linger_s=0.005)
    send(acc)
    clock.now = 0.01
    [first] = seal(acc, clock.now)
    assert acc.ready_batches(clock.now) == [first]  # in flight now
    send(acc)
    clock.now = 0.02
    assert seal(acc, clock.now) == []  # Nagle: more records may join while one is in flight
    clock.now = 0.011 + 0.005 + MAX_NAGLE_WAIT_S
    assert len(seal(acc, clock.now)) == 1
    acc.flushing = 1
    send(acc)
    assert len(seal(acc, clock.now)) == 1  # flush() does not wait


def test_keyed_records_are_split_by_murmur2_and_futures_find_their_rows() -> None:
    acc, clock = make(linger_s=0)
    keys = [b"k%d" % i for i in range(50)]
    futures = [send(acc, key=k, value=b"v%d" % i)[0] for i, k in enumerate(keys)]
    batches = seal(acc, clock.now)
    assert {b.partition for b in batches} == {partition_for_key(k, 4) for k in keys}
    for batch in batches:
        ack(acc, batch)
    for i, (key, future) in enumerate(zip(keys, futures, strict=True)):
        metadata = future.result(timeout=0)
        assert metadata.partition == partition_for_key(key, 4)
        batch = next(b for b in batches if b.partition == metadata.partition)
        assert batch.table.column("value")[metadata.offset].as_py() == b"v%d" % i
    assert acc.idle and acc.pending_bytes == 0


def test_explicit_partitions_win_and_unkeyed_records_stick_then_rotate() -> None:
    acc, clock = make(linger_s=0)
    pinned, _ = send(acc, key=b"x", partition=3)
    loose, _ = send(acc)
    batches = seal(acc, clock.now)
    for batch in batches:
        ack(acc, batch)
    assert pinned.result(0).partition == 3
    first = loose.result(0).partition
    send(acc)
    [batch] = seal(acc, clock.now)
    assert batch.partition == (first + 1) % 4  # KIP-480: the next buffer goes elsewhere


def test_in_flight_limit_per_partition() -> None:
    acc, clock = make(linger_s=0, max_in_flight=2, batch_records=1)
    for _ in range(5):
        send(acc, partitions=1)
    batches = seal(acc, clock.now)
    assert len(batches) == 5
    shipped = acc.ready_batches(clock.now)
    assert shipped == batches[:2]
    assert acc.ready_batches(clock.now) == []
    ack(acc, shipped[0])
    assert acc.ready_batches(clock.now) == [batches[2]]


def test_sequences_follow_records_and_rewind_after_a_batch_fails_for_good() -> None:
    acc, clock = make(linger_s=0, batch_records=1, max_in_flight=5)
    for _ in range(3):
        send(acc, partitions=1)
    a, b, c = seal(acc, clock.now)
    assert acc.ready_batches(clock.now) == [a, b, c]
    assert [acc.sequence(x) for x in (a, b, c)] == [(0, False), (1, True), (2, True)]
    # a is refused (nothing written): b and c, refused as out of order, must be renumbered.
    final = acc.failed(a, errors.InvalidRecord("bad"), clock.now)
    assert isinstance(final, errors.InvalidRecord)
    assert acc.finished(a)
    for x in (b, c):
        assert acc.failed(x, errors.OutOfOrderSequence("gap"), clock.now) is None
    assert acc.ready_batches(clock.now) == []  # retry.backoff.ms first
    clock.now += acc.settings.retry_backoff_s
    [first] = acc.ready_batches(clock.now)  # one at a time, lowest sequence first
    assert first is b and acc.sequence(b) == (0, False)
    ack(acc, b)
    [second] = acc.ready_batches(clock.now)
    assert second is c and acc.sequence(c) == (1, False)


def test_retriable_errors_retry_until_delivery_timeout_then_fail_typed() -> None:
    acc, clock = make(linger_s=0, delivery_timeout_s=1.0)
    send(acc, partitions=1)
    [batch] = seal(acc, clock.now)
    acc.ready_batches(clock.now)
    acc.sent(batch, clock.now)
    assert acc.failed(batch, errors.NotLeader("moved"), clock.now) is None
    clock.now = 2.0
    acc.ready_batches(clock.now)
    final = acc.failed(batch, errors.NotLeader("moved"), clock.now)
    assert isinstance(final, errors.BrokerTimeoutError) and final.partition == 0
    assert isinstance(final.__cause__, errors.NotLeader)


def test_unanswered_requests_time_out_and_late_replies_are_ignored() -> None:
    acc, clock = make(linger_s=0, request_timeout_s=30)
    send(acc, partitions=1)
    [batch] = seal(acc, clock.now)
    acc.ready_batches(clock.now)
    attempt = acc.sent(batch, clock.now)
    assert acc.timed_out(29.0) == []
    assert acc.timed_out(31.0) == [batch]
    assert acc.failed(batch, errors.BrokerTimeoutError("slow"), 31.0) is None
    clock.now = 32.0
    acc.ready_batches(clock.now)
    acc.sent(batch, clock.now)
    assert not acc.is_current(batch, attempt)  # the first attempt's reply decides nothing
    assert acc.finished(batch) and not acc.finished(batch)


def test_send_batch_tables_keep_their_place_behind_records_sent_before() -> None:
    acc, clock = make(linger_s=10)
    send(acc, partitions=1)
    table = pa.table({"value": [b"a", b"b"]})
    [batch] = acc.append_table("t", [(0, table)])
    shipped = seal(acc, clock.now)
    assert len(shipped) == 2 and shipped[1] is batch
    assert acc.ready_batches(clock.now) == shipped[:1]
    ack(acc, shipped[0])
    assert acc.ready_batches(clock.now) == [batch]


def test_a_buffer_that_cannot_be_split_fails_alone() -> None:
    acc, clock = make(linger_s=0)
    future, _ = send(acc)
    [records] = acc.take_sealed(clock.now)
    acc.fail_records(records, errors.InvalidRecord("broken"))
    records.completion.fire()
    with pytest.raises(errors.InvalidRecord):
        future.result(timeout=0)
    assert acc.idle and acc.pending_bytes == 0


def test_small_batches_waiting_for_one_partition_share_one_request_at_their_own_offsets() -> None:
    from ray_broker.producer.batch import BatchFuture

    acc, clock = make(linger_s=0, batch_records=5)
    futures = [
        BatchFuture(acc.append_table("t", [(0, pa.table({"value": [b"a", b"b"]}))]))
        for _ in range(3)
    ]
    seal(acc, clock.now)
    [request] = acc.ready_batches(clock.now)  # 2 + 2 fit in 5; the third would not
    assert request.record_count == 4
    assert acc.ready_batches(clock.now) == []  # partial and alone: waits for the reply (Nagle)
    request_result = ProduceResult(10, 13, -1, 0)
    assert acc.finished(request)
    request.complete(request_result, None)
    assert [f.result(0)[0].base_offset for f in futures[:2]] == [10, 12]
    assert futures[1].result(0)[0].last_offset == 13
    assert not futures[2].done()
    [rest] = acc.ready_batches(clock.now)
    assert rest.record_count == 2
    ack(acc, rest)
    assert futures[2].done() and acc.idle and acc.pending_bytes == 0


def test_a_partial_batch_waits_for_the_reply_in_flight_unless_full_or_not_alone() -> None:
    acc, clock = make(linger_s=0, batch_records=3)
    send(acc, partitions=1)
    [first] = seal(acc, clock.now)
    assert acc.ready_batches(clock.now) == [first]
    send(acc, partitions=1)
    [waiting] = seal(acc, clock.now)
    assert acc.ready_batches(clock.now) == []  # one record, alone: it can still grow
    for _ in range(2):
        send(acc, partitions=1)
        seal(acc, clock.now)
    assert waiting.record_count == 3  # what arrived meanwhile rides in the waiting batch
    assert acc.ready_batches(clock.now) == [waiting]  # full: goes while the first is in flight
    send(acc, partitions=1)
    [lone] = seal(acc, clock.now)
    assert acc.ready_batches(clock.now) == []
    clock.now += MAX_NAGLE_WAIT_S  # waited long enough: goes with two in flight
    assert acc.ready_batches(clock.now) == [lone]
    send(acc, partitions=1)
    [last] = seal(acc, clock.now)
    for batch in (first, waiting, lone):
        ack(acc, batch)
    assert acc.ready_batches(clock.now) == [last]  # nothing in flight: no waiting


def test_linger_zero_never_waits_and_requests_queued_behind_in_flight_ones_merge() -> None:
    acc, clock = make(linger_s=0, max_in_flight=1)
    send(acc, partitions=1)
    [first] = seal(acc, clock.now)
    assert acc.ready_batches(clock.now) == [first]
    for _ in range(3):  # while the first is in flight: each sealed at once, queued, merged
        send(acc, partitions=1)
        assert len(seal(acc, clock.now)) == 1
    assert acc.ready_batches(clock.now) == []  # max.in.flight reached
    ack(acc, first)
    [merged] = acc.ready_batches(clock.now)
    assert merged.record_count == 3
