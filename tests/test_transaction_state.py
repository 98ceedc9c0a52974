"""The transaction coordinator's state machine, driven with a fake clock (no Ray)."""

from __future__ import annotations

import itertools
import random

import pytest

from ray_broker import errors
from ray_broker.actors.coordination.transaction_state import MAX_EPOCH, TransactionStates, TxnState


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def states(clock: Clock) -> TransactionStates:
    ids = itertools.count(100)
    return TransactionStates(lambda: next(ids), clock)


def test_a_transaction_commits_and_moves_the_epoch_on(states: TransactionStates) -> None:
    meta, abort = states.init_producer_id("app", 60_000)
    assert abort is None and (meta.producer_id, meta.epoch) == (100, 0)
    states.add("app", 100, 0, [("t", 0), ("t", 1)])
    assert states.verify(100, 0, "t", 1) and not states.verify(100, 0, "t", 2)
    states.add("app", 100, 0, [], group="g")
    meta, plan = states.end("app", 100, 0, commit=True)
    assert meta.state == TxnState.PREPARE_COMMIT
    assert plan is not None and plan.commit and plan.marker_epoch == 1
    assert plan.partitions == (("t", 0), ("t", 1)) and plan.groups == ("g",)
    assert not states.verify(100, 0, "t", 1)  # decided: no more writes
    meta = states.complete(plan)
    assert (meta.state, meta.epoch, meta.partitions) == (TxnState.COMPLETE_COMMIT, 1, set())
    with pytest.raises(errors.ProducerFenced):  # the old epoch is over
        states.add("app", 100, 0, [("t", 0)])


def test_a_new_incarnation_fences_the_old_and_aborts_its_transaction(
    states: TransactionStates,
) -> None:
    states.init_producer_id("app", 60_000)
    states.add("app", 100, 0, [("t", 0)])
    meta, abort = states.init_producer_id("app", 60_000)
    assert abort is not None and not abort.commit and abort.partitions == (("t", 0),)
    assert meta.state == TxnState.PREPARE_ABORT
    with pytest.raises(errors.ConcurrentTransactions):
        states.add("app", 100, 0, [("t", 1)])
    states.complete(abort)
    meta, again = states.init_producer_id("app", 60_000)
    assert again is None and meta.epoch == 2 and meta.state == TxnState.EMPTY
    with pytest.raises(errors.ProducerFenced):
        states.end("app", 100, 0, commit=True)
    with pytest.raises(errors.ProducerFenced):
        states.add("app", 100, 1, [("t", 0)])


def test_a_timed_out_transaction_is_aborted_and_says_so(
    states: TransactionStates, clock: Clock
) -> None:
    states.init_producer_id("app", 5_000)
    states.add("app", 100, 0, [("t", 0)])
    clock.now += 4_000
    assert states.expired() == []
    clock.now += 2_000
    (plan,) = states.expired()
    states.complete(plan, timed_out=True)
    with pytest.raises(errors.TransactionTimedOut):
        states.end("app", 100, 0, commit=True)
    with pytest.raises(errors.TransactionTimedOut):
        states.add("app", 100, 0, [("t", 1)])
    meta, nothing = states.end("app", 100, 0, commit=False)  # abort after the timeout: fine
    assert nothing is None and meta.epoch == 1
    states.add("app", 100, 1, [("t", 0)])  # and the producer goes on at its next epoch


def test_wrong_state_calls_are_typed_errors(states: TransactionStates) -> None:
    with pytest.raises(errors.TransactionalIdNotFound):
        states.add("ghost", 1, 0, [("t", 0)])
    with pytest.raises(errors.InvalidTxnState):
        states.init_producer_id("app", 0)
    with pytest.raises(errors.InvalidTxnState):
        states.init_producer_id("app", "soon")  # type: ignore[arg-type]
    meta, _ = states.init_producer_id("app", 60_000)
    # Ending a transaction that wrote nothing needs no markers; the epoch still moves on.
    meta, plan = states.end("app", meta.producer_id, 0, commit=True)
    assert plan is None and meta.epoch == 1


def test_an_exhausted_epoch_gets_a_new_producer_id(states: TransactionStates) -> None:
    meta, _ = states.init_producer_id("app", 60_000)
    meta.epoch = MAX_EPOCH - 1
    states.add("app", meta.producer_id, meta.epoch, [("t", 0)])
    _, plan = states.end("app", meta.producer_id, meta.epoch, commit=True)
    meta = states.complete(plan)
    assert meta.epoch == MAX_EPOCH
    _, plan = states.end("app", meta.producer_id, meta.epoch, commit=False)
    assert plan is None
    assert meta.producer_id == 101 and meta.epoch == 0


def test_state_survives_a_restart_through_its_documents(
    states: TransactionStates, clock: Clock
) -> None:
    states.init_producer_id("app", 60_000)
    states.add("app", 100, 0, [("t", 3)], group="g")
    states.end("app", 100, 0, commit=True)
    restarted = TransactionStates(lambda: 999, clock)
    restarted.load("app", states.txns["app"].to_document())
    (plan,) = restarted.preparing()
    assert plan.commit and plan.partitions == (("t", 3),) and plan.groups == ("g",)
    assert restarted.complete(plan).epoch == 1


@pytest.mark.parametrize("seed", range(200))
def test_random_call_sequences_keep_the_invariants(seed: int, clock: Clock) -> None:
    """Whatever the order of calls from two incarnations, an epoch has at most one open
    transaction, only the newest incarnation can act, and epochs never go back."""
    rng = random.Random(seed)
    ids = itertools.count(1)
    states = TransactionStates(lambda: next(ids), clock)
    incarnations: list[tuple[int, int]] = []
    last_epoch = -1
    pending = []
    for _ in range(60):
        action = rng.choice(["init", "add", "commit", "abort", "complete", "tick"])
        try:
            if action == "init":
                meta, abort = states.init_producer_id("app", 3_000)
                if abort is not None:
                    states.complete(abort)
                    meta, _ = states.init_producer_id("app", 3_000)
                incarnations.append((meta.producer_id, meta.epoch))
            elif action == "add" and incarnations:
                pid, epoch = rng.choice(incarnations)
                states.add("app", pid, epoch, [("t", rng.randrange(3))])
            elif action in ("commit", "abort") and incarnations:
                pid, epoch = rng.choice(incarnations)
                meta, plan = states.end("app", pid, epoch, commit=action == "commit")
                if plan is not None:
                    pending.append(plan)
                incarnations.append((meta.producer_id, meta.epoch))
            elif action == "complete" and pending:
                states.complete(pending.pop(0))
            elif action == "tick":
                clock.now += rng.randrange(0, 4_000)
                for plan in states.expired():
                    states.complete(plan, timed_out=True)
        except (errors.ProducerFenced, errors.TransactionTimedOut, errors.ConcurrentTransactions):
            pass
        except (errors.InvalidTxnState, KeyError):
            pass
        meta = states.txns.get("app")
        if meta is None:
            continue
        assert meta.epoch >= last_epoch or meta.epoch == 0
        last_epoch = meta.epoch
        if meta.state == TxnState.ONGOING:
            for pid, epoch in incarnations:
                if (pid, epoch) != (meta.producer_id, meta.epoch):
                    with pytest.raises((errors.ProducerFenced, errors.TransactionTimedOut)):
                        states.add("app", pid, epoch, [("t", 0)])


def test_a_retried_end_gets_the_next_epoch_not_a_fence(states: TransactionStates) -> None:
    """The answer to end() was lost with a crashed coordinator; the producer asks again."""
    states.init_producer_id("app", 60_000)
    states.add("app", 100, 0, [("t", 0)])
    _, plan = states.end("app", 100, 0, commit=True)
    states.complete(plan)
    meta, again = states.end("app", 100, 0, commit=True)
    assert again is None and meta.epoch == 1
    with pytest.raises(errors.InvalidTxnState, match="already ended with commit"):
        states.end("app", 100, 0, commit=False)
    states.init_producer_id("app", 60_000)  # a newer incarnation: now the old epoch is fenced
    with pytest.raises(errors.ProducerFenced):
        states.end("app", 100, 0, commit=True)


@pytest.mark.parametrize("timeout_ms", [0, -1, 2**31 - 1, "60000"])
def test_a_timeout_out_of_range_is_kafkas_invalid_transaction_timeout(
    states: TransactionStates, timeout_ms
) -> None:
    from ray_broker.errors import InvalidTransactionTimeout
    from ray_broker.kafka.error_codes import ErrorCode, error_code

    with pytest.raises(InvalidTransactionTimeout) as refused:
        states.init_producer_id("app-1", timeout_ms)
    assert error_code(refused.value) == ErrorCode.INVALID_TRANSACTION_TIMEOUT


@pytest.mark.parametrize(
    "transactional_id",
    ["", "x" * 100_000, "a\0b", "line\n", "\u202eevil", 42, None],
    ids=["empty", "100k", "nul", "newline", "rlo", "int", "none"],
)
def test_transactional_ids_follow_the_group_id_rules(transactional_id) -> None:
    from ray_broker.config import validate_transactional_id
    from ray_broker.errors import InvalidTransactionalId

    with pytest.raises(InvalidTransactionalId):
        validate_transactional_id(transactional_id)
    assert validate_transactional_id("../../etc/passwd") == "../../etc/passwd"  # data, not a path


def test_kafka_clients_may_not_end_a_transaction_nothing_was_added_to(
    states: TransactionStates,
) -> None:
    meta, _ = states.init_producer_id("app-1", 60_000)
    producer_id, epoch = meta.producer_id, meta.epoch
    for _attempt in range(2):  # the old coordinator answered success, twice
        with pytest.raises(errors.InvalidTxnState, match="nothing was added"):
            states.end("app-1", producer_id, epoch, False, allow_empty=False)
    # The Python producer ends an empty transaction (its epoch moves on).
    ended, plan = states.end("app-1", producer_id, epoch, False)
    assert plan is None and ended.epoch == epoch + 1
