"""A transactional producer's side of KIP-98: its state, and its calls to the coordinators.

States (kafka-python's and the Java client's)::

    UNINITIALIZED --init_transactions--> READY --begin--> IN_TRANSACTION --commit/abort--> READY
                                                              |  a send failed
                                                              v
                                                        ABORTABLE_ERROR --abort--> READY
    any --ProducerFenced--> FENCED (close the producer; a newer instance owns the id)

Partitions join the transaction before their first batch is shipped (``ensure_added``, called
by the sender thread for each round's new partitions at once). Every finished transaction
gives the producer its next epoch (KIP-890), and its sequences start again at 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

from ray_broker._ray import call, classify, retrying
from ray_broker.errors import (
    BrokerError,
    BrokerNotRunning,
    InvalidTxnState,
    ProducerFenced,
    TransactionAborted,
    TransactionTimedOut,
)

COORDINATOR_CALL_TIMEOUT_S = 90.0  # end_txn may wait for markers (acks=all) on many partitions


class TxnClientState(str, Enum):
    UNINITIALIZED = "uninitialized"
    READY = "ready"
    IN_TRANSACTION = "in transaction"
    ABORTABLE_ERROR = "abortable error"
    FENCED = "fenced"


class TransactionManager:
    """See the module docstring. Thread-safe: the application's thread drives the state, the
    sender thread adds partitions and reports failed batches."""

    def __init__(
        self,
        transactional_id: str,
        timeout_ms: int,
        coordinator: Callable[[], Any],
        group_coordinator: Any,
        max_block_s: float,
        retry_backoff_s: float,
    ) -> None:
        self.transactional_id = transactional_id
        self.timeout_ms = timeout_ms
        self._coordinator_factory = coordinator
        self._handle: Any = None
        self._group_coordinator = group_coordinator
        self._max_block_s = max_block_s
        self._backoff_s = max(retry_backoff_s, 0.01)
        self._lock = threading.Lock()
        self.state = TxnClientState.UNINITIALIZED
        self.producer_id: int | None = None
        self.epoch = 0
        self._added: set[tuple[str, int]] = set()
        self._error: BrokerError | None = None

    # --- calls ----------------------------------------------------------------------------------

    def _coordinator(self) -> Any:
        """The coordinator's handle: looked up (or started) once, again after a failure."""
        if self._handle is None:
            try:
                self._handle = self._coordinator_factory()
            except Exception as exc:  # Ray's own failure to find or start it: typed here
                raise classify(exc, BrokerNotRunning) from None
        return self._handle

    def _forget_coordinator(self, error: BrokerError) -> None:
        if error.retriable:
            self._handle = None

    def _call(self, method: str, *args: Any) -> Any:
        """A coordinator call, retried on retriable errors within max.block.ms."""

        def attempt() -> Any:
            handle = getattr(self._coordinator(), method)
            return call(
                handle, *args, timeout_s=COORDINATOR_CALL_TIMEOUT_S, unavailable=BrokerNotRunning
            )

        try:
            return retrying(
                attempt,
                time.monotonic() + self._max_block_s,
                self._backoff_s,
                self._forget_coordinator,
            )
        except ProducerFenced:
            self.state = TxnClientState.FENCED
            raise

    def _require(self, *states: TxnClientState, doing: str) -> None:
        if self.state == TxnClientState.FENCED:
            raise ProducerFenced(
                f"{doing}: transactional id {self.transactional_id!r} was taken over by a newer "
                "producer; close this one"
            )
        if self.state not in states:
            fix = {
                TxnClientState.UNINITIALIZED: "call init_transactions() first",
                TxnClientState.READY: "call begin_transaction() first",
                TxnClientState.IN_TRANSACTION: "commit or abort the open transaction first",
                TxnClientState.ABORTABLE_ERROR: "a send failed: call abort_transaction()",
            }[self.state]
            raise InvalidTxnState(f"{doing} while the transaction is {self.state.value}: {fix}")

    # --- the application's thread ---------------------------------------------------------------

    def init(self) -> None:
        self._require(TxnClientState.UNINITIALIZED, TxnClientState.READY, doing="init_transactions")
        pid, epoch = self._call("init_producer_id", self.transactional_id, self.timeout_ms)
        with self._lock:
            self.producer_id, self.epoch = pid, epoch
            self.state = TxnClientState.READY

    def begin(self) -> None:
        self._require(TxnClientState.READY, doing="begin_transaction")
        with self._lock:
            self._added.clear()
            self._error = None
            self.state = TxnClientState.IN_TRANSACTION

    def check_send(self) -> None:
        """Raises unless a transactional send may be queued now."""
        if self.state != TxnClientState.IN_TRANSACTION:
            if self.state == TxnClientState.ABORTABLE_ERROR:
                raise TransactionAborted(
                    f"an earlier send of this transaction failed ({self._error}); call "
                    "abort_transaction()"
                )
            self._require(TxnClientState.IN_TRANSACTION, doing="a transactional send")

    def send_offsets(self, offsets: dict[tuple[str, int], tuple[int, str]], group: dict) -> None:
        self._require(TxnClientState.IN_TRANSACTION, doing="send_offsets_to_transaction")
        group_id = group.get("group_id") if isinstance(group, dict) else None
        if not group_id:
            raise InvalidTxnState(
                "send_offsets_to_transaction needs consumer.group_metadata() of a consumer "
                "in a group (group_id set)"
            )
        self._call("add_offsets", self.transactional_id, self.producer_id, self.epoch, group_id)
        call(
            self._group_coordinator.txn_commit,
            group_id,
            group.get("member_id"),
            self.producer_id,
            offsets,
            timeout_s=COORDINATOR_CALL_TIMEOUT_S,
            unavailable=BrokerNotRunning,
        )

    def end(self, commit: bool) -> None:
        """Commit or abort on the coordinator; the producer then has its next epoch.

        Raises:
            TransactionAborted: commit after a failed send (abort instead).
            TransactionTimedOut: commit of a transaction the coordinator aborted.
        """
        self.check_end(commit)
        try:
            pid, epoch = self._call(
                "end_txn", self.transactional_id, self.producer_id, self.epoch, commit
            )
        except TransactionTimedOut:
            with self._lock:
                self.state = TxnClientState.ABORTABLE_ERROR
                self._error = TransactionTimedOut("the coordinator aborted it on timeout")
            raise
        with self._lock:
            self.producer_id, self.epoch = pid, epoch
            self._added.clear()
            self.state = TxnClientState.READY

    def check_end(self, commit: bool) -> None:
        """Raises unless the open transaction may be committed (or aborted) now."""
        if not commit:
            self._require(
                TxnClientState.IN_TRANSACTION,
                TxnClientState.ABORTABLE_ERROR,
                doing="abort_transaction",
            )
            return
        if self.state == TxnClientState.ABORTABLE_ERROR:
            raise TransactionAborted(f"cannot commit: {self._error}; call abort_transaction()")
        self._require(TxnClientState.IN_TRANSACTION, doing="commit_transaction")

    # --- the sender thread ----------------------------------------------------------------------

    @property
    def ids(self) -> tuple[int | None, int]:
        return self.producer_id, self.epoch

    def ensure_added(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Add partitions not yet in the transaction (one coordinator call for all).

        Raises:
            BrokerError: the coordinator refused or is unreachable (retriable ones are retried
                by the sender with the batches).
        """
        new = sorted(set(partitions) - self._added)
        if not new:
            return
        try:
            call(
                self._coordinator().add_partitions,
                self.transactional_id,
                self.producer_id,
                self.epoch,
                new,
                timeout_s=COORDINATOR_CALL_TIMEOUT_S,
                unavailable=BrokerNotRunning,
            )
        except BrokerError as exc:
            self._forget_coordinator(exc)
            raise
        with self._lock:
            self._added.update(new)

    def failed(self, error: BrokerError) -> None:
        """A batch of the open transaction failed for good: only an abort can follow."""
        with self._lock:
            if isinstance(error, ProducerFenced):
                self.state = TxnClientState.FENCED
            elif self.state == TxnClientState.IN_TRANSACTION:
                self.state = TxnClientState.ABORTABLE_ERROR
                self._error = error
