"""Idempotent-producer bookkeeping (no Ray): duplicates answered, gaps refused, fencing."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ray_broker.actors.partition.producer_state import ProducerStates
from ray_broker.errors import OutOfOrderSequence, ProducerFenced


def test_in_order_batches_are_accepted_and_retries_return_original_offsets():
    states = ProducerStates()
    assert states.check(7, 0, 0, 10) is None
    states.record(7, 0, 0, 10, base_offset=100)
    assert states.check(7, 0, 10, 5) is None
    states.record(7, 0, 10, 5, base_offset=200)
    assert states.check(7, 0, 0, 10) == 100
    assert states.check(7, 0, 10, 5) == 200


def test_a_gap_in_sequences_is_refused_as_retriable():
    states = ProducerStates()
    states.record(7, 0, 0, 10, base_offset=0)
    with pytest.raises(OutOfOrderSequence, match="expects 10") as info:
        states.check(7, 0, 20, 5)
    assert info.value.retriable


def test_an_older_epoch_is_fenced():
    states = ProducerStates()
    states.record(7, 3, 0, 1, base_offset=0)
    with pytest.raises(ProducerFenced):
        states.check(7, 2, 1, 1)
    assert states.check(7, 4, 0, 1) is None


@given(st.lists(st.integers(1, 50), min_size=1, max_size=30), st.data())
def test_rebuild_from_the_log_recognises_every_appended_batch(sizes, data):
    """Whatever batches a producer wrote, a state rebuilt from the log's columns dedups any of
    the recent ones exactly as the live state would."""
    live = ProducerStates()
    pids, seqs, offsets = [], [], []
    sequence, offset = 0, 0
    for size in sizes:
        live.record(9, 0, sequence, size, offset)
        pids += [9] * size
        seqs += list(range(sequence, sequence + size))
        offsets += list(range(offset, offset + size))
        sequence += size
        offset += size
    table = pa.table(
        {
            "offset": pa.array(offsets, pa.int64()),
            "producer_id": pa.array(pids, pa.int64()),
            "producer_epoch": pa.array([0] * len(pids), pa.int16()),
            "sequence": pa.array(seqs, pa.int32()),
        }
    )
    rebuilt = ProducerStates()
    rebuilt.rebuild(table)
    index = data.draw(st.integers(0, len(sizes) - 1))
    first = sum(sizes[:index])
    assert rebuilt.check(9, 0, first, sizes[index]) == live.check(9, 0, first, sizes[index])
    assert rebuilt.check(9, 0, sequence, 1) is None


def test_idle_producers_expire_and_active_ones_stay():
    now = [1_000_000]
    states = ProducerStates(clock=lambda: now[0])
    states.record(1, 0, 0, 5, base_offset=0)
    now[0] += 10_000
    states.record(2, 0, 0, 5, base_offset=5)
    now[0] += 10_000
    assert states.expire(max_idle_ms=15_000) == 1  # producer 1 idle 20 s, producer 2 for 10 s
    assert len(states) == 1
    assert states.check(2, 0, 0, 5) == 5  # still deduplicated
    assert states.check(1, 0, 3, 1) is None  # forgotten: a fresh start is accepted


def test_sequences_wrap_after_two_to_the_31():
    """Kafka wraps sequences at Integer.MAX_VALUE; a producer may write more than 2**31
    records to one partition."""
    top = 2**31 - 1
    states = ProducerStates()
    states.record(7, 0, top - 2, 3, base_offset=1000)  # sequences top-2 .. top
    assert states.check(7, 0, 0, 5) is None  # continues at 0
    states.record(7, 0, 0, 5, base_offset=1003)
    assert states.check(7, 0, top - 2, 3) == 1000  # a retried batch before the wrap
    assert states.check(7, 0, 0, 5) == 1003
    with pytest.raises(OutOfOrderSequence):
        states.check(7, 0, 9, 1)
    assert not states.is_ahead(7, 0, 5) and states.is_ahead(7, 0, 7)


def test_rebuild_follows_a_wrapped_sequence_column():
    from ray_broker.actors.partition.core import _with_producer_columns

    table = _with_producer_columns(pa.table({"value": [b"v"] * 4}), 9, 0, 2**31 - 2)
    assert table.column("sequence").to_pylist() == [2**31 - 2, 2**31 - 1, 0, 1]
    table = table.append_column("offset", pa.array([10, 11, 12, 13], pa.int64()))
    rebuilt = ProducerStates()
    rebuilt.rebuild(table)
    assert rebuilt.check(9, 0, 2, 1) is None
    assert rebuilt.check(9, 0, 0, 2) == 12
