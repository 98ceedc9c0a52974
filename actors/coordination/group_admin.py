"""Administration of consumer groups: list, describe (members, assignments, lag), delete, and
reset committed offsets."""

from __future__ import annotations

from ray_broker.actors.coordination.group import Group
from ray_broker.actors.coordination.group_keys import offset_key
from ray_broker.actors.coordination.group_shell import GroupCoordinatorShell
from ray_broker.errors import (
    GroupNotEmpty,
    GroupNotFound,
    InvalidConfig,
    OffsetOutOfRange,
)
from ray_broker.structs import (
    GroupDescription,
    GroupListing,
    MemberDescription,
    PartitionLag,
    TopicPartition,
)


class GroupAdminCalls(GroupCoordinatorShell):
    async def list_groups(self, *, session: str = "") -> list[GroupListing]:
        """The groups the caller may describe."""
        claims = await self._who(session)
        ids = {key[0] for key in self.offsets} | {
            g for g, grp in self.groups.items() if grp.members
        }
        ids = {g for g in ids if self._guard.permits(claims, "describe", "group", g)}
        return [
            GroupListing(gid, self._group(gid).state.value, len(self._group(gid).members))
            for gid in sorted(ids)
        ]

    async def describe_group(self, group_id: str, *, session: str = "") -> GroupDescription:
        """Raises Unauthorized (whether or not the group exists), GroupNotFound."""
        await self._access(session, "describe", "group", str(group_id))
        group = self._known(group_id)
        if group is None:
            raise GroupNotFound(f"consumer group {group_id!r} does not exist")
        owner = {tp: m.member_id for m in group.members.values() for tp in m.target}
        committed = await self.committed(group_id, session=self._token)
        partitions = sorted(set(committed) | set(owner))
        marks = await self._high_watermarks([tp for tp in partitions if tp[0] in self.partitions])
        lags = []
        for tp in partitions:
            end = marks[tp].high_watermark if tp in marks else -1
            offset = committed.get(tp)
            lag = None if offset is None or end < 0 else max(end - offset, 0)
            lags.append(PartitionLag(tp[0], tp[1], offset, end, lag, owner.get(tp)))
        members = [
            MemberDescription(
                m.member_id,
                m.instance_id,
                m.client_id,
                [TopicPartition(t, p) for t, p in sorted(m.target)],
            )
            for m in group.members.values()
        ]
        return GroupDescription(
            group_id, group.state.value, group.generation, group.strategy, members, lags
        )

    def _require_empty(self, group_id: str) -> Group:
        group = self._known(group_id)
        if group is None:
            raise GroupNotFound(f"consumer group {group_id!r} does not exist")
        if group.members:
            raise GroupNotEmpty(
                f"consumer group {group_id!r} has {len(group.members)} active member(s); stop "
                "them (or wait for their session timeout) first"
            )
        return group

    async def delete_group(self, group_id: str, *, session: str = "") -> None:
        """Delete an empty group's committed offsets. Raises GroupNotFound, GroupNotEmpty."""
        await self._access(session, "delete", "group", str(group_id))
        self._require_empty(group_id)
        keys = [key for key in self.offsets if key[0] == group_id]
        await self._write({offset_key(*key): None for key in keys})
        for key in keys:
            del self.offsets[key]
        group = self.groups.pop(group_id, None)
        if group is not None:
            group.generation = -1

    async def reset_offsets(
        self, group_id: str, topic: str, to: str, value: int | None = None, *, session: str = ""
    ) -> dict[tuple[str, int], int]:
        """Move an empty group's committed offsets on ``topic``.

        ``to`` is "earliest", "latest", "datetime" (``value`` = ms timestamp) or "offset".

        Raises:
            GroupNotEmpty, TopicNotFound, InvalidConfig, OffsetOutOfRange; Unauthorized
            without read on the group and the topic.
        """
        await self._access(session, "read", "group", str(group_id))
        await self._access(session, "read", "topic", str(topic))
        if to not in ("earliest", "latest", "datetime", "offset"):
            raise InvalidConfig(
                f"reset to must be earliest, latest, datetime or offset; got {to!r}"
            )
        if to in ("datetime", "offset") and not isinstance(value, int):
            raise InvalidConfig(f"reset to {to} needs an integer value, got {value!r}")
        group = self.groups.get(group_id)
        if group is not None and group.members:
            self._require_empty(group_id)
        meta = await self._topic(topic)
        partitions = [(topic, p) for p in range(meta.num_partitions)]
        marks = await self._high_watermarks(partitions)
        new: dict[tuple[str, int], tuple[int, str]] = {}
        for tp in partitions:
            mark = marks[tp]
            if to == "earliest":
                offset = mark.log_start_offset
            elif to == "latest":
                offset = mark.high_watermark
            elif to == "offset":
                offset = value
                if not mark.log_start_offset <= offset <= mark.high_watermark:
                    raise OffsetOutOfRange(
                        f"offset {offset} is outside [{mark.log_start_offset}, "
                        f"{mark.high_watermark}] for {tp[0]}-{tp[1]}",
                        topic=tp[0],
                        partition=tp[1],
                        offset=offset,
                        log_start=mark.log_start_offset,
                        log_end=mark.high_watermark,
                    )
            else:
                hit = await self._leader_call(meta, tp[1], "offset_for_time", value)
                offset = mark.high_watermark if hit is None else hit[0]
            new[tp] = (offset, "")
        await self.commit(group_id, None, new, session=self._token)
        return {tp: offset for tp, (offset, _) in new.items()}
