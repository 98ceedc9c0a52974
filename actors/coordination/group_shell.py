"""What every group of the group coordinator's calls shares: its groups and their durable
store, topic metadata from the Controller, partition leaders' high watermarks (for lag), and
the housekeeping loop that expires silent members and reports metrics.

The calls are grouped over this shell: ``group_offsets.py`` (commits, transactional offsets),
``group_admin.py`` (list, describe, delete, reset), ``share_state_calls.py`` (share-group
snapshots) and ``group_coordinator.py`` (membership), which joins them into the actor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import ray

from ray_broker._ray import await_ref, classify, submit
from ray_broker.actors.coordination.group import Group
from ray_broker.actors.coordination.group_keys import (
    OffsetKey,
    decode_offset_key,
    decode_pending_key,
)
from ray_broker.actors.coordination.share_state_store import ShareStateStore, decode_share_key
from ray_broker.actors.data_dir import internal_dir, internal_token, make_private
from ray_broker.actors.lean_arrow import skip_pandas_probe
from ray_broker.actors.metadata_store import MetadataStore
from ray_broker.actors.security.guarded import GuardedActor
from ray_broker.config import (
    CONTROLLER_NAME,
    BrokerConfig,
    parse_config,
    validate_group_id,
)
from ray_broker.errors import (
    BrokerError,
    BrokerNotRunning,
    QuotaExceeded,
    UnknownTopicOrPartition,
)
from ray_broker.gc_pause import freeze_loaded_heap
from ray_broker.metrics import GroupMetrics
from ray_broker.structs import (
    TopicMetadata,
)

logger = logging.getLogger(__name__)


# A call to a partition leader (for high watermarks) gives up after this long, following the
# leader through failovers meanwhile.
LEADER_CALL_TIMEOUT_S = 10.0
# How often rebalance counts and consumer lag are reported to the metrics (ray_broker.metrics).
METRICS_INTERVAL_S = 5.0
LEADER_RETRY_BACKOFF_S = 0.1


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class GroupCoordinatorShell(GuardedActor):
    """The state under every call group (see the module docstring)."""

    def __init__(self, broker_config: dict[str, Any], namespace: str) -> None:
        skip_pandas_probe()
        freeze_loaded_heap()
        self.config: BrokerConfig = parse_config(BrokerConfig, broker_config)
        self.namespace = namespace
        make_private()
        self.store = MetadataStore(internal_dir(Path(self.config.data_dir), "consumer_offsets"))
        self.offsets: dict[OffsetKey, dict[str, Any]] = {}
        # (group, producer id) -> offsets of an open transaction, applied by its commit marker.
        self.pending: dict[tuple[str, int], dict[str, Any]] = {}
        self.shares = ShareStateStore(self._write)
        for key, document in self.store.load().items():
            shared = decode_share_key(key)
            if shared is not None:
                self.shares.restore(shared, document)
                continue
            pending = decode_pending_key(key)
            if pending is not None:
                self.pending[pending] = document
                continue
            decoded = decode_offset_key(key)
            if decoded is None:  # written by an older version or damaged: skip, keep serving
                logger.warning("ignoring undecodable committed-offset key %r", key)
                continue
            self.offsets[decoded] = document
        self.groups: dict[str, Group] = {}
        self.partitions: dict[str, int] = {}
        self._topics: dict[str, TopicMetadata] = {}
        self._background: asyncio.Task[None] | None = None
        self._store_lock: asyncio.Lock | None = None
        self._metrics = GroupMetrics()
        self._generations: dict[str, int] = {}  # last seen, to count rebalances
        self._token = internal_token(Path(self.config.data_dir))
        self._init_guard(self._token, self._controller)

    async def _write(self, documents: dict[str, Any]) -> None:
        """Durably write offsets on a worker thread (each write is fsynced, and every
        thousandth compacts), in call order, so heartbeats never wait behind the disk."""
        if self._store_lock is None:
            self._store_lock = asyncio.Lock()
        async with self._store_lock:
            await asyncio.to_thread(self.store.put_many, documents)

    # --- topic metadata -------------------------------------------------------------------------

    def _controller(self) -> Any:
        return ray.get_actor(CONTROLLER_NAME, namespace=self.namespace)

    async def _refresh_topics(self) -> None:
        partitions = await self._controller().topic_partitions.remote(session=self._token)
        if partitions != self.partitions:
            self._topics = {
                name: meta
                for name, meta in self._topics.items()
                if partitions.get(name) == meta.num_partitions
            }
            self.partitions = partitions
        for group in self.groups.values():
            group.update_partitions(self.partitions)

    async def _topic(self, name: str) -> TopicMetadata:
        meta = self._topics.get(name)
        if meta is None:
            ref = submit(
                self._controller().metadata, name, unavailable=BrokerNotRunning, session=self._token
            )
            meta = await await_ref(ref, LEADER_CALL_TIMEOUT_S, BrokerNotRunning)
            self._topics[name] = meta
        return meta

    async def _high_watermarks(
        self, partitions: list[tuple[str, int]]
    ) -> dict[tuple[str, int], Any]:
        """Offsets of each partition from its current leader.

        Leader handles are cached per topic; a failover makes a cached one dead or demoted,
        so on a retriable failure the topic's metadata is fetched again and the call retried
        (a demoted follower answers ``NotLeader``, never a stale, lower high watermark).

        Raises:
            TopicNotFound: a partition does not exist.
            PartitionUnavailable: a leader stayed unreachable for ``LEADER_CALL_TIMEOUT_S``.
        """
        deadline = time.monotonic() + LEADER_CALL_TIMEOUT_S
        while True:
            try:
                return await self._high_watermarks_once(partitions)
            except BrokerError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                for topic, _ in partitions:
                    self._topics.pop(topic, None)
                await asyncio.sleep(LEADER_RETRY_BACKOFF_S)

    async def _high_watermarks_once(
        self, partitions: list[tuple[str, int]]
    ) -> dict[tuple[str, int], Any]:
        calls = {}
        for topic, partition in partitions:
            meta = await self._topic(topic)
            if partition >= meta.num_partitions:
                raise UnknownTopicOrPartition(f"partition {topic}-{partition} does not exist")
            calls[(topic, partition)] = self._leader_call(meta, partition, "offsets")
        found = await asyncio.gather(*calls.values())
        return dict(zip(calls, found, strict=True))

    async def _leader_call(
        self, meta: TopicMetadata, partition: int, method: str, *args: Any
    ) -> Any:
        ref = submit(getattr(meta.leader(partition), method), *args, session=self._token)
        return await await_ref(ref, LEADER_CALL_TIMEOUT_S)

    def _start(self) -> None:
        if self._background is None:
            self._background = asyncio.get_running_loop().create_task(self._housekeeping())

    async def _housekeeping(self) -> None:
        """Expire sessions and follow topic changes; survives any error (sessions must keep
        expiring, or a dead member holds its partitions forever)."""
        last_refresh = last_metrics = 0.0
        while True:
            await asyncio.sleep(self.config.group_check_interval_ms / 1000)
            try:
                self._expire_members(now_ms())
                if time.monotonic() - last_refresh >= self.config.group_metadata_refresh_ms / 1000:
                    last_refresh = time.monotonic()
                    await self._refresh_topics()
                if time.monotonic() - last_metrics >= METRICS_INTERVAL_S:
                    last_metrics = time.monotonic()
                    await self._report_metrics()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the Controller may be restarting; next round retries
                logger.warning("group housekeeping round failed: %s", classify(exc))

    async def _report_metrics(self) -> None:
        """Rebalances (new generations since the last report) and lag per committed partition."""
        for group_id, group in self.groups.items():
            seen = self._generations.get(group_id, group.generation)
            for _ in range(max(group.generation - seen, 0)):
                self._metrics.rebalanced(group_id)
            self._generations[group_id] = group.generation
        committed = [
            (key, doc)
            for key, doc in self.offsets.items()
            if key[2] < self.partitions.get(key[1], 0)
        ]
        if not committed:
            return
        marks = await self._high_watermarks(sorted({(key[1], key[2]) for key, _ in committed}))
        for (group_id, topic, partition), document in committed:
            mark = marks.get((topic, partition))
            if mark is not None and mark.high_watermark >= 0:
                lag = max(mark.high_watermark - document["offset"], 0)
                self._metrics.lagging(group_id, topic, partition, lag)

    def _expire_members(self, now_ms: int) -> None:
        committed = {key[0] for key in self.offsets}
        for group_id in [g for g, group in self.groups.items() if not group.members]:
            if group_id not in committed:
                del self.groups[group_id]  # nothing left to remember: bounded by live groups
        for group in self.groups.values():
            try:
                for member_id in group.expire(now_ms):
                    logger.info("group %s: member %s timed out", group.group_id, member_id)
            except Exception:  # one broken group must not stop the others' expiry
                logger.exception("expiring members of group %s failed", group.group_id)

    def _group(self, group_id: str) -> Group:
        validate_group_id(group_id)
        group = self.groups.get(group_id)
        if group is None:
            if len(self.groups) >= self.config.group_max_count:
                raise QuotaExceeded(
                    f"the broker holds {len(self.groups)} consumer groups "
                    f"(group.max.count={self.config.group_max_count}); delete unused groups"
                )
            group = self.groups[group_id] = Group(group_id)
            group.update_partitions(self.partitions)
        return group

    def _known(self, group_id: str) -> Group | None:
        """The group if it has members or committed offsets."""
        group = self.groups.get(group_id)
        if group is not None and group.members:
            return group
        if any(key[0] == group_id for key in self.offsets):
            return group or self._group(group_id)
        return None
