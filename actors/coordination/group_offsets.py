"""Committed offsets: plain commits, offsets sent in a transaction (held until its marker), and
reads of what a group committed."""

from __future__ import annotations

import time
from typing import Any

from ray_broker.actors.coordination.group_arguments import check_offsets
from ray_broker.actors.coordination.group_keys import decode_offset_key, offset_key, pending_key
from ray_broker.actors.coordination.group_shell import GroupCoordinatorShell
from ray_broker.errors import (
    OffsetOutOfRange,
)


class OffsetCalls(GroupCoordinatorShell):
    async def commit(
        self,
        group_id: str,
        member_id: str | None,
        offsets: dict[tuple[str, int], tuple[int, str]],
        *,
        session: str = "",
    ) -> None:
        """Durably record (offset, metadata) per partition for the group (Kafka's rule: read
        on the group and on each topic).

        Raises:
            IllegalGeneration: the member is not in the group any more (fenced zombie).
            CommitFailed: a partition is not assigned to the member.
            OffsetOutOfRange: an offset is negative or beyond the partition's log end.
            Unauthorized.
        """
        await self._access(session, "read", "group", str(group_id))
        self._start()
        group = self._group(group_id)
        check_offsets(offsets)
        for topic in {tp[0] for tp in offsets}:
            await self._access(session, "read", "topic", str(topic))
        group.check_commit(member_id, list(offsets))
        marks = await self._high_watermarks(list(offsets))
        # Again after the await: the member may have been expired or the partitions moved
        # meanwhile, and a zombie's commit must not land.
        group.check_commit(member_id, list(offsets))
        for (topic, partition), (offset, _) in offsets.items():
            # Up to the log end, not the high watermark: a leader new in its epoch relearns its
            # high watermark from the followers, so for a moment it is below what consumers
            # already read (and may commit) from the leader before.
            mark = marks[(topic, partition)]
            high = max(mark.high_watermark, mark.log_end_offset)
            if not isinstance(offset, int) or not 0 <= offset <= high:
                raise OffsetOutOfRange(
                    f"cannot commit offset {offset!r} for {topic}-{partition}: valid offsets "
                    f"are [0, {high}]",
                    topic=topic,
                    partition=partition,
                    offset=offset if isinstance(offset, int) else None,
                    log_start=0,
                    log_end=high,
                )
        documents = {}
        stamp = time.time_ns() // 1_000_000
        for (topic, partition), (offset, metadata) in offsets.items():
            document = {"offset": offset, "metadata": metadata, "timestamp": stamp}
            documents[offset_key(group_id, topic, partition)] = document
        await self._write(documents)  # durable first; only then visible
        for (topic, partition), _ in offsets.items():
            key = (group_id, topic, partition)
            self.offsets[key] = documents[offset_key(*key)]

    async def txn_commit(
        self,
        group_id: str,
        member_id: str | None,
        producer_id: int,
        offsets: dict[tuple[str, int], tuple[int, str]],
        *,
        session: str = "",
    ) -> None:
        """Stage offsets sent in a transaction: durable now, visible when the transaction
        coordinator's commit marker arrives (``end_txn``), dropped on abort.

        Raises:
            IllegalGeneration, CommitFailed, OffsetOutOfRange: as ``commit``.
        """
        await self._access(session, "read", "group", str(group_id))
        self._start()
        group = self._group(group_id)
        check_offsets(offsets)
        group.check_commit(member_id, list(offsets))
        key = (group_id, int(producer_id))
        staged = dict(self.pending.get(key, {}))
        stamp = time.time_ns() // 1_000_000
        for (topic, partition), (offset, metadata) in offsets.items():
            if not isinstance(offset, int) or offset < 0:
                raise OffsetOutOfRange(
                    f"cannot commit offset {offset!r} for {topic}-{partition}",
                    topic=topic,
                    partition=partition,
                )
            staged[offset_key(group_id, topic, partition)] = {
                "offset": offset,
                "metadata": metadata,
                "timestamp": stamp,
            }
        await self._write({pending_key(*key): staged})
        self.pending[key] = staged

    async def end_txn(
        self, group_id: str, producer_id: int, commit: bool, *, session: str = ""
    ) -> None:
        """The transaction marker for the group's offsets: apply the staged offsets (commit)
        or drop them (abort). Idempotent: the coordinator repeats it after a restart."""
        await self._internal(session, "end_txn")
        key = (group_id, int(producer_id))
        staged = self.pending.get(key)
        if staged is None:
            return
        documents: dict[str, Any] = {pending_key(*key): None}
        if commit:
            documents.update(staged)
        await self._write(documents)  # the offsets and the end of staging: one atomic write
        del self.pending[key]
        if commit:
            for encoded, document in staged.items():
                decoded = decode_offset_key(encoded)
                if decoded is not None:
                    self.offsets[decoded] = document

    async def committed(
        self,
        group_id: str,
        partitions: list[tuple[str, int]] | None = None,
        *,
        session: str = "",
    ) -> dict[tuple[str, int], int]:
        """Committed offsets of the group (for ``partitions`` or all)."""
        await self._access(session, "describe", "group", str(group_id))
        found = {
            (topic, partition): doc["offset"]
            for (group, topic, partition), doc in self.offsets.items()
            if group == group_id
        }
        if partitions is None:
            return found
        return {tuple(tp): found[tuple(tp)] for tp in partitions if tuple(tp) in found}
