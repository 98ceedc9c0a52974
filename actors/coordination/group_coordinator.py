"""The group coordinator: consumer-group membership, assignment and committed offsets.

A separate named, detached actor rather than part of the Controller: every consumer heartbeats
it every few seconds and commits through it, and that traffic must not queue behind topic
administration (which waits for partition actors to start), nor should a slow rebalance stall
metadata. Kafka separates the two roles for the same reason.

Committed offsets live in ``<data_dir>/__consumer_offsets/partition=0``, a compacted log of the
storage engine (key = group/topic/partition); a restarted coordinator replays it. Membership is
soft state: after a restart members rejoin (their next heartbeat gets ``IllegalGeneration``).
"""

from __future__ import annotations

from ray_broker.actors.coordination.group import Heartbeat
from ray_broker.actors.coordination.group_admin import GroupAdminCalls
from ray_broker.actors.coordination.group_arguments import check_join_arguments
from ray_broker.actors.coordination.group_offsets import OffsetCalls
from ray_broker.actors.coordination.group_shell import now_ms
from ray_broker.actors.coordination.share_state_calls import ShareStateCalls


class GroupCoordinator(OffsetCalls, GroupAdminCalls, ShareStateCalls):
    """All consumer groups of one broker namespace."""

    # --- membership -----------------------------------------------------------------------------

    async def join(
        self,
        group_id: str,
        member_id: str | None,
        instance_id: str | None,
        client_id: str,
        topics: list[str],
        pattern: str | None,
        strategy: str,
        session_timeout_ms: int,
        *,
        session: str = "",
    ) -> Heartbeat:
        """Add a member. Raises InvalidConfig / InvalidGroupId for malformed arguments (the
        client validates them; a direct caller gets the same answer) and
        InconsistentGroupProtocol; Unauthorized without read on the group."""
        await self._access(session, "read", "group", str(group_id))
        self._start()
        check_join_arguments(
            member_id, instance_id, client_id, topics, pattern, strategy, session_timeout_ms
        )
        if not self.partitions or any(t not in self.partitions for t in topics):
            await self._refresh_topics()
        return self._group(group_id).join(
            member_id,
            instance_id,
            client_id,
            topics,
            pattern,
            strategy,
            session_timeout_ms,
            now_ms(),
        )

    async def heartbeat(
        self, group_id: str, member_id: str, owned: list[tuple[str, int]], *, session: str = ""
    ) -> Heartbeat:
        await self._access(session, "read", "group", str(group_id))
        self._start()
        return self._group(group_id).heartbeat(member_id, owned, now_ms())

    async def leave(self, group_id: str, member_id: str, *, session: str = "") -> bool:
        await self._access(session, "read", "group", str(group_id))
        group = self.groups.get(group_id)
        return group.leave(member_id) if group else False

    async def topics_changed(self, *, session: str = "") -> None:
        """The Controller's nudge after a topic was created, deleted or grown."""
        await self._internal(session, "topics_changed")
        await self._refresh_topics()

    async def shutdown(self, *, session: str = "") -> None:
        await self._access(session, "alter", "cluster", "cluster")
        if self._background is not None:
            self._background.cancel()
        self.store.close()
