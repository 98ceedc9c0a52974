"""Push consumption's decisions without Ray: credits, and what a consumer group may commit when
batches finish out of order and fail — checked by a seeded simulation against a model."""

from __future__ import annotations

import random

import pytest

from ray_broker.errors import InvalidConfig
from ray_broker.push_window import CreditWindow, GroupProgress, check_credits
from ray_broker.structs import TopicPartition

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


@pytest.mark.parametrize("bad", [0, -1, 1_001, "3", 2.0, True, None])
def test_credits_outside_the_range_are_refused(bad) -> None:
    with pytest.raises(InvalidConfig):
        check_credits(bad)


def test_the_window_never_holds_more_than_its_credits() -> None:
    window = CreditWindow(2)
    first = window.start({A: (0, 9)}, 10)
    window.start({A: (10, 19)}, 10)
    assert not window.has_credit
    with pytest.raises(AssertionError):
        window.start({A: (20, 29)}, 10)
    window.finish(first.id)
    assert window.has_credit and window.max_held == 2


def test_commits_move_only_over_a_finished_prefix() -> None:
    window, progress = CreditWindow(3), GroupProgress()
    batches = [window.start({A: (i * 10, i * 10 + 9)}, 10) for i in range(3)]
    for batch in batches:
        progress.delivered(batch)
    assert progress.succeeded(batches[2]) == {}  # out of order: nothing to commit yet
    assert progress.succeeded(batches[0]) == {A: 10}
    assert progress.succeeded(batches[1]) == {A: 30}


def test_a_failure_rewinds_and_later_batches_of_that_partition_go_stale() -> None:
    window, progress = CreditWindow(3), GroupProgress()
    first = window.start({A: (0, 9), B: (0, 4)}, 15)
    second = window.start({A: (10, 19), B: (5, 9)}, 10)
    progress.delivered(first)
    progress.delivered(second)
    assert progress.failed(first) == {A: 0, B: 0}
    # The second batch is stale on both partitions: its success commits nothing.
    assert progress.succeeded(second) == {}
    again = window.start({A: (0, 19), B: (0, 9)}, 30)
    progress.delivered(again)
    assert progress.succeeded(again) == {A: 20, B: 10}


@pytest.mark.parametrize("seed", range(40))
def test_simulated_out_of_order_answers_never_commit_an_unhandled_record(seed: int) -> None:
    """Batches over two partitions, answered in random order, some failing: every offset
    below a committed offset was handled by a delivery that counted, and once failures stop
    everything is committed."""
    rng = random.Random(seed)
    end = {A: rng.randint(20, 200), B: rng.randint(20, 200)}
    position = {A: 0, B: 0}
    window, progress = CreditWindow(rng.randint(1, 6)), GroupProgress()
    handled: dict[TopicPartition, set[int]] = {A: set(), B: set()}
    committed = {A: 0, B: 0}
    for step in range(3_000):
        failing = step < 2_000 and rng.random() < 0.2
        if window.has_credit and rng.random() < 0.6:
            ranges = {}
            for tp in (A, B):
                if position[tp] < end[tp] and rng.random() < 0.7:
                    size = rng.randint(1, 15)
                    last = min(position[tp] + size, end[tp]) - 1
                    ranges[tp] = (position[tp], last)
                    position[tp] = last + 1
            if ranges:
                progress.delivered(window.start(ranges, 1))
        elif window.outstanding:
            delivery = window.finish(rng.choice(list(window.outstanding)))
            if failing:
                for tp, offset in progress.failed(delivery).items():
                    position[tp] = offset
            else:
                stale = {tp for tp in delivery.ranges if (delivery.id, tp) in progress._stale}
                for tp, (first, last) in delivery.ranges.items():
                    if tp not in stale:
                        handled[tp].update(range(first, last + 1))
                for tp, offset in progress.succeeded(delivery).items():
                    assert offset >= committed[tp], "a commit moved back"
                    committed[tp] = offset
        for tp in (A, B):
            assert set(range(committed[tp])) <= handled[tp], (seed, tp, committed[tp])
    while window.outstanding or position != end:  # failures have stopped: finish the rest
        if window.has_credit and position != end:
            ranges = {tp: (position[tp], end[tp] - 1) for tp in (A, B) if position[tp] < end[tp]}
            position = dict(end)
            progress.delivered(window.start(ranges, 1))
        delivery = window.finish(next(iter(window.outstanding)))
        for tp, offset in progress.succeeded(delivery).items():
            committed[tp] = offset
    assert committed == end
