"""A consumer's positions and buffered slices without Ray: what is handed out moves the
position, a seek drops what was fetched, stale answers are ignored, hung fetches are found."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ray_broker import errors
from ray_broker.consumer.subscription_state import SubscriptionState
from ray_broker.structs import TopicPartition

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


def slice_of(first: int, count: int) -> pa.Table:
    return pa.table({"offset": list(range(first, first + count))})


def fetched(state: SubscriptionState, tp: TopicPartition, first: int, count: int) -> None:
    ref = object()
    state.fetch_sent(tp, ref, now=0.0)
    assert state.fetched(tp, ref, slice_of(first, count), high=first + count)


def test_drain_hands_out_partitions_in_turn_and_positions_follow() -> None:
    state = SubscriptionState()
    state.assign([A, B])
    state.move(A, 0)
    state.move(B, 100)
    fetched(state, A, 0, 5)
    fetched(state, B, 100, 5)
    first = state.drain(3)
    second = state.drain(3)
    assert first[0][0] != second[0][0]  # no partition starves the other
    taken = {tp: t.num_rows for tp, t in first + second}
    assert sum(taken.values()) == 6
    assert state.positions([A, B]) == {A: taken[A], B: 100 + taken[B]}
    assert state.to_fetch(now=0.0) == []  # both still hold buffered records


def test_a_seek_drops_buffer_and_fetch_and_a_stale_answer_is_ignored() -> None:
    state = SubscriptionState()
    state.assign([A])
    state.move(A, 0)
    ref = object()
    state.fetch_sent(A, ref, now=0.0)
    assert state.move(A, 7) is ref  # handed back so its answer can be collected
    assert not state.fetched(A, ref, slice_of(0, 3), high=3)
    assert state.drain(10) == [] and state.positions([A]) == {A: 7}
    assert state.to_fetch(now=0.0) == [A]


def test_hung_fetches_are_found_and_backoff_is_respected() -> None:
    state = SubscriptionState()
    state.assign([A, B])
    ref = object()
    state.fetch_sent(A, ref, now=0.0)
    assert state.hung(now=5.0, patience_s=10.0) == []
    assert state.hung(now=11.0, patience_s=10.0) == [(A, ref)]
    state.fetch_failed(B, backoff_until=2.0)
    assert state.to_fetch(now=1.0) == [A]
    assert set(state.to_fetch(now=2.0)) == {A, B}


def test_reassignment_keeps_positions_and_returns_dropped_fetches() -> None:
    state = SubscriptionState()
    state.assign([A, B])
    state.move(A, 4)
    ref = object()
    state.fetch_sent(B, ref, now=0.0)
    assert state.assign([A]) == [ref]
    assert state.positions([A, B]) == {A: 4}
    with pytest.raises(errors.UnknownTopicOrPartition) as caught:
        state.state(B)
    assert caught.value.partition == 1
