"""The partition's transaction index: last stable offset, what read_committed hides, and
recovery from its event file (no Ray)."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_broker.actors.partition.core import Partition
from ray_broker.actors.partition.transactions import PartitionTransactions
from ray_broker.config import TopicConfig

VALUES = pa.table({"value": pa.array([b"x", b"y"], pa.binary())})


def values(partition: Partition, read_committed: bool) -> list[int]:
    partition.advance_high_watermark(partition.log_end_offset)
    table = partition.read(0, 10_000, 10**8, read_committed)
    return table.column("offset").to_pylist()


def test_read_committed_stops_at_an_open_transaction_and_hides_aborted_ones(tmp_path) -> None:
    p = Partition("t", 0, tmp_path, TopicConfig())
    p.produce(VALUES, 7, 0, 0, transactional=True)  # 0, 1: aborted later
    p.produce(VALUES)  # 2, 3: plain
    p.produce(VALUES, 8, 0, 0, transactional=True)  # 4, 5: open
    assert values(p, read_committed=True) == []  # the LSO is 0: txn 7 is still open
    p.write_marker(7, 1, commit=False)  # 6
    assert p.last_stable_offset == 4
    assert values(p, read_committed=True) == [2, 3]
    assert values(p, read_committed=False) == [0, 1, 2, 3, 4, 5]  # markers never shown
    p.write_marker(8, 1, commit=True)  # 7
    assert values(p, read_committed=True) == [2, 3, 4, 5]
    table, next_offset = p.read_with_next(6, 100, 10**8, read_committed=True)
    assert table.num_rows == 0 and next_offset == 8  # only a marker: the reader moves past it


def test_a_marker_fences_late_writes_of_its_transaction(tmp_path) -> None:
    import pytest

    from ray_broker import errors

    p = Partition("t", 0, tmp_path, TopicConfig())
    p.produce(VALUES, 7, 0, 0, transactional=True)
    p.write_marker(7, 1, commit=False)
    with pytest.raises(errors.ProducerFenced):
        p.produce(VALUES, 7, 0, 2, transactional=True)  # the aborted epoch's late batch
    p.produce(VALUES, 7, 1, 0, transactional=True)  # the next transaction starts at seq 0
    assert p.txns.is_open(7, 1)


def test_the_index_survives_a_restart_and_a_truncation(tmp_path) -> None:
    p = Partition("t", 0, tmp_path, TopicConfig())
    p.produce(VALUES, 7, 0, 0, transactional=True)  # 0, 1
    p.write_marker(7, 1, commit=False)  # 2
    p.produce(VALUES, 7, 1, 0, transactional=True)  # 3, 4
    p.log.close()
    again = Partition("t", 0, tmp_path, TopicConfig())
    assert [a.first_offset for a in again.txns.aborted] == [0]  # once, not twice
    assert again.txns.is_open(7, 1) and again.last_stable_offset == 0  # hw relearned
    again.advance_high_watermark(again.log_end_offset)
    assert again.last_stable_offset == 3
    again.truncate_to(2)  # the abort marker is cut: the transaction is open again
    assert again.txns.aborted == [] and again.txns.is_open(7, 0)


@st.composite
def histories(draw):
    """Interleaved transactional writes and markers of three producers, plus plain writes."""
    steps = []
    for _ in range(draw(st.integers(1, 30))):
        steps.append(
            draw(
                st.tuples(st.sampled_from(["write", "commit", "abort", "plain"]), st.integers(0, 2))
            )
        )
    return steps


@settings(max_examples=60, deadline=None)
@given(history=histories())
def test_read_committed_matches_a_model(tmp_path_factory, history) -> None:
    """What read_committed returns equals a simple model: records of committed transactions
    and plain records, below the first open transaction."""
    directory = tmp_path_factory.mktemp("txn")
    p = Partition("t", 0, directory, TopicConfig())
    epochs = {0: 0, 1: 0, 2: 0}
    sequences = {0: 0, 1: 0, 2: 0}
    open_first: dict[int, int] = {}
    pending: dict[int, list[int]] = {0: [], 1: [], 2: []}
    visible: list[int] = []
    for action, producer in history:
        end = p.log_end_offset
        if action == "plain":
            p.produce(VALUES)
            visible += [end, end + 1]
        elif action == "write":
            p.produce(VALUES, producer, epochs[producer], sequences[producer], True)
            sequences[producer] += 2
            open_first.setdefault(producer, end)
            pending[producer] += [end, end + 1]
        else:
            p.write_marker(producer, epochs[producer] + 1, action == "commit")
            epochs[producer] += 1
            sequences[producer] = 0
            if action == "commit":
                visible += pending[producer]
            pending[producer] = []
            open_first.pop(producer, None)
    lso = min(open_first.values(), default=p.log_end_offset)
    expected = sorted(o for o in visible if o < lso)
    assert values(p, read_committed=True) == expected
    restarted = Partition("t", 0, directory, TopicConfig())
    assert values(restarted, read_committed=True) == expected


def test_observe_follows_replicated_batches_like_the_leader() -> None:
    leader_index = PartitionTransactions()
    table = pa.table(
        {
            "offset": pa.array([0, 1, 2, 3], pa.int64()),
            "producer_id": pa.array([5, 5, 5, 6], pa.int64()),
            "producer_epoch": pa.array([0, 0, 1, 0], pa.int16()),
            "attributes": pa.array([0x10, 0x10, 0x30, 0x10], pa.int8()),
            "key": pa.array([None, None, b"ABORT", None], pa.binary()),
        }
    )
    leader_index.observe(table)
    assert [(a.producer_id, a.first_offset, a.last_offset) for a in leader_index.aborted] == [
        (5, 0, 2)
    ]
    assert leader_index.ongoing == {6: (0, 3)}
    assert leader_index.last_stable_offset(10) == 3
