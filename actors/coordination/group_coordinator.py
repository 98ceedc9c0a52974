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

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import ray

from ray_broker._ray import await_ref, classify, submit
from ray_broker.actors.coordination.group import Group, Heartbeat, compile_pattern
from ray_broker.actors.coordination.share_state_store import ShareStateStore, decode_share_key
from ray_broker.actors.data_dir import internal_dir, internal_token, make_private
from ray_broker.actors.lean_arrow import skip_pandas_probe
from ray_broker.actors.metadata_store import MetadataStore
from ray_broker.actors.security.guarded import GuardedActor
from ray_broker.config import (
    CONTROLLER_NAME,
    MAX_SESSION_TIMEOUT_MS,
    MIN_SESSION_TIMEOUT_MS,
    BrokerConfig,
    parse_config,
    validate_group_id,
)
from ray_broker.errors import (
    BrokerError,
    BrokerNotRunning,
    GroupNotEmpty,
    GroupNotFound,
    InvalidConfig,
    OffsetOutOfRange,
    QuotaExceeded,
    UnknownTopicOrPartition,
)
from ray_broker.metrics import GroupMetrics
from ray_broker.structs import (
    GroupDescription,
    GroupListing,
    MemberDescription,
    PartitionLag,
    TopicMetadata,
    TopicPartition,
)

logger = logging.getLogger(__name__)

OffsetKey = tuple[str, str, int]  # (group, topic, partition)

# A call to a partition leader (for high watermarks) gives up after this long, following the
# leader through failovers meanwhile.
LEADER_CALL_TIMEOUT_S = 10.0
# How often rebalance counts and consumer lag are reported to the metrics (ray_broker.metrics).
METRICS_INTERVAL_S = 5.0
PATTERN_MAX_CHARS = 1_000
LEADER_RETRY_BACKOFF_S = 0.1


def _offset_key(group: str, topic: str, partition: int) -> str:
    """A JSON array: any group id or topic name encodes and decodes unambiguously."""
    return json.dumps([group, topic, partition], ensure_ascii=False)


def _pending_key(group: str, producer_id: int) -> str:
    """Offsets a transaction sent (``send_offsets_to_transaction``), kept until its marker."""
    return json.dumps({"txn": [group, producer_id]}, ensure_ascii=False)


def _decode_pending_key(key: str) -> tuple[str, int] | None:
    if not key.startswith('{"txn"'):
        return None
    group, producer_id = json.loads(key)["txn"]
    return group, producer_id


def _decode_offset_key(key: str) -> OffsetKey | None:
    try:
        group, topic, partition = json.loads(key)
    except ValueError:
        legacy = key.split("\x00")  # the first layout: NUL-separated
        if len(legacy) != 3 or not legacy[2].isdigit():
            return None
        group, topic, partition = legacy[0], legacy[1], int(legacy[2])
    if not (isinstance(group, str) and isinstance(topic, str) and isinstance(partition, int)):
        return None
    return group, topic, partition


def _check_join_arguments(
    member_id: object,
    instance_id: object,
    client_id: object,
    topics: object,
    pattern: object,
    strategy: object,
    session_timeout_ms: object,
) -> None:
    for name, value in (("member_id", member_id), ("group_instance_id", instance_id)):
        if value is not None and not isinstance(value, str):
            raise InvalidConfig(f"{name} must be a str or None, got {value!r}")
    if not isinstance(client_id, str):
        raise InvalidConfig(f"client_id must be a str, got {client_id!r}")
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise InvalidConfig(f"topics must be a list of str, got {topics!r}")
    if pattern is not None:
        if not isinstance(pattern, str) or len(pattern) > PATTERN_MAX_CHARS:
            raise InvalidConfig(
                f"a subscription pattern is a str of at most {PATTERN_MAX_CHARS} characters"
            )
        compile_pattern(pattern)

    if not isinstance(strategy, str):
        raise InvalidConfig(f"partition.assignment.strategy must be a str, got {strategy!r}")
    if (
        not isinstance(session_timeout_ms, int)
        or isinstance(session_timeout_ms, bool)
        or not MIN_SESSION_TIMEOUT_MS <= session_timeout_ms <= MAX_SESSION_TIMEOUT_MS
    ):
        raise InvalidConfig(
            f"session.timeout.ms must be an int in [{MIN_SESSION_TIMEOUT_MS}, "
            f"{MAX_SESSION_TIMEOUT_MS}], got {session_timeout_ms!r}"
        )


def _check_offsets(offsets: object) -> None:
    """Raises InvalidConfig / UnknownTopicOrPartition for a malformed commit request."""
    if not isinstance(offsets, dict):
        raise InvalidConfig(f"offsets must be a dict, got {type(offsets).__name__}")
    for key, value in offsets.items():
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str)):
            raise InvalidConfig(f"an offset key is (topic, partition), got {key!r}")
        partition = key[1]
        if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
            raise UnknownTopicOrPartition(f"partition {key[0]}-{partition!r} does not exist")
        if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str)):
            raise InvalidConfig(f"an offset value is (offset, metadata str), got {value!r}")


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class GroupCoordinator(GuardedActor):
    """All consumer groups of one broker namespace."""

    def __init__(self, broker_config: dict[str, Any], namespace: str) -> None:
        skip_pandas_probe()
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
            pending = _decode_pending_key(key)
            if pending is not None:
                self.pending[pending] = document
                continue
            decoded = _decode_offset_key(key)
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
                self._expire_members(_now_ms())
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
        _check_join_arguments(
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
            _now_ms(),
        )

    async def heartbeat(
        self, group_id: str, member_id: str, owned: list[tuple[str, int]], *, session: str = ""
    ) -> Heartbeat:
        await self._access(session, "read", "group", str(group_id))
        self._start()
        return self._group(group_id).heartbeat(member_id, owned, _now_ms())

    async def leave(self, group_id: str, member_id: str, *, session: str = "") -> bool:
        await self._access(session, "read", "group", str(group_id))
        group = self.groups.get(group_id)
        return group.leave(member_id) if group else False

    async def topics_changed(self, *, session: str = "") -> None:
        """The Controller's nudge after a topic was created, deleted or grown."""
        await self._internal(session, "topics_changed")
        await self._refresh_topics()

    # --- offsets --------------------------------------------------------------------------------

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
        _check_offsets(offsets)
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
            documents[_offset_key(group_id, topic, partition)] = document
        await self._write(documents)  # durable first; only then visible
        for (topic, partition), _ in offsets.items():
            key = (group_id, topic, partition)
            self.offsets[key] = documents[_offset_key(*key)]

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
        _check_offsets(offsets)
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
            staged[_offset_key(group_id, topic, partition)] = {
                "offset": offset,
                "metadata": metadata,
                "timestamp": stamp,
            }
        await self._write({_pending_key(*key): staged})
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
        documents: dict[str, Any] = {_pending_key(*key): None}
        if commit:
            documents.update(staged)
        await self._write(documents)  # the offsets and the end of staging: one atomic write
        del self.pending[key]
        if commit:
            for encoded, document in staged.items():
                decoded = _decode_offset_key(encoded)
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

    # --- administration -------------------------------------------------------------------------

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
        await self._write({_offset_key(*key): None for key in keys})
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

    # --- share groups (their state is decided by partition leaders, kept here) -----------------

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

    async def shutdown(self, *, session: str = "") -> None:
        await self._access(session, "alter", "cluster", "cluster")
        if self._background is not None:
            self._background.cancel()
        self.store.close()
