"""Share-group snapshots: partition leaders decide a share group's state and keep it here
(``share_state_store.py``), fenced by leader epoch; admins list and delete share groups."""

from __future__ import annotations

from typing import Any

from ray_broker.actors.coordination.group_shell import GroupCoordinatorShell


class ShareStateCalls(GroupCoordinatorShell):
    async def share_load(
        self, group_id: str, topic: str, partition: int, epoch: int, *, session: str = ""
    ) -> tuple[int, dict[str, Any] | None]:
        """A share partition's snapshot for its leader of ``epoch`` (None: a new one), and the
        epoch of the leader that held it before (-1: none).

        Raises:
            FencedLeaderEpoch: a newer leader of the partition holds it.
        """
        await self._internal(session, "share_load")
        return self.shares.load((group_id, topic, partition), epoch)

    async def share_save(
        self,
        group_id: str,
        topic: str,
        partition: int,
        epoch: int,
        state: dict[str, Any],
        *,
        session: str = "",
    ) -> None:
        """Durably store a share partition's snapshot (fsynced before this returns).

        Raises:
            FencedLeaderEpoch: a newer leader of the partition holds it.
        """
        await self._internal(session, "share_save")
        await self.shares.save((group_id, topic, partition), epoch, state)

    async def list_share_groups(self, *, session: str = "") -> list[str]:
        claims = await self._who(session)
        return [
            g
            for g in self.shares.groups()
            if self._guard.permits(claims, "describe", "share_group", g)
        ]

    async def share_group_partitions(
        self, group_id: str, *, session: str = ""
    ) -> list[tuple[str, int]]:
        """Raises GroupNotFound for an unknown share group."""
        await self._access(session, "describe", "share_group", str(group_id))
        return self.shares.partitions(group_id)

    async def delete_share_group(self, group_id: str, *, session: str = "") -> None:
        """Forget a share group's state (its members must be gone). Raises GroupNotFound."""
        await self._access(session, "delete", "share_group", str(group_id))
        await self.shares.delete(group_id)
