"""A share-group member (Kafka's ``KafkaShareConsumer``, KIP-932): queue semantics on a topic.

Every member of a share group reads every partition; each partition's leader hands a record to
one member at a time under a lock (``share.record.lock.duration.ms``) and counts its deliveries.
The member answers per record — accept, release (deliver again) or reject (dead-letter) — and a
record whose lock runs out (its member died or stalled) is delivered again. So members come and
go without rebalancing, and a slow record never holds up the others.

One fetch is kept in flight per partition (a long poll parked at the leader); acknowledgements
are sent with ``commit_sync``/``commit_async``, at the next ``poll()`` and at ``close()``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import ray

from ray_broker._ray import classify, resolve, submit
from ray_broker.config import ShareConsumerConfig, client_config, validate_group_id
from ray_broker.consumer.records import decode, to_arrow
from ray_broker.errors import BrokerError, ConsumerClosed, InvalidConfig, InvalidRecordState
from ray_broker.filter_syntax import compile_filter
from ray_broker.metadata import MetadataCache
from ray_broker.storage.ipc import from_ipc
from ray_broker.storage.record_filter import RecordFilter
from ray_broker.structs import AcknowledgeType, ShareRecord, TopicPartition

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 5.0
ACK_ATTEMPTS = 3
METADATA_REFRESH_S = 5.0

AckBuffer = dict[tuple[AcknowledgeType, str | None], list[int]]


class ShareConsumer:
    """See the module docstring. Not thread-safe, like ``Consumer``.

    Raises (from the constructor):
        InvalidConfig: a bad option (``group_id`` is required).
        TopicNotFound: a topic does not exist.
    """

    def __init__(self, metadata: MetadataCache, topics: Sequence[str] = (), **options: Any) -> None:
        if options.get("group_id") is None and options.get("group.id") is None:
            raise InvalidConfig("a share consumer needs a group_id")
        # The group's filter (its members pass the same one), checked now.
        self.filter: RecordFilter | None = compile_filter(options.pop("filter", None))
        self.config: ShareConsumerConfig = client_config(ShareConsumerConfig, options)
        validate_group_id(self.config.group_id)
        self.member_id = f"{self.config.client_id}-{uuid.uuid4().hex}"
        self._metadata = metadata
        self._topics: list[str] = []
        self._partitions: list[TopicPartition] = []
        self._partitions_at = 0.0
        self._fetches: dict[Any, TopicPartition] = {}  # ref -> partition
        self._fetching: set[TopicPartition] = set()
        self._retry_at: dict[TopicPartition, float] = {}
        self._delivered: dict[TopicPartition, dict[int, int]] = defaultdict(dict)
        self._acks: dict[TopicPartition, AckBuffer] = defaultdict(lambda: defaultdict(list))
        # Acknowledgement requests awaiting answers: (ref, partition, entries, attempt).
        self._sent: list[tuple[Any, TopicPartition, list[Any], int]] = []
        self._closed = False
        if topics:
            self.subscribe(topics)

    @property
    def group_id(self) -> str:
        return self.config.group_id

    def subscribe(self, topics: Sequence[str] | str) -> None:
        """Read ``topics`` (replacing the previous ones). Raises TopicNotFound."""
        self._check_open()
        names = [topics] if isinstance(topics, str) else list(topics)
        if not names:
            raise InvalidConfig("subscribe() needs at least one topic")
        for name in names:
            self._metadata.topic(name)
        self._topics = names
        self._partitions_at = 0.0

    def subscription(self) -> set[str]:
        return set(self._topics)

    def _current_partitions(self) -> list[TopicPartition]:
        if time.monotonic() - self._partitions_at > METADATA_REFRESH_S:
            self._partitions = [
                TopicPartition(name, p)
                for name in self._topics
                for p in range(self._metadata.topic(name).num_partitions)
            ]
            self._partitions_at = time.monotonic()
        return self._partitions

    # --- delivery -------------------------------------------------------------------------------

    def poll(self, timeout_ms: int = 0) -> dict[TopicPartition, list[ShareRecord]]:
        """Records delivered to this member, waiting up to ``timeout_ms`` for the first.

        In implicit mode the records of the previous poll that were not acknowledged are
        accepted first.

        Raises:
            ConsumerClosed; InvalidConfig (not subscribed); a non-retriable BrokerError.
        """
        out: dict[TopicPartition, list[ShareRecord]] = {}
        for tp, table in self._poll_slices(timeout_ms):
            self._decode(tp, table, out)
        return out

    def poll_arrow(self, timeout_ms: int = 0) -> pa.Table:
        """``poll()`` as one ``pyarrow.Table`` (``topic, partition, offset, timestamp, key,
        value, headers, delivery_count``) without a Python object per record; deserializers
        are not applied. Answer with ``acknowledge_batch``.

        Raises:
            as ``poll()``.
        """
        slices = self._poll_slices(timeout_ms)
        table = to_arrow(slices)
        counts = [piece.column("delivery_count") for _, piece in slices]
        column = pa.chunked_array([c for part in counts for c in part.chunks], pa.int32())
        return table.append_column("delivery_count", column)

    def _poll_slices(self, timeout_ms: int) -> list[tuple[TopicPartition, pa.Table]]:
        """The tables delivered to this member, per partition, waiting up to ``timeout_ms``."""
        self._check_open()
        if not self._topics:
            raise InvalidConfig("subscribe() to a topic before poll()")
        self._acknowledge_implicitly()
        self._send_acknowledgements()
        self._collect_acknowledgements(wait_s=0)
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000
        out: list[tuple[TopicPartition, pa.Table]] = []
        while True:
            self._send_fetches()
            remaining = deadline - time.monotonic()
            ready = self._wait(max(remaining, 0))
            for ref in ready:
                received = self._receive(ref)
                if received is not None:
                    out.append(received)
            if out or remaining <= 0:
                return out

    def _send_fetches(self) -> None:
        config = self.config
        now = time.monotonic()
        for tp in self._current_partitions():
            if tp in self._fetching or self._retry_at.get(tp, 0) > now:
                continue
            try:
                ref = submit(
                    self._metadata.topic(tp.topic).leader(tp.partition).share_fetch,
                    config.group_id,
                    self.member_id,
                    config.max_poll_records,
                    config.fetch_max_wait_ms,
                    config.auto_offset_reset,
                    self.filter,
                    config.client_id,
                )
            except BrokerError as exc:
                self._failed(tp, exc)
                continue
            self._fetches[ref] = tp
            self._fetching.add(tp)

    def _wait(self, timeout_s: float) -> list[Any]:
        if not self._fetches:
            time.sleep(min(timeout_s, self.config.retry_backoff_ms / 1000))
            return []
        refs = list(self._fetches)
        try:
            ready, _ = ray.wait(refs, num_returns=1, timeout=timeout_s)
            if ready:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        except Exception as exc:  # Ray's own failure: send these fetches again
            logger.warning("waiting for share fetches failed: %s", classify(exc))
            for ref, tp in list(self._fetches.items()):
                self._forget_fetch(ref, tp)
            return []
        return ready

    def _forget_fetch(self, ref: Any, tp: TopicPartition) -> None:
        self._fetches.pop(ref, None)
        self._fetching.discard(tp)

    def _receive(self, ref: Any) -> tuple[TopicPartition, pa.Table] | None:
        """A share fetch's records (now held by this member), or None."""
        tp = self._fetches[ref]
        self._forget_fetch(ref, tp)
        try:
            response = resolve(ref)
        except BrokerError as exc:
            self._failed(tp, exc)
            return None
        if not response.num_records:
            return None
        table = from_ipc(response.records_ipc)
        self._delivered[tp].update(
            zip(
                table.column("offset").to_pylist(),
                table.column("delivery_count").to_pylist(),
                strict=True,
            )
        )
        return tp, table

    def _decode(
        self, tp: TopicPartition, table: pa.Table, out: dict[TopicPartition, list[ShareRecord]]
    ) -> None:
        counts = table.column("delivery_count").to_pylist()
        records, failed_at = decode(
            tp, table, self.config.key_deserializer, self.config.value_deserializer
        )
        out.setdefault(tp, []).extend(
            ShareRecord(*record, count) for record, count in zip(records, counts, strict=False)
        )
        if failed_at is not None:
            # A record that cannot be deserialized can never be processed: it is rejected (to
            # the dead-letter topic) rather than delivered until its count runs out; the records
            # after it in this batch are released for the next poll.
            offset, error = failed_at
            self._acks[tp][(AcknowledgeType.REJECT, str(error))].append(offset)
            rest = table.column("offset").to_pylist()[len(records) + 1 :]
            if rest:
                self._acks[tp][(AcknowledgeType.RELEASE, None)].extend(rest)
            delivered = self._delivered[tp]
            for answered in (offset, *rest):  # answered here, never by the application
                delivered.pop(answered, None)
            logger.warning("%s; rejected it", error)

    def _failed(self, tp: TopicPartition, error: BrokerError) -> None:
        if not error.retriable:
            raise error
        self._metadata.forget(tp.topic)
        self._partitions_at = 0.0
        self._retry_at[tp] = time.monotonic() + self.config.retry_backoff_ms / 1000

    # --- acknowledgement ------------------------------------------------------------------------

    def acknowledge(
        self,
        record: ShareRecord,
        type: AcknowledgeType | str = AcknowledgeType.ACCEPT,  # noqa: A002 - Kafka's name
        error: str | None = None,
    ) -> None:
        """Answer for one delivered record; sent with the next commit or poll. ``error`` (with
        release or reject) is kept in the dead-letter record's ``dlq.error`` header.

        Raises:
            InvalidRecordState: the record was not delivered to this member, or was answered.
            InvalidConfig: an unknown acknowledgement type.
        """
        kind = _acknowledge_type(type)
        tp = TopicPartition(record.topic, record.partition)
        if self._delivered[tp].pop(record.offset, None) is None:
            raise self._not_held(tp, [record.offset])
        self._acks[tp][(kind, error)].append(record.offset)

    def acknowledge_batch(
        self,
        table: pa.Table,
        type: AcknowledgeType | str = AcknowledgeType.ACCEPT,  # noqa: A002 - Kafka's name
        error: str | None = None,
    ) -> None:
        """``acknowledge`` every record of a ``poll_arrow()`` table (its ``topic``,
        ``partition`` and ``offset`` columns) with one answer.

        Raises:
            InvalidRecordState: a record not held by this member (none is answered then).
            InvalidConfig: an unknown acknowledgement type.
        """
        kind = _acknowledge_type(type)
        places = zip(
            table.column("topic").to_pylist(),
            table.column("partition").to_pylist(),
            table.column("offset").to_pylist(),
            strict=True,
        )
        by_partition: dict[TopicPartition, list[int]] = defaultdict(list)
        for topic, partition, offset in places:
            by_partition[TopicPartition(topic, partition)].append(offset)
        for tp, offsets in by_partition.items():
            missing = [o for o in offsets if o not in self._delivered[tp]]
            if missing:
                raise self._not_held(tp, missing)
        for tp, offsets in by_partition.items():
            delivered = self._delivered[tp]
            for offset in offsets:
                del delivered[offset]
            self._acks[tp][(kind, error)].extend(offsets)

    def _not_held(self, tp: TopicPartition, offsets: list[int]) -> InvalidRecordState:
        return InvalidRecordState(
            f"{tp.topic}-{tp.partition} offsets {offsets[:10]} are not held by this member "
            "(never delivered to it, or already acknowledged)",
            group_id=self.config.group_id,
            topic=tp.topic,
            partition=tp.partition,
            offsets=offsets,
        )

    def _acknowledge_implicitly(self) -> None:
        if self.config.share_acknowledgement_mode != "implicit":
            return
        for tp, delivered in self._delivered.items():
            if delivered:
                self._acks[tp][(AcknowledgeType.ACCEPT, None)].extend(delivered)
                delivered.clear()

    def _send_acknowledgements(self) -> None:
        for tp, buffer in list(self._acks.items()):
            if not buffer:
                continue
            entries = [(offsets, kind.value, error) for (kind, error), offsets in buffer.items()]
            if self._submit_acknowledgements(tp, entries, attempt=1):
                buffer.clear()

    def _submit_acknowledgements(
        self, tp: TopicPartition, entries: list[tuple[list[int], str, str | None]], attempt: int
    ) -> bool:
        try:
            ref = submit(
                self._metadata.topic(tp.topic).leader(tp.partition).share_acknowledge,
                self.config.group_id,
                self.member_id,
                entries,
            )
        except BrokerError as exc:
            if not exc.retriable:
                raise
            self._metadata.forget(tp.topic)
            return False  # kept: sent again with the next poll or commit
        self._sent.append((ref, tp, entries, attempt))
        return True

    def _collect_acknowledgements(self, wait_s: float | None) -> list[InvalidRecordState]:
        """Answers to acknowledgements sent; ``wait_s`` None waits for all of them. A request
        lost to a leader's restart is sent again (``ACK_ATTEMPTS`` in all): applying an answer
        twice is harmless, the second is refused."""
        failures: list[InvalidRecordState] = []
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while self._sent:
            current, self._sent = self._sent, []
            waiting = []
            for item in current:
                ref, tp, entries, attempt = item
                left = None if deadline is None else max(deadline - time.monotonic(), 0)
                ready, _ = ray.wait([ref], timeout=left)
                if not ready:
                    waiting.append(item)
                    continue
                try:
                    refused = resolve(ref)
                except BrokerError as exc:
                    if exc.retriable and attempt < ACK_ATTEMPTS:
                        self._metadata.forget(tp.topic)
                        time.sleep(self.config.retry_backoff_ms / 1000)
                        if self._submit_acknowledgements(tp, entries, attempt + 1):
                            continue
                    refused = [o for batch, _, _ in entries for o in batch]
                    logger.warning("acknowledgements for %s failed: %s", tp, exc)
                if refused:
                    failures.append(self._refusal(tp, refused))
            self._sent.extend(waiting)
            if deadline is not None and time.monotonic() >= deadline:
                break
        for failure in failures:
            logger.warning("%s", failure)
        return failures

    def _refusal(self, tp: TopicPartition, refused: list[int]) -> InvalidRecordState:
        return InvalidRecordState(
            f"share group {self.config.group_id!r}: {len(refused)} acknowledgement(s) on "
            f"{tp.topic}-{tp.partition} were refused (their locks expired or the leader "
            f"changed; the records will be delivered again): offsets "
            f"{refused[:10]}{'…' if len(refused) > 10 else ''}",
            group_id=self.config.group_id,
            topic=tp.topic,
            partition=tp.partition,
            offsets=refused,
        )

    def commit_sync(self, timeout_ms: int | None = None) -> None:
        """Send the acknowledgements made so far and wait until they are durable.

        Raises:
            InvalidRecordState: some were refused (the first such error; the others applied).
        """
        self._check_open()
        self._acknowledge_implicitly()
        self._send_acknowledgements()
        wait_s = None if timeout_ms is None else timeout_ms / 1000
        failures = self._collect_acknowledgements(wait_s=wait_s)
        if failures:
            raise failures[0]

    def commit_async(self) -> None:
        """Send the acknowledgements made so far without waiting (their outcome is logged and
        checked at the next ``commit_sync``/``poll``)."""
        self._check_open()
        self._acknowledge_implicitly()
        self._send_acknowledgements()

    # --- life cycle -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConsumerClosed("this share consumer was closed")

    def close(self) -> None:
        """Send outstanding acknowledgements (implicit mode: accept what was delivered;
        explicit: release what was not answered, so others get it at once) and stop."""
        if self._closed:
            return
        if self.config.share_acknowledgement_mode == "explicit":
            for tp, delivered in self._delivered.items():
                if delivered:
                    self._acks[tp][(AcknowledgeType.RELEASE, None)].extend(delivered)
                    delivered.clear()
        self._acknowledge_implicitly()
        try:
            self._send_acknowledgements()
            self._collect_acknowledgements(wait_s=CLOSE_TIMEOUT_S)
        except BrokerError as exc:  # closing must not fail; the locks expire on their own
            logger.warning("share consumer close: %s", exc)
        for ref in self._fetches:
            ray.cancel(ref)
        self._fetches.clear()
        self._fetching.clear()
        self._closed = True

    def __enter__(self) -> ShareConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _acknowledge_type(value: AcknowledgeType | str) -> AcknowledgeType:
    """Raises InvalidConfig for an unknown acknowledgement type."""
    try:
        return value if value.__class__ is AcknowledgeType else AcknowledgeType(value)
    except ValueError:
        raise InvalidConfig(
            f"acknowledge type is accept, release or reject, got {value!r}"
        ) from None
