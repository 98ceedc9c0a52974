"""``PartitionActor``: one replica of a partition, leader or follower, as a Ray actor.

Everything that touches the log runs on the actor's single event loop, so the log needs no
locks: a long-poll fetch waits with ``await`` (it never blocks produce), and the only blocking
work — writing a rolled segment's Parquet file — runs on a worker thread. (Concurrency groups
for produce and fetch were the other design: each group is its own thread and loop, which
would share the log across threads and need cross-loop wake-ups on every append.)

Replication is leader-driven: the leader runs one sender per follower
(``replication_links.py`` over ``replication.py``'s decisions) that pushes the follower's
missing records with ``replicate`` — one request in flight per follower, so batches arrive in
order (Ray does not order an async actor's calls). The high watermark is the lowest log end
among the in-sync replicas; ``acks=all`` waits for it to pass the batch. This actor serves the
follower side: ``epoch_state``, ``truncate`` and ``replicate``.

The pieces it drives: ``Partition`` (``core.py``: the log, producer state, epochs, high
watermark), ``Replica`` (role, ISR), ``Housekeeping`` (sealing, retention, tiering),
``ShareGroups`` (queue semantics), ``PartitionSignals`` (wake-ups) and ``TraceShipper``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from typing import Any

import pyarrow as pa

from ray_broker.actors.partition.arguments import (
    check_fetch_arguments,
)
from ray_broker.actors.partition.data_plane_calls import DataPlaneCalls
from ray_broker.actors.partition.follower_calls import FollowerCalls
from ray_broker.actors.partition.message_trace import traced_rows
from ray_broker.actors.partition.produce_calls import ProduceCalls
from ray_broker.actors.partition.share_calls import ShareGroupCalls
from ray_broker.actors.partition.shell import PARKED_FETCHES_MAX
from ray_broker.config import (
    TopicConfig,
    parse_config,
)
from ray_broker.hops import STAMPS
from ray_broker.storage.ipc import to_ipc
from ray_broker.storage.record_filter import RecordFilter, checked_filter
from ray_broker.structs import FetchResponse, PartitionOffsets

logger = logging.getLogger(__name__)

# Per fetch answer, whatever the client asks (Kafka's fetch.max.bytes).
FETCH_MAX_RECORDS = 1_000_000
FETCH_MAX_BYTES = 64 * 1024 * 1024


class PartitionActor(ProduceCalls, ShareGroupCalls, FollowerCalls, DataPlaneCalls):
    """The Ray actor around ``Partition``. Created by the Controller with ``max_restarts=-1`` and
    pinned to its node: a restarted actor rebuilds its log from its files and asks the
    Controller for its role."""

    # --- introspection --------------------------------------------------------------------------

    async def ready(self, *, session: str = "") -> PartitionOffsets:
        await self._access(session, "describe", "topic", self.core.topic)
        self._start_background()
        return self.core.offsets()

    async def info(self, *, session: str = "") -> dict[str, Any]:
        """Where this replica runs and what it is; for describe and fault tests."""
        import ray

        await self._access(session, "describe", "topic", self.core.topic)
        await self._ensure_role()
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "slot": self.slot,
            "role": self.replica.role.value,
            "epoch": self.replica.leader_epoch,
            "isr": sorted(self.replica.isr),
            "offsets": self.core.offsets(),
            "unsealed_bytes": self.core.log.unsealed_bytes,
            "gc_frozen": gc.get_freeze_count(),  # ray_broker/gc_pause.py
            "followers_direct": self.links.direct_followers(),  # over the data plane
        }

    # --- fetch ----------------------------------------------------------------------------------

    async def fetch(
        self,
        offset: int,
        max_records: int,
        max_bytes: int,
        max_wait_ms: int = 0,
        read_committed: bool = False,
        flt: RecordFilter | None = None,
        consumer: str = "",
        client_id: str = "",
        *,
        session: str = "",
    ) -> FetchResponse:
        """Committed records from ``offset``; waits up to ``max_wait_ms`` for the first one.
        ``consumer`` names the reader in the trail of traced records.

        With a filter ``flt`` (``storage/record_filter.py``) only matching records are
        returned; ``next_offset`` moves past the others, and the long poll keeps waiting while
        new records do not match.

        The broker caps what one call may ask: ``FETCH_MAX_RECORDS`` records and
        ``FETCH_MAX_BYTES`` bytes per answer, and at most ``PARKED_FETCHES_MAX`` long polls
        waiting at once (more are answered at once, possibly empty), so parked polls never
        take the call slots producers need.

        ``read_committed`` reads below the last stable offset and hides aborted transactions;
        control records are hidden from every reader. ``next_offset`` in the answer moves the
        consumer past hidden records even when none is returned.

        Raises:
            NotLeader, OffsetOutOfRange; InvalidConfig for arguments of the wrong type;
            InvalidFilter; AuthenticationFailed, Unauthorized.
        """
        claims = await self._access(session, "read", "topic", self.core.topic)
        flt = checked_filter(flt)
        check_fetch_arguments(offset, max_records, max_bytes, max_wait_ms)
        started = time.perf_counter()
        max_records = min(max_records, FETCH_MAX_RECORDS)
        max_bytes = min(max_bytes, FETCH_MAX_BYTES)
        await self._ensure_role()
        self._check_leader()
        if self._parked >= PARKED_FETCHES_MAX:
            max_wait_ms = 0
        deadline = time.monotonic() + min(max_wait_ms, self._fetch_wait_cap_ms) / 1000
        self._parked += 1
        try:
            table, next_offset, woke_ns = await self._read_waiting(
                offset, max_records, max_bytes, deadline, bool(read_committed), flt
            )
        finally:
            self._parked -= 1
        traced = traced_rows(table)
        if len(traced):
            self.core.trace.delivered(table, traced, consumer=str(consumer)[:200])
            self.traces.start()
        response = FetchResponse(
            to_ipc(table),
            table.num_rows,
            self.core.high_watermark,
            self.core.log.log_start_offset,
            next_offset,
            self.core.last_stable_offset,
        )
        if STAMPS.enabled and table.num_rows:
            STAMPS.stamp("fetch_woke", offset, woke_ns)
            STAMPS.stamp("fetch_replied", offset)
        self.metrics.fetched(
            table.num_rows, response.records_ipc.size, time.perf_counter() - started
        )
        return await self._throttled(response, claims, client_id)

    async def _read_waiting(
        self,
        offset: int,
        max_records: int,
        max_bytes: int,
        deadline: float,
        read_committed: bool,
        flt: RecordFilter | None = None,
    ) -> tuple[pa.Table, int, int]:
        """The records, the next offset to read, and when the read that found them began
        (for ``hops``). Hidden records alone end the wait too: the consumer moves past them.
        Records a filter skipped do not: the read goes on from past them until one matches."""
        next_offset = offset
        while True:
            woke_ns = time.monotonic_ns()
            read_from = next_offset
            table, next_offset = self.core.read_with_next(
                read_from, max_records, max_bytes, read_committed, flt
            )
            remaining = deadline - time.monotonic()
            moved = table.num_rows or (next_offset > offset and flt is None)
            if moved or remaining <= 0:
                break
            if next_offset > read_from:
                # A filtered scan stops every FILTER_SCAN_RECORDS: let producers in, go on.
                await asyncio.sleep(0)
                continue
            await self.signals.wait_for_data(remaining)
            self._check_leader()
        return table, next_offset, woke_ns

    async def read_plan(self, start: int, end: int, *, session: str = "") -> dict[str, Any]:
        """Where committed records in ``[start, end)`` are, for bulk readers
        (``ray_broker.data``): sealed Parquet files on this node, and the offset from which only
        ``fetch`` has them. ``end`` is capped at the high watermark.

        Raises:
            NotLeader; OffsetOutOfRange for ``start`` outside the log.
        """
        import ray

        await self._access(session, "read", "topic", self.core.topic)
        await self._ensure_role()
        self._check_leader()
        self.core.log.check_offset(start)
        end = min(end, self.core.high_watermark)
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "end": end,
            "files": self.core.log.sealed_files(start, end),
            "memory_from": self.core.log.memory_start_offset,
        }

    async def hop_stamps(self, enable: bool, *, session: str = "") -> list[tuple[str, int, int]]:
        """Switch this actor process's latency stamps (``ray_broker.hops``) on or off and hand
        over those taken so far — a diagnostic for ``loadtest/latency.py --breakdown``."""
        await self._access(session, "alter", "cluster", "cluster")
        STAMPS.enabled = bool(enable)
        return STAMPS.drain()

    async def offsets(self, *, session: str = "") -> PartitionOffsets:
        await self._access(session, "describe", "topic", self.core.topic)
        await self._ensure_role()
        return self.core.offsets()

    async def offset_for_time(self, timestamp: int, *, session: str = "") -> tuple[int, int] | None:
        await self._access(session, "describe", "topic", self.core.topic)
        return self.core.offset_for_time(timestamp)

    # --- housekeeping ---------------------------------------------------------------------------

    async def update_config(self, config: dict[str, Any], *, token: str = "") -> None:
        self._authorize(token)
        self.core.log.config = parse_config(TopicConfig, config)
        self.shares.update_settings()

    async def maintain(self, *, session: str = "") -> dict[str, int]:
        """Run housekeeping now (the background loop runs it every retention check interval):
        roll, retention, compaction, sealing, then moving old segments to remote storage."""
        await self._internal(session, "maintain")
        return await self.housekeeping.run()

    async def close(self, *, token: str = "") -> None:
        """Finish sealing and close the log's files (before the actor is killed)."""
        self._authorize(token)
        self.links.stop()
        if self._data_plane is not None:
            await self._data_plane.close()
        for task in self._background:
            task.cancel()
        await self.housekeeping.finish_sealing()
        self.core.log.close()

    async def delete(self, *, token: str = "") -> None:
        await self.close(token=token)
        self.core.delete()
        self.signals.data_arrived()
