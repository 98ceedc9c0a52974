"""The public consumer: subscribe or assign, poll records, seek, commit.

It is assembled from one piece per concept: ``SubscriptionState`` (positions and buffered
slices, plain), ``Fetcher`` (the fetches in flight, Ray), ``GroupMembership`` (joining and
heartbeats) and ``records`` (Arrow slices into ``Record`` objects or one table).
``poll_arrow()`` hands out slices without building a Python object per record.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from ray_broker._ray import classify, resolve, retrying, submit
from ray_broker.config import ConsumerConfig, client_config, validate_group_id
from ray_broker.consumer.fetcher import Fetcher
from ray_broker.consumer.group_member import ConsumerRebalanceListener, GroupMembership
from ray_broker.consumer.records import decode, to_arrow
from ray_broker.consumer.subscription_state import SubscriptionState
from ray_broker.errors import (
    BrokerError,
    ConsumerClosed,
    InvalidConfig,
    NoOffsetForPartition,
    OffsetOutOfRange,
    SerializationError,
    UnknownTopicOrPartition,
)
from ray_broker.filter_syntax import compile_filter
from ray_broker.metadata import MetadataCache
from ray_broker.storage.record_filter import RecordFilter
from ray_broker.structs import OffsetAndTimestamp, PartitionOffsets, Record, TopicPartition

logger = logging.getLogger(__name__)


class Consumer:
    """Reads records from assigned partitions. Not thread-safe, like kafka-python's.

    With ``group_id``, ``subscribe()`` joins the consumer group: the group's partitions are
    shared among its members, offsets are committed to the group (automatically every
    ``auto_commit_interval_ms`` by default) and a restarted member resumes where the group left
    off. Without it, ``subscribe()`` reads every partition and commits nothing.
    """

    def __init__(
        self,
        metadata: MetadataCache,
        topics: Sequence[str] = (),
        coordinator: Any = None,
        **options: Any,
    ) -> None:
        # The filter is no config value: a pyarrow expression or a filter string, checked now.
        self.filter: RecordFilter | None = compile_filter(options.pop("filter", None))
        self.config: ConsumerConfig = client_config(ConsumerConfig, options)
        if self.config.group_id is not None:
            validate_group_id(self.config.group_id)
        self._metadata = metadata
        self._coordinator = coordinator
        self._membership: GroupMembership | None = None
        self._subscriptions = SubscriptionState()
        self._fetcher = Fetcher(
            metadata, self.config, self._subscriptions, self._reset, self.filter
        )
        self._last_auto_commit = time.monotonic()
        self._closed = False
        if topics:
            self.subscribe(topics)

    # --- assignment -----------------------------------------------------------------------------

    def subscribe(
        self,
        topics: Sequence[str] | str = (),
        pattern: str | None = None,
        listener: ConsumerRebalanceListener | None = None,
    ) -> None:
        """Consume ``topics`` (or every topic whose name fully matches ``pattern``).

        With a ``group_id`` the group shares the partitions (the assignment arrives in
        ``poll()``, with ``listener`` told of every change, and topics created later that match
        ``pattern`` join in); without one, every partition is read and nothing is committed.

        Raises:
            TopicNotFound: a listed topic does not exist.
            InvalidConfig: neither or both of topics and pattern, or a bad pattern.
        """
        names = [topics] if isinstance(topics, str) else list(topics)
        if bool(names) == (pattern is not None):
            raise InvalidConfig("subscribe() takes topics or a pattern, not both or neither")
        if pattern is not None:
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise InvalidConfig(f"bad subscription pattern {pattern!r}: {exc}") from None
        for name in names:
            self._metadata.topic(name)  # TopicNotFound now, not in a later poll
        self._check_open()
        if self.config.group_id is not None:
            self._subscriptions.assign([])  # fetches in flight are dropped, answers ignored
            if self._membership is not None:
                self._membership.close(leave=True)
            self._membership = GroupMembership(
                self._coordinator, self.config, names, pattern, listener
            )
            return
        if pattern is not None:
            names = [n for n in self._metadata.topic_names() if regex.fullmatch(n)]
        self.assign(
            [
                TopicPartition(name, p)
                for name in names
                for p in range(self._metadata.topic(name).num_partitions)
            ]
        )

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions from now on.

        Raises:
            UnknownTopicOrPartition: a partition does not exist.
        """
        self._check_open()
        if self._membership is not None:
            raise InvalidConfig(
                "assign() cannot be mixed with a group subscription; call unsubscribe() first"
            )
        wanted = [TopicPartition(*tp) for tp in partitions]
        for tp in wanted:
            if not 0 <= tp.partition < self._metadata.topic(tp.topic).num_partitions:
                raise UnknownTopicOrPartition(
                    f"{tp.topic}-{tp.partition} does not exist",
                    topic=tp.topic,
                    partition=tp.partition,
                )
        self._subscriptions.assign(wanted)

    def assignment(self) -> set[TopicPartition]:
        return self._subscriptions.assigned()

    def unsubscribe(self) -> None:
        if self._membership is not None:
            self._commit_quietly(self._subscriptions.assigned())
            self._membership.close(leave=True)
            self._membership = None
        self.assign([])

    # --- positions ------------------------------------------------------------------------------

    def _offsets(self, tp: TopicPartition) -> PartitionOffsets:
        """The partition's offsets from its current leader, following a failover.

        Raises:
            BrokerError: no leader answered within request.timeout.ms.
        """
        return self._fetcher.leader_call(tp, "offsets")

    def _end(self, offsets: PartitionOffsets) -> int:
        """Where reading ends for this consumer: the last stable offset for read_committed
        (an open transaction's first record), else the high watermark."""
        if self.config.isolation_level == "read_committed" and offsets.last_stable_offset >= 0:
            return offsets.last_stable_offset
        return offsets.high_watermark

    def _move(self, tp: TopicPartition, offset: int) -> None:
        self._subscriptions.move(tp, offset)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` next.

        Raises:
            OffsetOutOfRange: ``offset`` is below the log start or beyond the log end.
            InvalidConfig: ``offset`` is not an int.
        """
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise InvalidConfig(f"seek needs an int offset, got {offset!r}")
        offsets = self._offsets(tp)
        if not offsets.log_start_offset <= offset <= offsets.high_watermark:
            raise OffsetOutOfRange(
                f"cannot seek {tp.topic}-{tp.partition} to {offset}: valid offsets are "
                f"[{offsets.log_start_offset}, {offsets.high_watermark}]",
                topic=tp.topic,
                partition=tp.partition,
                offset=offset,
                log_start=offsets.log_start_offset,
                log_end=offsets.high_watermark,
            )
        self._move(tp, offset)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self._subscriptions.assigned()):
            self._move(tp, self._offsets(tp).log_start_offset)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self._subscriptions.assigned()):
            self._move(tp, self._end(self._offsets(tp)))

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record ``poll`` returns for ``tp``."""
        state = self._subscriptions.state(tp)
        if state.position is None:
            self._reset(tp)
        assert state.position is not None
        return state.position

    def _reset(self, tp: TopicPartition, cause: BrokerError | None = None) -> None:
        if cause is None and self.config.group_id is not None:
            committed = self.committed(tp)
            if committed is not None:
                self._move(tp, committed)
                return
        policy = self.config.auto_offset_reset
        if policy == "none":
            if cause is not None:
                raise cause
            raise NoOffsetForPartition(
                f"{tp.topic}-{tp.partition} has no committed offset in group "
                f"{self.config.group_id!r} and auto_offset_reset='none'",
                topic=tp.topic,
                partition=tp.partition,
            )
        offsets = self._offsets(tp)
        self._move(tp, offsets.log_start_offset if policy == "earliest" else self._end(offsets))

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {TopicPartition(*tp): self._offsets(tp).log_start_offset for tp in partitions}

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The high watermark per partition, or the last stable offset for read_committed."""
        return {TopicPartition(*tp): self._end(self._offsets(tp)) for tp in partitions}

    def group_metadata(self) -> dict[str, str | None]:
        """This member's group identity, for ``producer.send_offsets_to_transaction``."""
        member = self._membership.member_id if self._membership is not None else None
        return {"group_id": self.config.group_id, "member_id": member}

    def partitions_for_topic(self, topic: str) -> set[int]:
        """The topic's partition numbers (kafka-python's ``partitions_for_topic``).

        Raises:
            TopicNotFound, Unauthorized.
        """
        return set(range(self._metadata.topic(topic).num_partitions))

    def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """The earliest offset per partition whose timestamp is >= the given ms timestamp."""
        found = {
            TopicPartition(*tp): self._fetcher.leader_call(
                TopicPartition(*tp), "offset_for_time", ts
            )
            for tp, ts in timestamps.items()
        }
        return {tp: None if hit is None else OffsetAndTimestamp(*hit) for tp, hit in found.items()}

    # --- fetching -------------------------------------------------------------------------------

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        """Records per partition, waiting up to ``timeout_ms`` for the first one.

        Raises:
            OffsetOutOfRange: a position fell out of the log and auto_offset_reset='none'.
            ConsumerClosed: the consumer was closed.
        """
        slices = self._poll_slices(timeout_ms, max_records or self.config.max_poll_records)
        out: dict[TopicPartition, list[Record]] = {}
        failure: SerializationError | None = None
        for tp, table in slices:
            records, failed_at = decode(
                tp, table, self.config.key_deserializer, self.config.value_deserializer
            )
            if failed_at is not None:
                # The position stays at the bad record: what came before it is returned now,
                # the bad record raises (on the next poll if others are returned now).
                offset, error = failed_at
                self._move(tp, offset)
                failure = failure or error
            if records:
                out[tp] = records
        if failure is not None and not out:
            raise failure
        return out

    def poll_arrow(self, timeout_ms: int = 0, max_records: int = 100_000) -> pa.Table:
        """Records as one Arrow table with ``topic`` and ``partition`` columns; no per-record
        Python objects. Empty (with the same columns) if nothing arrived in ``timeout_ms``."""
        return to_arrow(self._poll_slices(timeout_ms, max_records))

    def __iter__(self) -> Iterator[Record]:
        """Records one at a time; the position only passes records actually handed out, so a
        ``break`` leaves the rest to the next poll (and out of the next commit)."""
        timeout_ms = self.config.consumer_timeout_ms
        while True:
            batch = self.poll(timeout_ms=timeout_ms if timeout_ms >= 0 else 1_000)
            if not batch and timeout_ms >= 0:
                return
            unread = {tp: records[0].offset for tp, records in batch.items()}
            try:
                for tp, records in batch.items():
                    for record in records:
                        unread[tp] = record.offset + 1
                        yield record
                    del unread[tp]
            finally:
                for tp, offset in unread.items():  # only left on an early exit
                    if tp in self._subscriptions.partitions:
                        self._move(tp, offset)

    def _poll_slices(
        self, timeout_ms: int, max_records: int
    ) -> list[tuple[TopicPartition, pa.Table]]:
        self._check_open()
        self._maybe_auto_commit()
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000
        while True:
            self._sync_group()
            self._fetcher.send_fetches()
            slices = self._subscriptions.drain(max_records)
            if slices:
                # The next fetch waits at the partition while the application works: a record
                # appended meanwhile is answered at once, not after the next poll() + a trip.
                self._fetcher.send_fetches()
                return slices
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return slices
            if self._membership is not None:  # wake up for rebalances, not only for records
                remaining = min(remaining, self.config.heartbeat_interval_ms / 1000)
            self._fetcher.await_fetches(remaining)

    # --- groups and commits ---------------------------------------------------------------------

    def _sync_group(self) -> None:
        if self._membership is None:
            return
        revoked, assigned = self._membership.reconcile(self._commit_before_revoke)
        for tp in revoked:
            self._subscriptions.remove(tp)
        for tp in assigned:
            self._subscriptions.add(tp)

    def _commit_before_revoke(self, partitions: set[TopicPartition]) -> None:
        if self.config.enable_auto_commit:
            self._commit_quietly(partitions)

    def _commit_quietly(self, partitions: set[TopicPartition]) -> None:
        try:
            self.commit(self._positions(partitions))
        except BrokerError as exc:
            logger.warning("auto-commit for group %s failed: %s", self.config.group_id, exc)

    def _maybe_auto_commit(self) -> None:
        if self.config.group_id is None or not self.config.enable_auto_commit:
            return
        if time.monotonic() - self._last_auto_commit < self.config.auto_commit_interval_ms / 1000:
            return
        self._last_auto_commit = time.monotonic()
        self._commit_quietly(self._subscriptions.assigned())

    def _positions(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return self._subscriptions.positions(partitions)

    def _group_id(self) -> str:
        if self.config.group_id is None:
            raise InvalidConfig("commits need a group_id; create the consumer with group_id=...")
        return self.config.group_id

    def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` (default: the current positions) to the group, synchronously.

        An offset is the next one to read, as in Kafka: commit ``record.offset + 1``.

        Raises:
            InvalidConfig: the consumer has no group_id.
            CommitFailed: a partition is not assigned to this member (a rebalance moved it).
            IllegalGeneration: this member was removed from the group (fenced).
            OffsetOutOfRange: an offset is beyond the partition's end.
        """
        chosen = (
            self._positions(self._subscriptions.assigned()) if offsets is None else dict(offsets)
        )
        self._coordinator_call(lambda: self._commit_ref(chosen))

    def _coordinator_call(self, submit_call: Callable[[], Any]) -> Any:
        """Send a request to the group coordinator, retrying while it or a partition it asks
        is restarting (commits are idempotent), for request.timeout.ms."""
        timeout_s = self.config.request_timeout_ms / 1000
        deadline = time.monotonic() + timeout_s
        return retrying(
            lambda: resolve(submit_call(), max(deadline - time.monotonic(), 0.001)),
            deadline,
            self.config.retry_backoff_ms / 1000,
        )

    def commit_async(
        self,
        offsets: dict[TopicPartition, int] | None = None,
        callback: Callable[[dict[TopicPartition, int], BrokerError | None], None] | None = None,
    ) -> None:
        """Commit without waiting; ``callback(offsets, error)`` runs when the answer arrives."""
        chosen = (
            self._positions(self._subscriptions.assigned()) if offsets is None else dict(offsets)
        )
        try:
            ref = self._commit_ref(chosen)
        except BrokerError as exc:
            if callback is not None:
                callback(chosen, exc)
            return

        def done(fut: Any) -> None:
            try:
                fut.result()
                error = None
            except Exception as exc:  # Ray's types; classify() maps them to BrokerError
                error = classify(exc)
            if callback is not None:
                callback(chosen, error)

        ref.future().add_done_callback(done)

    def _commit_ref(self, offsets: dict[TopicPartition, int] | None) -> Any:
        group_id = self._group_id()
        chosen = (
            self._positions(self._subscriptions.assigned()) if offsets is None else dict(offsets)
        )
        member = self._membership.member_id if self._membership is not None else None
        payload = {(tp[0], tp[1]): (offset, "") for tp, offset in chosen.items()}
        return submit(self._coordinator.commit, group_id, member, payload)

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for ``tp`` (None if it has none)."""
        group_id = self._group_id()
        found = self._coordinator_call(
            lambda: submit(self._coordinator.committed, group_id, [(tp[0], tp[1])])
        )
        return found.get((tp[0], tp[1]))

    # --- lifecycle ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConsumerClosed("this consumer was closed")

    def close(self) -> None:
        """Commit (with auto-commit), leave the group, stop fetching."""
        if self._closed:
            return
        if self._membership is not None:
            if self.config.enable_auto_commit:
                self._commit_quietly(self._subscriptions.assigned())
            self._membership.close(leave=True)
            self._membership = None
        # Fetches still parked at their leaders end there within fetch.max.wait.ms; nothing
        # waits for them here.
        self._subscriptions.assign([])
        self._closed = True

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
