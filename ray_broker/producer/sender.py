"""The producer's I/O thread: turns what the accumulator says is ready into produce calls.

Everything it decides it asks the accumulator; what it does itself is I/O: look up leaders
(without waiting on a refresh — a topic whose metadata is being fetched waits alone), send
each batch to its leader's ``produce`` (``PartitionTransport``: the data plane, or Ray) and
hand replies back. It never exits on an error: a round that
raises is logged and the next one starts, so no future is stranded.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ray_broker._ray import classify
from ray_broker.errors import BrokerError, BrokerTimeoutError, PartitionUnavailable
from ray_broker.hops import STAMPS
from ray_broker.metadata import MetadataCache
from ray_broker.partition_transport import DIRECT, PartitionTransport
from ray_broker.producer.accumulator import RecordAccumulator
from ray_broker.producer.batch import PendingRecords, ProducerBatch
from ray_broker.producer.transactions import TransactionManager
from ray_broker.structs import ProduceResult

logger = logging.getLogger(__name__)

NO_ACK = ProduceResult(-1, -1, -1, -1)


class Sender:
    """See the module docstring. Shares the producer's condition (lock) with ``send()``."""

    def __init__(
        self,
        accumulator: RecordAccumulator,
        cond: threading.Condition,
        metadata: MetadataCache,
        producer_id: int | None,
        acks: Any,
        transactions: TransactionManager | None = None,
        client_id: str = "",
        transport: PartitionTransport | None = None,
    ) -> None:
        self._acc = accumulator
        self._transport = transport or PartitionTransport(DIRECT, lane="produce")
        self._client_id = client_id  # quotas per client id (actors/security/quotas.py)
        self._txn = transactions
        self._cond = cond
        self._metadata = metadata
        self._producer_id = producer_id
        self._epoch = 0
        self._acks = acks
        self._thread = threading.Thread(target=self._run, name="ray-broker-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            try:
                if self._round():
                    return
            except Exception:  # a bug must not strand every future: log, back off, go on
                logger.exception("producer sender round failed; continuing")
                time.sleep(self._acc.settings.retry_backoff_s or 0.01)

    def _round(self) -> bool:
        """Expire, split, collect and ship; True once closed with nothing left."""
        acc = self._acc
        with self._cond:
            now = acc.clock()
            expired = acc.timed_out(now)
        for batch in expired:
            if now >= batch.deadline and batch.last_error is not None:
                # Past delivery.timeout.ms while an attempt is in flight: the failure to
                # report is why the earlier attempts failed, not that this one is unanswered.
                error = batch.last_error
            else:
                error = BrokerTimeoutError(
                    f"no answer from the leader of {batch.topic}-{batch.partition} within "
                    f"request.timeout.ms={acc.settings.request_timeout_s * 1000:.0f}",
                    topic=batch.topic,
                    partition=batch.partition,
                )
            self._failed(batch, error, batch.attempts)
        settled: list[PendingRecords] = []
        with self._cond:
            now = acc.clock()
            for item in acc.take_sealed(now):
                if isinstance(item, PendingRecords):
                    self._split(item)
                    settled.append(item)
                else:
                    acc.enqueue(item)
            to_ship = [(batch, *acc.sequence(batch)) for batch in acc.ready_batches(now)]
            if not to_ship and not settled:
                if acc.closed and acc.idle:
                    return True
                # Wakes on new records, replies, or the next linger/backoff/timeout check.
                self._cond.wait(acc.next_wakeup(now))
                return False
            if settled:
                self._cond.notify_all()  # flush() and buffer.memory waiters
        for records in settled:
            records.completion.fire()  # outside the lock: callbacks are the application's
        if self._txn is not None and to_ship:
            try:
                self._txn.ensure_added({(b.topic, b.partition) for b, _, _ in to_ship})
            except Exception as exc:  # typed by classify(): retried or failed with the batches
                error = classify(exc)
                for batch, _, _ in to_ship:
                    self._failed(batch, error, None)
                return False
        for batch, sequence, predecessors in to_ship:
            self._ship(batch, sequence, predecessors)
        return False

    def _split(self, records: PendingRecords) -> None:
        try:
            self._acc.place(records, *self._acc.split(records))
        except Exception as exc:  # a buffer that cannot be built fails alone
            self._acc.fail_records(records, classify(exc))

    def _ship(self, batch: ProducerBatch, sequence: int, predecessors: bool) -> None:
        try:
            metadata = self._metadata.cached(batch.topic, self.wake)
            if metadata is None:
                raise PartitionUnavailable(
                    f"metadata of {batch.topic!r} is being refreshed",
                    topic=batch.topic,
                    partition=batch.partition,
                )
            leader = metadata.leader(batch.partition)
            with self._cond:
                attempt = self._acc.sent(batch, self._acc.clock())
            producer_id, epoch = (
                self._txn.ids if self._txn is not None else (self._producer_id, self._epoch)
            )
            reply = self._transport.produce(
                leader,
                batch.payload(),
                producer_id,
                epoch,
                sequence,
                self._acks,
                predecessors,
                self._txn is not None,
                self._client_id,
            )
        except Exception as exc:  # typed by classify(): retried or failed, never raised here
            self._failed(batch, classify(exc), None)
            return
        if STAMPS.enabled:
            batch.submitted_ns = time.monotonic_ns()
        if self._acks == 0:
            self._complete(batch, NO_ACK, None, attempt)
            return
        reply.add_done_callback(lambda fut: self._on_reply(batch, attempt, fut))

    def _on_reply(self, batch: ProducerBatch, attempt: int, fut: Any) -> None:
        try:
            result = fut.result()
        except Exception as exc:  # Ray's own types or the data plane's: classify() maps them
            self._failed(batch, classify(exc), attempt)
            return
        self._complete(batch, result, None, attempt)

    def _failed(self, batch: ProducerBatch, error: BrokerError, attempt: int | None) -> None:
        with self._cond:
            if not self._acc.is_current(batch, attempt):
                return  # a reply to an attempt already given up on
            final = self._acc.failed(batch, error, self._acc.clock())
            if final is None:
                self._cond.notify_all()
        if final is None:
            self._metadata.forget(batch.topic)
            return
        self._complete(batch, None, final, None)

    def _complete(
        self,
        batch: ProducerBatch,
        result: ProduceResult | None,
        error: BrokerError | None,
        attempt: int | None,
    ) -> None:
        with self._cond:
            if not self._acc.is_current(batch, attempt) or not self._acc.finished(batch):
                return
            self._cond.notify_all()
        if error is not None and self._txn is not None:
            self._txn.failed(error)
        if STAMPS.enabled and result is not None and result.base_offset >= 0:
            STAMPS.stamp("handoff", result.base_offset, batch.submitted_ns)
            STAMPS.stamp("acked", result.base_offset)
        batch.complete(result, error)
