"""The transaction coordinator's decisions, as a plain class a test drives with a fake clock.

One ``TransactionMetadata`` per transactional id (Kafka's KIP-98 state machine)::

    Empty/Complete* --add_partitions--> Ongoing --end(commit)--> PrepareCommit --> CompleteCommit
                                                --end(abort) --> PrepareAbort  --> CompleteAbort

A Prepare* state is written durably before any marker; markers are then written to every
partition (and the group offsets) of the transaction, and only then is the Complete* state
written. A coordinator that restarts in a Prepare* state writes the markers again (writing one
twice is harmless: the partition closes a transaction once).

Epochs (KIP-890's second part): every finished transaction bumps the producer's epoch, and
markers carry the new epoch, so a late write of a finished transaction is fenced by the
partition instead of landing in the next one. ``init_producer_id`` bumps it too, fencing an
older incarnation of the same transactional id (``ProducerFenced``) and aborting its open
transaction first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ray_broker.errors import (
    ConcurrentTransactions,
    InvalidTransactionTimeout,
    InvalidTxnState,
    ProducerFenced,
    TransactionalIdNotFound,
    TransactionTimedOut,
)

MAX_EPOCH = 2**15 - 1  # producer_epoch is an int16, as in Kafka
MAX_TIMEOUT_MS = 15 * 60 * 1000  # Kafka's transaction.max.timeout.ms


class TxnState(str, Enum):
    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"

    @property
    def preparing(self) -> bool:
        return self in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)

    @property
    def idle(self) -> bool:
        return self in (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)


@dataclass
class TransactionMetadata:
    transactional_id: str
    producer_id: int
    epoch: int
    timeout_ms: int
    state: TxnState = TxnState.EMPTY
    partitions: set[tuple[str, int]] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    started_ms: int = 0
    timed_out_epoch: int = -1  # the epoch whose transaction the coordinator aborted on timeout
    ended_epoch: int = -1  # the epoch of the last finished transaction (a retried end's answer)

    def to_document(self) -> dict[str, Any]:
        return {
            "producer_id": self.producer_id,
            "epoch": self.epoch,
            "timeout_ms": self.timeout_ms,
            "state": self.state.value,
            "partitions": sorted([list(tp) for tp in self.partitions]),
            "groups": sorted(self.groups),
            "started_ms": self.started_ms,
            "timed_out_epoch": self.timed_out_epoch,
            "ended_epoch": self.ended_epoch,
        }

    @classmethod
    def from_document(cls, transactional_id: str, doc: dict[str, Any]) -> TransactionMetadata:
        return cls(
            transactional_id,
            doc["producer_id"],
            doc["epoch"],
            doc["timeout_ms"],
            TxnState(doc["state"]),
            {(t, p) for t, p in doc["partitions"]},
            set(doc["groups"]),
            doc["started_ms"],
            doc.get("timed_out_epoch", -1),
            doc.get("ended_epoch", -1),
        )


@dataclass(frozen=True)
class MarkerPlan:
    """What finishing a transaction writes: a marker per partition, the group offsets."""

    transactional_id: str
    producer_id: int
    marker_epoch: int  # the epoch after this transaction; markers carry it
    commit: bool
    partitions: tuple[tuple[str, int], ...]
    groups: tuple[str, ...]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TransactionStates:
    """Every transactional id's state; each mutating method returns the documents to persist
    (transactional id → document) before its answer may be given."""

    def __init__(
        self,
        allocate_producer_id: Callable[[], int],
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.txns: dict[str, TransactionMetadata] = {}
        self._by_producer: dict[int, TransactionMetadata] = {}
        self._allocate = allocate_producer_id
        self._clock = clock

    def load(self, transactional_id: str, document: dict[str, Any]) -> None:
        meta = TransactionMetadata.from_document(transactional_id, document)
        self.txns[transactional_id] = meta
        self._by_producer[meta.producer_id] = meta

    def preparing(self) -> list[MarkerPlan]:
        """Transactions a restarted coordinator must finish writing markers for."""
        return [plan for tid in self.txns if (plan := self.pending_plan(tid)) is not None]

    def pending_plan(self, transactional_id: str) -> MarkerPlan | None:
        """The markers a decided (Prepare*) transaction still has to write, else None."""
        meta = self.txns.get(transactional_id)
        if meta is None or not meta.state.preparing:
            return None
        return self._plan(meta, meta.state == TxnState.PREPARE_COMMIT)

    # --- producers ------------------------------------------------------------------------------

    def init_producer_id(
        self, transactional_id: str, timeout_ms: int
    ) -> tuple[TransactionMetadata, MarkerPlan | None]:
        """Register or re-register a transactional id. Returns its metadata and, if the
        previous incarnation left a transaction open, the abort to finish first (then call
        ``complete`` and ``init_producer_id`` again).

        Raises:
            InvalidTxnState: bad timeout.
            ConcurrentTransactions: the previous transaction is still being completed.
        """
        if not isinstance(timeout_ms, int) or not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
            raise InvalidTransactionTimeout(
                f"transaction.timeout.ms must be an int in [1, {MAX_TIMEOUT_MS}], got "
                f"{timeout_ms!r}"
            )
        meta = self.txns.get(transactional_id)
        if meta is None:
            meta = TransactionMetadata(transactional_id, self._allocate(), 0, timeout_ms)
            self.txns[transactional_id] = meta
            self._by_producer[meta.producer_id] = meta
            return meta, None
        if meta.state.preparing:
            raise ConcurrentTransactions(
                f"transaction {transactional_id!r} is completing ({meta.state.value}); retry"
            )
        if meta.state == TxnState.ONGOING:
            return meta, self._prepare(meta, commit=False)
        self._bump(meta)
        meta.timeout_ms = timeout_ms
        meta.state = TxnState.EMPTY
        return meta, None

    def _bump(self, meta: TransactionMetadata) -> None:
        if meta.epoch >= MAX_EPOCH:  # exhausted: a fresh producer id, as Kafka does
            self._by_producer.pop(meta.producer_id, None)
            meta.producer_id, meta.epoch = self._allocate(), 0
            self._by_producer[meta.producer_id] = meta
        else:
            meta.epoch += 1

    def _current(self, transactional_id: str, producer_id: int, epoch: int) -> TransactionMetadata:
        """The metadata of a call's producer, which must be the current incarnation.

        Raises:
            TransactionalIdNotFound, ProducerFenced, TransactionTimedOut.
        """
        meta = self.txns.get(transactional_id)
        if meta is None:
            raise TransactionalIdNotFound(
                f"transactional id {transactional_id!r} is unknown; call init_transactions()"
            )
        if producer_id == meta.producer_id and epoch == meta.timed_out_epoch:
            raise TransactionTimedOut(
                f"the transaction of {transactional_id!r} ran past transaction.timeout.ms="
                f"{meta.timeout_ms} and was aborted; call abort_transaction(), then begin again"
            )
        if producer_id != meta.producer_id or epoch != meta.epoch:
            raise ProducerFenced(
                f"producer {producer_id} epoch {epoch} of {transactional_id!r} was fenced by a "
                f"newer incarnation (producer {meta.producer_id} epoch {meta.epoch})"
            )
        return meta

    def add(
        self,
        transactional_id: str,
        producer_id: int,
        epoch: int,
        partitions: list[tuple[str, int]] = (),  # type: ignore[assignment]
        group: str | None = None,
    ) -> TransactionMetadata:
        """Add partitions (before their first write) or a group's offsets to the transaction,
        starting it if idle.

        Raises:
            ProducerFenced, TransactionTimedOut, TransactionalIdNotFound,
            ConcurrentTransactions: the previous transaction is still completing (retriable).
        """
        meta = self._current(transactional_id, producer_id, epoch)
        if meta.state.preparing:
            raise ConcurrentTransactions(
                f"transaction {transactional_id!r} is completing ({meta.state.value}); retry"
            )
        if meta.state.idle:
            meta.state = TxnState.ONGOING
            meta.started_ms = self._clock()
            meta.partitions, meta.groups = set(), set()
        meta.partitions.update((str(t), int(p)) for t, p in partitions)
        if group is not None:
            meta.groups.add(group)
        return meta

    def end(
        self,
        transactional_id: str,
        producer_id: int,
        epoch: int,
        commit: bool,
        *,
        allow_empty: bool = True,
    ) -> tuple[TransactionMetadata, MarkerPlan | None]:
        """Start committing or aborting. Returns the markers to write (None: nothing to do,
        e.g. abort after a timeout already aborted it, or an empty transaction).

        Raises:
            ProducerFenced, TransactionalIdNotFound,
            TransactionTimedOut: commit of a transaction the coordinator aborted on timeout,
            InvalidTxnState: ``allow_empty`` False and nothing was added to the transaction,
            ConcurrentTransactions: an end of this transaction is still being completed.
        """
        meta = self.txns.get(transactional_id)
        retried = (
            meta is not None
            and producer_id == meta.producer_id
            and epoch == meta.ended_epoch
            and meta.epoch == epoch + 1  # no newer incarnation since
        )
        if retried:
            # The transaction of this epoch is already over: a retried end (the answer was
            # lost with a crashed coordinator), or an abort after the timeout aborted it.
            ended_as = meta.state == TxnState.COMPLETE_COMMIT
            if ended_as == bool(commit):
                return meta, None
            if epoch == meta.timed_out_epoch:
                self._current(transactional_id, producer_id, epoch)  # raises TransactionTimedOut
            raise InvalidTxnState(
                f"the transaction of {transactional_id!r} epoch {epoch} already ended with "
                f"{'commit' if ended_as else 'abort'}"
            )
        meta = self._current(transactional_id, producer_id, epoch)
        if meta.state.preparing:
            raise ConcurrentTransactions(
                f"transaction {transactional_id!r} is completing ({meta.state.value}); retry"
            )
        if meta.state != TxnState.ONGOING:
            if not allow_empty:  # Kafka's broker: EndTxn with nothing begun is INVALID_TXN_STATE
                raise InvalidTxnState(
                    f"no transaction of {transactional_id!r} is open (nothing was added to it)"
                )
            # Nothing was sent in it: finishing is a local matter, but the epoch still moves
            # on so that the producer's next transaction starts fresh everywhere.
            meta.ended_epoch = meta.epoch
            self._bump(meta)
            meta.state = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
            return meta, None
        return meta, self._prepare(meta, commit)

    def _prepare(self, meta: TransactionMetadata, commit: bool) -> MarkerPlan:
        meta.state = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        return self._plan(meta, commit)

    def _plan(self, meta: TransactionMetadata, commit: bool) -> MarkerPlan:
        marker_epoch = meta.epoch + 1 if meta.epoch < MAX_EPOCH else meta.epoch
        return MarkerPlan(
            meta.transactional_id,
            meta.producer_id,
            marker_epoch,
            commit,
            tuple(sorted(meta.partitions)),
            tuple(sorted(meta.groups)),
        )

    def complete(self, plan: MarkerPlan, *, timed_out: bool = False) -> TransactionMetadata:
        """Every marker of ``plan`` is written: the transaction is over, the epoch moves on."""
        meta = self.txns[plan.transactional_id]
        if not meta.state.preparing or meta.producer_id != plan.producer_id:
            return meta  # completed already (a repeated finish after a restart)
        old_epoch = meta.epoch
        self._bump(meta)
        meta.state = TxnState.COMPLETE_COMMIT if plan.commit else TxnState.COMPLETE_ABORT
        meta.partitions, meta.groups = set(), set()
        meta.ended_epoch = old_epoch
        if timed_out:
            meta.timed_out_epoch = old_epoch
        return meta

    def expired(self) -> list[MarkerPlan]:
        """Open transactions older than their timeout, moved to PrepareAbort."""
        now = self._clock()
        return [
            self._prepare(meta, commit=False)
            for meta in self.txns.values()
            if meta.state == TxnState.ONGOING and now - meta.started_ms > meta.timeout_ms
        ]

    def verify(self, producer_id: int, epoch: int, topic: str, partition: int) -> bool:
        """KIP-890: may this producer epoch write transactionally to this partition now?"""
        meta = self._by_producer.get(producer_id)
        return (
            meta is not None
            and meta.epoch == epoch
            and meta.state == TxnState.ONGOING
            and (topic, partition) in meta.partitions
        )
