"""The record schema and the on-disk format of a partition log.

Format version 1
================

A partition directory (``<data_dir>/<topic>/partition=<p>/``) holds:

* ``<base_offset:020d>.parquet`` — a sealed segment: the records with offsets in
  ``[base_offset, next_offset)`` in ``RECORD_SCHEMA``, zstd-compressed, row groups of
  ``segment.row.group.records`` rows. The file's key-value metadata carries
  ``ray_broker.format_version``, ``ray_broker.base_offset``, ``ray_broker.next_offset`` and
  ``ray_broker.max_timestamp``, so a segment emptied by compaction still states its range.
  Row-group statistics on ``offset`` and ``timestamp`` are the offset and time index.
* ``_<base_offset:020d>.wal`` — the write-ahead file of a segment not yet sealed. It is a
  sequence of frames, one per appended batch::

      magic u32 = 0x52424C31 ("RBL1") | length u32 | crc32 u32 | Arrow IPC message (length bytes)

  all little-endian. The IPC message is one ``RecordBatch`` in ``RECORD_SCHEMA`` without the
  schema (the schema is this module). A frame with a short header, a short body, a wrong magic or
  a CRC mismatch ends the readable part of the file: recovery cuts the file there.
* ``_*.tmp`` — a file being written; recovery deletes it.

Files that are not sealed segments start with ``_`` so that ``pyarrow.dataset``, Spark and
Polars skip them when they read the Hive layout.

Columns are fixed by ``RECORD_SCHEMA``; adding a column bumps ``FORMAT_VERSION``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_broker.errors import InvalidRecord, RecordTooLarge

FORMAT_VERSION = 1

HEADER_TYPE = pa.list_(
    pa.struct([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.binary())])
)

RECORD_SCHEMA = pa.schema(
    [
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),  # null = tombstone
        pa.field("headers", HEADER_TYPE),
        pa.field("producer_id", pa.int64()),  # null = not an idempotent/transactional producer
        pa.field("producer_epoch", pa.int16()),
        pa.field("sequence", pa.int32()),
        pa.field("attributes", pa.int8()),  # bit flags, see ATTR_*; null = 0
    ],
    metadata={"ray_broker.format_version": str(FORMAT_VERSION)},
)

ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
# Traced records (``message.trace`` or ``send(trace=True)``): their steps go to the trace log.
ATTR_TRACED = 0x40

# Columns a producer may send; ``offset`` is assigned by the leader.
PRODUCER_COLUMNS = tuple(name for name in RECORD_SCHEMA.names if name != "offset")
# Written by the partition itself (offsets, idempotence, control flags), never by applications.
BROKER_COLUMNS = ("offset", "producer_id", "producer_epoch", "sequence", "attributes")

_BINARY_LIKE = (pa.binary(), pa.large_binary(), pa.string(), pa.large_string(), pa.binary_view())


# ``from_batches``, not ``empty_table()``: pyarrow's table constructors check for a pandas
# DataFrame, which imports pandas (~0.4 s) into every partition actor that would never use it.
_EMPTY_TABLE = pa.Table.from_batches([], schema=RECORD_SCHEMA)


def empty_table() -> pa.Table:
    """The empty log read (shared: tables are immutable, and building one costs ~90 µs, which
    every idle long poll would pay per wake-up)."""
    return _EMPTY_TABLE


def record_sizes(batch: pa.RecordBatch) -> pa.Array:
    """Bytes per record counted against max.message.bytes: key + value + header names and
    values (headers must not carry what the value may not)."""
    sizes = pc.fill_null(pc.binary_length(batch.column("value")), 0)
    sizes = pc.add(sizes, pc.fill_null(pc.binary_length(batch.column("key")), 0))
    headers = batch.column("headers")
    if headers.null_count == len(headers):
        return sizes
    entries = pc.list_flatten(headers)
    if len(entries) == 0:
        return sizes
    entry_sizes = pc.add(
        pc.fill_null(pc.binary_length(entries.field("key")), 0),
        pc.fill_null(pc.binary_length(entries.field("value")), 0),
    ).to_numpy(zero_copy_only=False)
    owner = pc.list_parent_indices(headers).to_numpy(zero_copy_only=False)
    per_record = np.bincount(owner, weights=entry_sizes, minlength=len(headers)).astype(np.int64)
    return pc.add(sizes, pa.array(per_record))


def _coerce_column(name: str, column: pa.Array, target: pa.DataType) -> pa.Array:
    if column.type == target:
        return column
    ok = (target == pa.binary() and column.type in _BINARY_LIKE) or (
        pa.types.is_integer(target)
        and (pa.types.is_integer(column.type) or pa.types.is_timestamp(column.type))
    )
    if not ok:
        raise InvalidRecord(
            f"column {name!r} has type {column.type}, expected {target} "
            f"(see ray_broker.storage.schema.RECORD_SCHEMA)"
        )
    try:
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.timestamp("ms")).cast(pa.int64())
        return column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidRecord(f"column {name!r} cannot be converted to {target}: {exc}") from None


def _as_record_batch(data: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    if isinstance(data, pa.Table):
        return data.combine_chunks().to_batches()[0] if data.num_rows else _empty_batch_like(data)
    if isinstance(data, pa.RecordBatch):
        return data
    raise InvalidRecord(f"expected a pyarrow RecordBatch or Table, got {type(data).__name__}")


def _empty_batch_like(table: pa.Table) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=table.schema)


def prepare_batch(
    data: pa.RecordBatch | pa.Table,
    *,
    base_offset: int,
    now_ms: int,
    log_append_time: bool,
    max_message_bytes: int,
    require_keys: bool,
) -> pa.RecordBatch:
    """Turn a producer's batch into a ``RECORD_SCHEMA`` batch with offsets from ``base_offset``.

    Missing optional columns become nulls; missing or null timestamps (and every timestamp under
    LogAppendTime) become ``now_ms``.

    Raises:
        InvalidRecord: unknown or mistyped columns, no ``value`` column, an empty batch, or a
            null key on a compacted topic.
        RecordTooLarge: a record's key + value exceed ``max_message_bytes``.
    """
    batch = _as_record_batch(data)
    names = batch.schema.names
    unknown = [n for n in names if n not in PRODUCER_COLUMNS]
    if unknown:
        raise InvalidRecord(
            f"unknown column(s) {unknown}; a batch may carry {list(PRODUCER_COLUMNS)}"
        )
    if "value" not in names:
        raise InvalidRecord("a batch needs a 'value' column (binary; null = tombstone)")
    n = batch.num_rows
    if n == 0:
        raise InvalidRecord("cannot append an empty batch")

    columns: list[pa.Array] = [pa.array(np.arange(base_offset, base_offset + n, dtype=np.int64))]
    for field in RECORD_SCHEMA:
        if field.name == "offset":
            continue
        if field.name in names:
            column = _coerce_column(field.name, batch.column(field.name), field.type)
        else:
            column = pa.nulls(n, field.type)
        if field.name == "timestamp" and (log_append_time or column.null_count):
            column = (
                pa.array(np.full(n, now_ms, dtype=np.int64))
                if log_append_time or column.null_count == n
                else pc.fill_null(column, now_ms)
            )
        columns.append(column)
    prepared = pa.RecordBatch.from_arrays(columns, schema=RECORD_SCHEMA)
    _check_record_sizes(prepared, max_message_bytes)
    if require_keys and prepared.column("key").null_count:
        raise InvalidRecord(
            "a compacted topic (cleanup.policy=compact) needs a key on every record"
        )
    return prepared


def _check_record_sizes(prepared: pa.RecordBatch, max_message_bytes: int) -> None:
    """Raises RecordTooLarge for the first record over ``max_message_bytes``.

    When the key, value and header buffers together fit the limit no record can exceed it, and
    the per-record sizes (five Arrow kernels, the bulk of a small batch's append) are skipped.
    """
    upper_bound = sum(
        prepared.column(name).get_total_buffer_size() for name in ("key", "value", "headers")
    )
    if upper_bound <= max_message_bytes:
        return
    sizes = record_sizes(prepared)
    largest = pc.max(sizes).as_py() or 0
    if largest > max_message_bytes:
        index = pc.index(sizes, largest).as_py()
        raise RecordTooLarge(
            f"record {index} of the batch is {largest} bytes, over max.message.bytes="
            f"{max_message_bytes}; split it or raise the topic's max.message.bytes",
            size=largest,
            limit=max_message_bytes,
        )


def check_replica_batch(data: pa.RecordBatch | pa.Table, expected_base: int) -> pa.RecordBatch:
    """Validate a batch that already carries offsets (a follower copying its leader).

    Raises:
        InvalidRecord: wrong schema, or offsets not dense from ``expected_base``.
    """
    batch = _as_record_batch(data)
    if batch.schema.remove_metadata() != RECORD_SCHEMA.remove_metadata():
        raise InvalidRecord(f"replica batch schema {batch.schema} differs from RECORD_SCHEMA")
    batch = batch.replace_schema_metadata(RECORD_SCHEMA.metadata)
    offsets = batch.column("offset")
    n = batch.num_rows
    if n == 0:
        raise InvalidRecord("cannot append an empty batch")
    first, last = offsets[0].as_py(), offsets[n - 1].as_py()
    if first != expected_base or last != expected_base + n - 1:
        raise InvalidRecord(
            f"replica batch offsets {first}..{last} are not dense from log end {expected_base}"
        )
    return batch
