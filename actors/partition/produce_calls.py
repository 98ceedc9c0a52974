"""The write calls of a partition leader: ``produce`` and ``write_marker``.

A write is checked (who, what, where the leader stands), appended by ``Partition``, and, for
``acks=all``, answered when the high watermark passes it. Ray does not order an async actor's
calls, so an idempotent producer's batch that overtook its predecessor waits for it here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pyarrow as pa
import pyarrow.compute as pc

from ray_broker.actors.partition.arguments import (
    check_produce_arguments,
)
from ray_broker.actors.partition.shell import PartitionShell
from ray_broker.config import (
    DELAY_TARGET_HEADER,
    DELAY_TOPIC,
    TRANSACTION_COORDINATOR_NAME,
)
from ray_broker.errors import (
    InvalidRecord,
    InvalidTxnState,
    NotEnoughReplicas,
    NotEnoughReplicasAfterAppend,
    NotLeader,
)
from ray_broker.hops import STAMPS
from ray_broker.storage.ipc import from_ipc
from ray_broker.storage.record_filter import header_column
from ray_broker.structs import ProduceResult

# How long a producer batch that arrived before its predecessor waits for it (Ray does not
# order an async actor's calls). Past this an unknown producer starts fresh and a known one gets
# OutOfOrderSequence and resends in order.
SEQUENCE_WAIT_MS = 5_000
LEADER_CALL_TIMEOUT_S = 30.0  # a call to the transaction coordinator
ACKS_ALL_TIMEOUT_MS = 30_000


class ProduceCalls(PartitionShell):
    async def produce(
        self,
        batch: pa.Table | pa.Buffer | bytes,
        producer_id: int | None = None,
        producer_epoch: int = 0,
        base_sequence: int = 0,
        acks: int = -1,
        predecessors_in_flight: bool = True,
        transactional: bool = False,
        client_id: str = "",
        *,
        session: str = "",
    ) -> ProduceResult:
        """Append a producer batch (a Table, or the IPC stream of one as clients send it) as
        the leader.

        ``predecessors_in_flight`` says whether the producer has earlier batches of this
        partition on their way; only then does a batch that skips sequences wait for them (Ray
        does not order an async actor's calls). A producer this partition no longer knows (its
        state expired) resumes at once instead of waiting out ``SEQUENCE_WAIT_MS``.

        Raises:
            NotLeader: this replica is not the leader (refresh metadata).
            NotEnoughReplicas: acks=all and fewer in-sync replicas than min.insync.replicas
                (nothing was written), or they did not confirm in time.
            NotEnoughReplicasAfterAppend: acks=all, written, but the in-sync replicas shrank
                below min.insync.replicas before the write was committed (retry: idempotence
                deduplicates).
            BrokerBusy: segments are written to Parquet slower than they arrive and did not
                catch up within ``UNSEALED_WAIT_S`` (retriable; nothing was written).
            InvalidRecord, RecordTooLarge, OutOfOrderSequence, ProducerFenced.
            InvalidTxnState: a transactional batch from a producer epoch whose transaction the
                coordinator has not added this partition to (KIP-890: a late write of an
                ended transaction never lands in the next one).
            AuthenticationFailed, Unauthorized: the session may not write this topic.

        Over the caller's produce quota the answer is held back (``throttle_time_ms``).
        """
        received_ns = time.monotonic_ns() if STAMPS.enabled else 0
        schedule = self.core.topic == DELAY_TOPIC
        if schedule:  # what matters is the topics the delayed records are for (below)
            claims = await self._who(session)
        else:
            claims = await self._access(session, "write", "topic", self.core.topic)
        started = time.perf_counter()
        check_produce_arguments(producer_id, producer_epoch, base_sequence, acks)
        ipc_bytes = None
        if isinstance(batch, (pa.Buffer, bytes)):
            ipc_bytes = len(batch) if isinstance(batch, bytes) else batch.size
            batch = from_ipc(batch)
        if schedule and self._guard.enabled:
            self._check_delay_targets(session, batch)
        await self._ensure_role()
        self._check_leader()
        min_isr = self.core.log.config.min_insync_replicas
        if acks == -1 and not self.replica.enough_replicas(min_isr):
            raise NotEnoughReplicas(
                f"{self.core.name} has {len(self.replica.isr)} in-sync replica(s), fewer than "
                f"min.insync.replicas={min_isr}; nothing was written"
            )
        await self.housekeeping.make_room()
        self._check_leader()
        if transactional:
            await self._verify_transaction(producer_id, producer_epoch)
        if producer_id is not None and predecessors_in_flight:
            await self._await_predecessors(producer_id, producer_epoch, base_sequence)
            self._check_leader()
        result = self.core.produce(
            batch, producer_id, producer_epoch, base_sequence, bool(transactional)
        )
        if self.core.trace.events:
            self.traces.start()
        if not result.duplicate:
            if STAMPS.enabled:
                STAMPS.stamp("actor_receipt", result.base_offset, received_ns)
                STAMPS.stamp("appended", result.base_offset)
            self._on_high_watermark(self.replica.advance_high_watermark())
            self.signals.data_arrived()
            self.housekeeping.seal_in_background()
        if acks == -1:
            await self._await_committed(result.last_offset + 1)
            if not self.replica.enough_replicas(min_isr):
                # Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND: the write reached only the
                # leader's shrunken ISR, which is not the durability acks=all promised.
                raise NotEnoughReplicasAfterAppend(
                    f"{self.core.name}: offset {result.last_offset} was written but the "
                    f"in-sync replicas shrank to {len(self.replica.isr)}, fewer than "
                    f"min.insync.replicas={min_isr}; retry (idempotence deduplicates)"
                )
        size = batch.get_total_buffer_size() if ipc_bytes is None else ipc_bytes
        if not result.duplicate:
            self.metrics.produced(
                result.last_offset - result.base_offset + 1, size, time.perf_counter() - started
            )
        throttle_ms = self._guard.throttle_ms(claims, client_id, "producer_byte_rate", size)
        if throttle_ms:
            await asyncio.sleep(throttle_ms / 1000)
            return dataclasses.replace(result, throttle_time_ms=throttle_ms)
        return result

    def _check_delay_targets(self, session: object, batch: pa.Table) -> None:
        """A delayed record is written to its topic later by the scheduler (the broker
        itself): the sender must be allowed to write that topic now.

        Raises:
            Unauthorized: the caller may not write one of the records' target topics.
            InvalidRecord: the batch is not a table of records.
        """
        if not isinstance(batch, pa.Table) or "headers" not in batch.column_names:
            raise InvalidRecord(f"{self.core.name}: a batch of records has a headers column")
        targets = pc.unique(header_column(batch.column("headers"), DELAY_TARGET_HEADER))
        for target in targets.to_pylist():
            name = target.decode("utf-8", "replace") if isinstance(target, bytes) else ""
            self._guard.check(session, "write", "topic", name)

    async def _verify_transaction(self, producer_id: int | None, epoch: int) -> None:
        """The first transactional write of a producer epoch here asks the transaction
        coordinator whether this partition is in that epoch's open transaction."""
        if producer_id is None:
            raise InvalidTxnState("a transactional write needs a producer id and epoch")
        if self.core.log.config.compacts:
            raise InvalidTxnState(
                f"{self.core.name}: transactions on compacted topics are not supported yet "
                "(compaction would drop transaction markers)"
            )
        if self.core.txns.is_open(producer_id, epoch):
            return
        verified = await self._named.call(
            TRANSACTION_COORDINATOR_NAME,
            "verify",
            producer_id,
            epoch,
            self.core.topic,
            self.core.partition,
            timeout_s=LEADER_CALL_TIMEOUT_S,
            missing=InvalidTxnState,
        )
        if not verified:
            raise InvalidTxnState(
                f"{self.core.name}: producer {producer_id} epoch {epoch} has no open "
                "transaction that includes this partition (ended, timed out, or "
                "add_partitions was skipped)"
            )
        self._check_leader()

    async def write_marker(
        self, producer_id: int, marker_epoch: int, commit: bool, *, session: str = ""
    ) -> int:
        """Write a transaction marker (the coordinator's call) and wait until the in-sync
        replicas have it; returns its offset.

        Raises:
            NotLeader, NotEnoughReplicas (retriable: the coordinator writes it again).
        """
        await self._internal(session, "write_marker")
        await self._ensure_role()
        self._check_leader()
        offset = self.core.write_marker(producer_id, marker_epoch, bool(commit))
        self._on_high_watermark(self.replica.advance_high_watermark())
        self.signals.data_arrived()
        await self._await_committed(offset + 1)
        return offset

    async def _await_committed(self, offset: int) -> None:
        deadline = time.monotonic() + ACKS_ALL_TIMEOUT_MS / 1000
        epoch = self.replica.leader_epoch
        while self.core.high_watermark < offset:
            if not self.replica.is_leading(epoch):
                raise NotLeader(
                    f"{self.core.name}: lost the leadership before the write was replicated; "
                    "it may or may not be committed — retry (idempotence deduplicates)",
                    topic=self.core.topic,
                    partition=self.core.partition,
                    leader_epoch=epoch,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotEnoughReplicas(
                    f"{self.core.name}: in-sync replicas did not confirm offset {offset - 1} "
                    f"within {ACKS_ALL_TIMEOUT_MS} ms"
                )
            await self.signals.wait_for_high_watermark(remaining)

    async def _await_predecessors(self, producer_id: int, epoch: int, sequence: int) -> None:
        deadline = time.monotonic() + SEQUENCE_WAIT_MS / 1000
        while self.core.producers.is_ahead(producer_id, epoch, sequence):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return  # produce() decides: a fresh start, or OutOfOrderSequence
            await self.signals.wait_for_data(remaining)
