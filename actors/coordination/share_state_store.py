"""Share-partition snapshots in the group coordinator's durable store (Kafka keeps them in its
``__share_group_state`` topic, written by a share coordinator).

The partition leader decides (``actors/partition/share_state.py``); it saves a snapshot here
after every acknowledgement, as a consumer-group member commits offsets, so the state outlives
the leader's process and node. Writes are fenced by leader epoch: once a newer leader of the
partition has loaded the state, a deposed leader's late save is refused. Saves arriving together
are written with one fsync (group commit), which keeps per-record acknowledgements affordable.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from ray_broker.errors import FencedLeaderEpoch, GroupNotFound

ShareKey = tuple[str, str, int]  # (group, topic, partition)


def share_key(group: str, topic: str, partition: int) -> str:
    return json.dumps({"share": [group, topic, partition]}, ensure_ascii=False)


def decode_share_key(key: str) -> ShareKey | None:
    if not key.startswith('{"share"'):
        return None
    group, topic, partition = json.loads(key)["share"]
    return group, topic, int(partition)


class ShareStateStore:
    """Snapshots by (group, topic, partition), with the leader epoch that wrote each."""

    def __init__(self, write: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._write = write
        self.documents: dict[ShareKey, dict[str, Any]] = {}
        self._pending: dict[str, Any] = {}
        self._batch: asyncio.Future[None] | None = None

    def restore(self, key: ShareKey, document: dict[str, Any]) -> None:
        self.documents[key] = document

    def load(self, key: ShareKey, epoch: int) -> tuple[int, dict[str, Any] | None]:
        """The snapshot for a leader of ``epoch`` and the epoch of the leader that last held
        it (-1: none); from now on ``epoch`` fences older leaders.

        Raises:
            FencedLeaderEpoch: a newer leader already loaded or saved it.
        """
        document = self.documents.get(key)
        self._check(key, epoch, document)
        state = document["state"] if document else None
        self.documents[key] = {"epoch": epoch, "state": state}
        return (document["epoch"] if document else -1), state

    async def save(self, key: ShareKey, epoch: int, state: dict[str, Any]) -> None:
        """Durably store ``state``. Raises FencedLeaderEpoch for a deposed leader."""
        self._check(key, epoch, self.documents.get(key))
        document = {"epoch": epoch, "state": state}
        self.documents[key] = document
        self._pending[share_key(*key)] = document
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().create_task(self._flush(self._batch))
        await asyncio.shield(self._batch)

    async def _flush(self, batch: asyncio.Future[None]) -> None:
        await asyncio.sleep(0)  # saves made in the same loop turn join this batch
        documents, self._pending, self._batch = self._pending, {}, None
        try:
            await self._write(documents)
        except BaseException as exc:
            batch.set_exception(exc)
        else:
            batch.set_result(None)

    @staticmethod
    def _check(key: ShareKey, epoch: int, document: dict[str, Any] | None) -> None:
        if document is not None and document["epoch"] > epoch:
            raise FencedLeaderEpoch(
                f"share state of {key[0]!r} on {key[1]}-{key[2]} belongs to leader epoch "
                f"{document['epoch']}, newer than {epoch}"
            )

    def groups(self) -> list[str]:
        return sorted({key[0] for key, doc in self.documents.items() if doc["state"] is not None})

    def partitions(self, group: str) -> list[tuple[str, int]]:
        """Raises GroupNotFound for a share group that never read anything."""
        found = sorted((t, p) for g, t, p in self.documents if g == group)
        if not found:
            raise GroupNotFound(f"share group {group!r} does not exist", group_id=group)
        return found

    async def delete(self, group: str) -> None:
        keys = [key for key in self.documents if key[0] == group]
        if not keys:
            raise GroupNotFound(f"share group {group!r} does not exist", group_id=group)
        await self._write({share_key(*key): None for key in keys})
        for key in keys:
            del self.documents[key]
