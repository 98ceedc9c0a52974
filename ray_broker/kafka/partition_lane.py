"""One connection's writes to one partition: in arrival order, pipelined, and coalesced.

librdkafka with ``linger.ms=0`` (and kafka-python, aiokafka under load) sends one small
produce request after another without waiting. Each partition-actor call costs about a
millisecond of CPU on each side whatever its size, so one call per request caps a partition
near 1,000 requests/s and the queue — and latency — grow past it. A lane keeps at most
``MAX_IN_FLIGHT`` calls in flight; what arrives meanwhile waits and goes in the next call,
merged with its neighbours when that changes nothing a client can observe: plain
(non-idempotent, non-transactional) batches with the same acks, leader and session, whose
records get consecutive offsets, so each request's base offset is the call's plus the records
before it. Idempotent and transactional batches go alone (their sequence numbers name exactly
one batch each, which retries must find again). At low load nothing waits: the first write
is sent at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ray_broker.errors import BrokerError
from ray_broker.kafka.link import settled
from ray_broker.partition_transport import PartitionTransport
from ray_broker.storage.ipc import to_ipc

MAX_IN_FLIGHT = 1
MAX_MERGED_RECORDS = 100_000
MAX_MERGED_BYTES = 8 * 1024 * 1024


@dataclass
class Write:
    """One producer batch and where its answer goes: (base offset, log start, throttle ms)."""

    leader: Any
    records: pa.Table
    producer_id: int | None
    producer_epoch: int
    base_sequence: int
    transactional: bool
    acks: int
    client_id: str
    session: str
    timeout_s: float
    answer: asyncio.Future[tuple[int, int, int]]

    def joins(self, other: Write) -> bool:
        plain = self.producer_id is None and not self.transactional
        return (
            plain
            and other.producer_id is None
            and not other.transactional
            and self.leader is other.leader
            and (self.acks, self.session, self.client_id)
            == (other.acks, other.session, other.client_id)
        )


class PartitionLane:
    """``transport`` carries the calls (the data plane, or Ray)."""

    def __init__(self, transport: PartitionTransport) -> None:
        self._transport = transport
        self.in_flight = 0
        self.queue: list[Write] = []

    @property
    def idle(self) -> bool:
        return not self.in_flight and not self.queue

    def write(self, write: Write) -> None:
        """Queue ``write`` behind everything queued before it (call in arrival order)."""
        self.queue.append(write)
        self._pump()

    def _pump(self) -> None:
        while self.in_flight < MAX_IN_FLIGHT and self.queue:
            group = [self.queue.pop(0)]
            size = group[0].records.nbytes
            while (
                self.queue
                and group[0].joins(self.queue[0])
                and sum(w.records.num_rows for w in group) < MAX_MERGED_RECORDS
                and size < MAX_MERGED_BYTES
            ):
                size += self.queue[0].records.nbytes
                group.append(self.queue.pop(0))
            first = group[0]
            records = (
                first.records if len(group) == 1 else pa.concat_tables([w.records for w in group])
            )
            try:  # submitted here, synchronously: calls leave in queue order
                call = self._transport.produce(
                    first.leader,
                    to_ipc(records),
                    first.producer_id,
                    first.producer_epoch,
                    first.base_sequence,
                    first.acks,
                    True,
                    first.transactional,
                    first.client_id,
                    session=first.session,
                )
            except BrokerError as exc:
                for write in group:
                    write.answer.set_exception(exc)
                continue
            self.in_flight += 1
            asyncio.get_running_loop().create_task(self._settle(group, call))

    async def _settle(self, group: list[Write], call: Any) -> None:
        try:
            result = await settled(call, max(w.timeout_s for w in group))
        except BaseException as exc:  # every waiting request gets the failure
            failure = exc if isinstance(exc, BrokerError) else BrokerError(str(exc))
            for write in group:
                if not write.answer.done():
                    write.answer.set_exception(failure)
        else:
            offset = result.base_offset
            for write in group:
                if not write.answer.done():
                    write.answer.set_result(
                        (offset, result.log_start_offset, result.throttle_time_ms)
                    )
                offset += write.records.num_rows
        finally:
            self.in_flight -= 1
            self._pump()
