"""A partition leader's share-group calls (queue semantics, KIP-932): the access checks and
leadership in front of ``ShareGroups`` (``share_groups.py``), which holds the state."""

from __future__ import annotations

from typing import Any

from ray_broker.actors.partition.shell import PARKED_FETCHES_MAX, PartitionShell
from ray_broker.storage.record_filter import RecordFilter
from ray_broker.structs import FetchResponse


class ShareGroupCalls(PartitionShell):
    async def share_fetch(
        self,
        group_id: str,
        member_id: str,
        max_records: int = 500,
        max_wait_ms: int = 0,
        reset: str = "latest",
        flt: RecordFilter | None = None,
        client_id: str = "",
        *,
        session: str = "",
    ) -> FetchResponse:
        """Deliver up to ``max_records`` records to a share-group member under a lock; waits up
        to ``max_wait_ms`` for the first. ``reset`` places a group new to this partition
        (Kafka's share.auto.offset.reset). The records carry a ``delivery_count`` column.
        ``flt`` is the group's filter (see ``ShareGroups.fetch``).

        Raises:
            NotLeader, InvalidGroupId, InvalidConfig, InvalidFilter; Unauthorized without read
            on the topic and on the share group.
        """
        await self._access(session, "read", "share_group", str(group_id))
        claims = await self._access(session, "read", "topic", self.core.topic)
        await self._ensure_role()
        self._check_leader()
        if self._parked >= PARKED_FETCHES_MAX:
            max_wait_ms = 0
        self._parked += 1
        try:
            response = await self.shares.fetch(
                group_id, member_id, max_records, max_wait_ms, reset, flt
            )
        finally:
            self._parked -= 1
        self.metrics.fetched(response.num_records, response.records_ipc.size, 0.0)
        return await self._throttled(response, claims, client_id)

    async def share_acknowledge(
        self, group_id: str, member_id: str, acknowledgements: list[Any], *, session: str = ""
    ) -> list[int]:
        """Apply a member's answers (``[(offsets, "accept"|"release"|"reject", error text)]``);
        durable when this returns. Returns the offsets not held by the member (see
        ``InvalidRecordState``); the rest are applied.

        Raises:
            NotLeader, InvalidGroupId, InvalidConfig; Unauthorized.
        """
        await self._access(session, "read", "share_group", str(group_id))
        await self._ensure_role()
        self._check_leader()
        return await self.shares.acknowledge(group_id, member_id, acknowledgements)

    async def share_describe(self, group_id: str, *, session: str = "") -> dict[str, Any]:
        """The share group's state on this partition (members, in flight, lag)."""
        await self._access(session, "describe", "share_group", str(group_id))
        await self._ensure_role()
        self._check_leader()
        return await self.shares.describe(group_id)

    async def share_reset(
        self, group_id: str, to: str, value: int | None = None, *, session: str = ""
    ) -> int:
        """Start the share group over here; raises GroupNotEmpty while records are locked."""
        await self._access(session, "read", "share_group", str(group_id))
        await self._ensure_role()
        self._check_leader()
        return await self.shares.reset(group_id, to, value)
