"""Topics as Ray Data datasets: ``read_topic`` and ``write_topic`` (``TopicDatasink``).

A read is a bounded snapshot: each partition's range is fixed when the dataset is planned
(``end`` defaults to the high watermark then), so a dataset reads the same records however often
it runs. Each read task reads one range of one partition: sealed segments straight from their
Parquet files — segments in remote storage from any node, local ones when the task runs on the
node that holds them (``pyarrow.dataset``, with the filter pushed into the scan) — and the rest,
the in-memory tail or files on another node's disk, from the partition leader with ``fetch``.
Arrow all the way: no record becomes a Python object.

Writes go through the idempotent producer (``acks="all"`` by default), one producer per write
task, so a retried write task does not duplicate what an earlier attempt of it delivered only
when the broker still knows the producer; Ray Data retries a failed task as a whole.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ray_broker.config import CONTROLLER_NAME, DEFAULT_NAMESPACE
from ray_broker.errors import BrokerError, InvalidConfig, InvalidRecord
from ray_broker.storage.schema import ATTR_CONTROL, RECORD_SCHEMA

# One fetch of a read task asks for this many records (the leader caps what one answer holds).
READ_CHUNK_RECORDS = 200_000
READ_CHUNK_BYTES = 64 * 2**20
# A partition range is split into read tasks of at least this many records.
MIN_TASK_RECORDS = 100_000
READ_TIMEOUT_S = 60.0
RETRY_BACKOFF_S = 0.2
# What a record costs in memory, for Ray Data's planning (100-byte values plus the columns).
ESTIMATED_RECORD_BYTES = 160
PARTITION_COLUMN = "partition"


@dataclass(frozen=True)
class PartitionRange:
    """Committed offsets ``[start, end)`` of one partition."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def records(self) -> int:
        return self.end - self.start


# --- planning -------------------------------------------------------------------------------------


def _as_millis(moment: int | float | datetime, name: str) -> int:
    if isinstance(moment, datetime):
        return int(moment.timestamp() * 1000)
    if isinstance(moment, (int, float)) and not isinstance(moment, bool) and moment >= 0:
        return int(moment)
    raise InvalidConfig(f"{name} is a datetime or epoch milliseconds >= 0, got {moment!r}")


def _offset_for(value: int | dict[int, int] | None, partition: int, default: int, name: str) -> int:
    if isinstance(value, dict):
        value = value.get(partition)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidConfig(
            f"{name} is an offset >= 0 (or a dict partition -> offset), got {value!r}"
        )
    return value


def plan_ranges(
    broker: Any,
    topic: str,
    *,
    start: int | dict[int, int] | None = None,
    end: int | dict[int, int] | None = None,
    start_time: int | float | datetime | None = None,
    end_time: int | float | datetime | None = None,
) -> list[PartitionRange]:
    """Each partition's committed range to read, clamped to the log.

    Raises:
        TopicNotFound; InvalidConfig for an offset and a time given for the same bound.
    """
    from ray_broker._ray import call

    if start is not None and start_time is not None:
        raise InvalidConfig("give start or start_time, not both")
    if end is not None and end_time is not None:
        raise InvalidConfig("give end or end_time, not both")
    start_ms = None if start_time is None else _as_millis(start_time, "start_time")
    end_ms = None if end_time is None else _as_millis(end_time, "end_time")
    description = broker.admin().describe_topic(topic)
    metadata = broker._metadata.topic(topic)
    ranges = []
    for p in description.partitions:
        low, high = p.log_start_offset, p.high_watermark
        first = _offset_for(start, p.partition, low, "start")
        last = _offset_for(end, p.partition, high, "end")
        for moment, is_start in ((start_ms, True), (end_ms, False)):
            if moment is None:
                continue
            found = call(metadata.leader(p.partition).offset_for_time, moment, timeout_s=30)
            offset = high if found is None else found[0]
            if is_start:
                first = offset
            else:
                last = offset
        first, last = max(first, low), min(last, high)
        if first < last:
            ranges.append(PartitionRange(topic, p.partition, first, last))
    return ranges


def _split(ranges: list[PartitionRange], parallelism: int) -> list[PartitionRange]:
    """Split ranges so there are about ``parallelism`` tasks, none under MIN_TASK_RECORDS."""
    total = sum(r.records for r in ranges)
    if not total:
        return []
    out = []
    for r in ranges:
        share = max(1, round(parallelism * r.records / total))
        pieces = max(1, min(share, math.ceil(r.records / MIN_TASK_RECORDS)))
        step = math.ceil(r.records / pieces)
        for begin in range(r.start, r.end, step):
            out.append(PartitionRange(r.topic, r.partition, begin, min(begin + step, r.end)))
    return out


# --- reading --------------------------------------------------------------------------------------


# Transaction markers are the broker's, never a record of the topic (the partition hides them
# from fetches; the Parquet scan of sealed files must too).
NOT_CONTROL = pc.field("attributes").is_null() | (
    pc.bit_wise_and(pc.field("attributes"), pa.scalar(ATTR_CONTROL, pa.int8())) == 0
)


def _output_schema(columns: list[str] | None) -> pa.Schema:
    fields = [f for f in RECORD_SCHEMA if columns is None or f.name in columns]
    if columns is None or PARTITION_COLUMN in columns:
        fields.append(pa.field(PARTITION_COLUMN, pa.int32(), nullable=False))
    return pa.schema(fields)


def _shape(table: pa.Table, r: PartitionRange, columns: list[str] | None, where: Any) -> pa.Table:
    """Records of ``table`` inside the range and the filter, as the output schema."""
    offsets = table.column("offset")
    inside = pc.and_(pc.greater_equal(offsets, r.start), pc.less(offsets, r.end))
    table = table.filter(inside)
    if where is not None:
        table = table.filter(where)
    names = [f.name for f in _output_schema(columns) if f.name != PARTITION_COLUMN]
    table = table.select(names)
    if columns is None or PARTITION_COLUMN in columns:
        table = table.append_column(
            pa.field(PARTITION_COLUMN, pa.int32(), nullable=False),
            pa.array([r.partition] * table.num_rows, pa.int32()),
        )
    return table


class _Leader:
    """Calls to a partition's current leader from a read task, following failovers."""

    def __init__(
        self, namespace: str, topic: str, partition: int, session: Callable[[], str] | None
    ) -> None:
        import ray

        from ray_broker.actors.security.access_guard import with_session
        from ray_broker.metadata import MetadataCache

        def lookup() -> Any:
            return with_session(ray.get_actor(CONTROLLER_NAME, namespace=namespace), session)

        self._metadata = MetadataCache(lookup(), lookup=lookup, session=session)
        self._topic, self._partition = topic, partition

    def call(self, method: str, *args: Any) -> Any:
        from ray_broker._ray import call, retrying

        def attempt() -> Any:
            leader = self._metadata.topic(self._topic).leader(self._partition)
            return call(getattr(leader, method), *args, timeout_s=READ_TIMEOUT_S)

        return retrying(
            attempt,
            time.monotonic() + READ_TIMEOUT_S,
            RETRY_BACKOFF_S,
            lambda _error: self._metadata.forget(self._topic),
        )


def read_partition_range(
    namespace: str,
    r: PartitionRange,
    columns: list[str] | None,
    where_filter: Any,
    session: Callable[[], str] | None = None,
) -> Iterator[pa.Table]:
    """The records of one range: sealed files first (remote ones from anywhere, local ones on
    their node), then fetches from the leader."""
    import ray

    from ray_broker.storage.ipc import from_ipc

    leader = _Leader(namespace, r.topic, r.partition, session)
    plan = leader.call("read_plan", r.start, r.end)
    position = r.start
    local = plan["node_id"] == ray.get_runtime_context().get_node_id()
    for where, _base, next_offset in plan["files"]:
        remote = "://" in where  # a URI in remote storage, readable from any node
        if not (remote or local) or position >= r.end:
            break  # on another node's disk: the leader serves the rest
        upto = min(r.end, next_offset, plan["memory_from"])
        bounded = PartitionRange(r.topic, r.partition, position, upto)
        scan_filter = (pc.field("offset") >= position) & (pc.field("offset") < upto) & NOT_CONTROL
        if where_filter is not None:
            scan_filter = scan_filter & where_filter
        try:
            table = pads.dataset(where, format="parquet").to_table(filter=scan_filter)
        except OSError:  # deleted by retention or moved to remote storage meanwhile: fetch it
            break
        yield _shape(table, bounded, columns, None)
        position = max(position, upto)
    while position < r.end:
        response = leader.call("fetch", position, READ_CHUNK_RECORDS, READ_CHUNK_BYTES, 0)
        if response.next_offset <= position:
            break  # nothing committed at or after ``position`` (compacted away)
        position = response.next_offset  # past hidden transaction markers too
        if response.num_records:
            yield _shape(
                table=from_ipc(response.records_ipc), r=r, columns=columns, where=where_filter
            )


def _check_columns(columns: Iterable[str] | None) -> list[str] | None:
    if columns is None:
        return None
    columns = list(columns)
    known = [*RECORD_SCHEMA.names, PARTITION_COLUMN]
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise InvalidConfig(f"unknown column(s) {unknown}; a topic has {known}")
    return columns


def _topic_datasource_class() -> type:
    """Defined lazily: importing ray.data costs seconds that most broker users never need."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class TopicDatasource(Datasource):
        """A bounded read of a topic; see the module docstring."""

        def __init__(
            self,
            namespace: str,
            ranges: list[PartitionRange],
            columns: list[str] | None,
            where: Any,
            session: Callable[[], str] | None = None,
        ) -> None:
            super().__init__()
            self._namespace, self._ranges = namespace, ranges
            self._columns, self._where = columns, where
            self._session = session  # pickled into read tasks as the current token only

        def estimate_inmemory_data_size(self) -> int | None:
            return sum(r.records for r in self._ranges) * ESTIMATED_RECORD_BYTES

        def get_read_tasks(
            self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
        ) -> list[ReadTask]:
            namespace, columns, where = self._namespace, self._columns, self._where
            session = self._session
            tasks = []
            for r in _split(self._ranges, parallelism):
                metadata = BlockMetadata(
                    num_rows=None if where is not None else r.records,
                    size_bytes=r.records * ESTIMATED_RECORD_BYTES,
                    exec_stats=None,
                    input_files=None,
                )
                tasks.append(
                    ReadTask(
                        lambda r=r: read_partition_range(namespace, r, columns, where, session),
                        metadata,
                        schema=_output_schema(columns),
                        per_task_row_limit=per_task_row_limit,
                    )
                )
            return tasks

    return TopicDatasource


def read_topic(
    topic: str,
    *,
    start: int | dict[int, int] | None = None,
    end: int | dict[int, int] | None = None,
    start_time: int | float | datetime | None = None,
    end_time: int | float | datetime | None = None,
    columns: Iterable[str] | None = None,
    filter: Any = None,  # noqa: A002 - Ray Data's and pyarrow's name for it
    namespace: str = DEFAULT_NAMESPACE,
    broker: Any = None,
) -> Any:
    """A ``ray.data.Dataset`` of a topic's committed records, all partitions.

    ``start``/``end`` are offsets (one for every partition, or ``{partition: offset}``; ``end``
    exclusive); ``start_time``/``end_time`` are datetimes or epoch milliseconds (the first
    record stamped at or after each). ``columns`` picks record columns (plus ``partition``);
    ``filter`` is a ``pyarrow.compute`` expression, pushed into the Parquet scan.

    Raises:
        TopicNotFound, InvalidConfig, BrokerNotRunning.
    """
    import ray.data

    import ray_broker as rb

    columns = _check_columns(columns)
    if filter is not None and not isinstance(filter, pc.Expression):
        raise InvalidConfig(f"filter is a pyarrow.compute expression, got {type(filter).__name__}")
    owned = broker is None
    broker = broker or rb.connect(namespace=namespace)
    try:
        ranges = plan_ranges(
            broker, topic, start=start, end=end, start_time=start_time, end_time=end_time
        )
        source = _topic_datasource_class()(
            broker.namespace, ranges, columns, filter, broker._session
        )
    finally:
        if owned:
            broker.close()
    return ray.data.read_datasource(source)


# --- writing --------------------------------------------------------------------------------------


def records_of(table: pa.Table, key_column: str | None, value_column: str) -> pa.Table:
    """The producer table of a block: ``value`` (and ``key``, ``timestamp``, ``headers`` when
    present).

    Raises:
        InvalidRecord: the value or key column is missing.
    """
    for name in (value_column, key_column):
        if name is not None and name not in table.column_names:
            raise InvalidRecord(
                f"the dataset has no column {name!r} (columns: {table.column_names})"
            )
    columns = {"value": table.column(value_column)}
    if key_column is not None:
        columns["key"] = table.column(key_column)
    for name in ("timestamp", "headers"):
        if name in table.column_names and name not in columns:
            columns[name] = table.column(name)
    return pa.table(columns)


def _topic_datasink_class() -> type:
    from ray.data.block import BlockAccessor
    from ray.data.datasource import Datasink

    class TopicDatasink(Datasink):
        """Writes a dataset's rows to a topic; see the module docstring."""

        def __init__(
            self,
            topic: str,
            *,
            key_column: str | None = None,
            value_column: str = "value",
            namespace: str = DEFAULT_NAMESPACE,
            producer_options: dict[str, Any] | None = None,
            token: str | None = None,
        ) -> None:
            self.topic, self.key_column, self.value_column = topic, key_column, value_column
            self.namespace = namespace
            self.token = token  # a secured broker's session token (Broker.session_token())
            self.producer_options = {"acks": "all", **(producer_options or {})}
            self.written = 0

        def write(self, blocks: Iterable[Any], ctx: Any) -> int:
            import ray_broker as rb

            written = 0
            with rb.connect(namespace=self.namespace, token=self.token) as broker:
                producer = broker.producer(**self.producer_options)
                futures = []
                for block in blocks:
                    table = BlockAccessor.for_block(block).to_arrow()
                    if table.num_rows:
                        records = records_of(table, self.key_column, self.value_column)
                        futures.append(producer.send_batch(self.topic, records))
                        written += table.num_rows
                producer.flush()
                for future in futures:
                    future.result()  # raises the typed BrokerError of a failed batch
                producer.close()
            return written

        def on_write_complete(self, write_result: Any) -> None:
            self.written = sum(write_result.write_returns)

    return TopicDatasink


def TopicDatasink(topic: str, **options: Any) -> Any:  # noqa: N802 - a class to its users
    """A ``ray.data.Datasink`` producing to ``topic``: ``ds.write_datasink(TopicDatasink(...))``.

    Options: ``key_column``, ``value_column`` (default "value"), ``namespace``,
    ``producer_options`` (default ``acks="all"``, idempotent), ``token`` (for a secured
    broker: ``broker.session_token()``)."""
    return _topic_datasink_class()(topic, **options)


def write_topic(dataset: Any, topic: str, **options: Any) -> int:
    """Produce every row of ``dataset`` to ``topic``; returns the number of records written.

    Raises:
        BrokerError: a batch failed for good (typed, e.g. TopicNotFound, RecordTooLarge).
    """
    sink = TopicDatasink(topic, **options)
    schema = dataset.schema()
    if schema is not None:  # a missing column fails here, not in every retried write task
        names = list(schema.names)
        for name in (sink.value_column, sink.key_column):
            if name is not None and name not in names:
                raise InvalidRecord(f"the dataset has no column {name!r} (columns: {names})")
    try:
        dataset.write_datasink(sink)
    except BrokerError:
        raise
    except Exception as exc:  # Ray Data wraps task errors: surface the broker's typed one
        cause = exc
        while cause is not None:
            if isinstance(cause, BrokerError):
                raise cause from None
            cause = cause.__cause__
        raise
    return sink.written
