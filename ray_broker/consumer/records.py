"""Fetched Arrow slices into what ``poll()`` and ``poll_arrow()`` return.

``Record`` objects are built column-wise: each column becomes a Python list once, and rows are
made by ``zip`` and ``tuple.__new__`` (``Record`` is a NamedTuple), with the cyclic garbage
collector paused meanwhile — it would otherwise rescan the young objects every few hundred
records and cost more than building them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa

from ray_broker.errors import SerializationError
from ray_broker.gc_pause import collector_paused
from ray_broker.storage.schema import RECORD_SCHEMA
from ray_broker.structs import Record, TopicPartition

USER_COLUMNS = ["offset", "timestamp", "key", "value", "headers"]

_new_record = partial(tuple.__new__, Record)


def _pylist(column: pa.ChunkedArray) -> list[Any]:
    if column.null_count == len(column):
        return [None] * len(column)
    if pa.types.is_integer(column.type) and not column.null_count:
        return column.to_numpy().tolist()
    return column.to_numpy(zero_copy_only=False).tolist()


def decode(
    tp: TopicPartition,
    table: pa.Table,
    key_deserializer: Callable[[bytes], Any] | None,
    value_deserializer: Callable[[bytes], Any] | None,
) -> tuple[list[Record], tuple[int, SerializationError] | None]:
    """Records of a slice, and (offset, error) of the first one that fails to decode (the
    records returned are those before it)."""
    with collector_paused():
        offsets = _pylist(table.column("offset"))
        keys = _pylist(table.column("key"))
        values = _pylist(table.column("value"))
        failed_at = None
        for what, column, deserialize in (
            ("key", keys, key_deserializer),
            ("value", values, value_deserializer),
        ):
            if deserialize is None:
                continue
            for index, raw in enumerate(column):
                if failed_at is not None and index >= failed_at[0]:
                    break
                try:
                    column[index] = None if raw is None else deserialize(raw)
                except Exception as exc:  # the application's deserializer
                    failed_at = (
                        index,
                        SerializationError(
                            f"{what}_deserializer failed on {tp.topic}-{tp.partition} at offset "
                            f"{offsets[index]}: {type(exc).__name__}: {exc}; seek past it to "
                            "skip the record",
                            topic=tp.topic,
                            partition=tp.partition,
                            offset=offsets[index],
                        ),
                    )
                    break
        if failed_at is None:
            return _build(tp, table, offsets, keys, values), None
        index, error = failed_at
        records = _build(tp, table.slice(0, index), offsets[:index], keys[:index], values[:index])
        return records, (offsets[index], error)


def _build(
    tp: TopicPartition, table: pa.Table, offsets: list[int], keys: list[Any], values: list[Any]
) -> list[Record]:
    rows = table.num_rows
    headers = table.column("headers")
    if headers.null_count < rows:
        header_lists = [
            [(h["key"], h["value"]) for h in hs] if hs else [] for hs in headers.to_pylist()
        ]
    else:
        header_lists = [[] for _ in range(rows)]
    return list(
        map(
            _new_record,
            zip(
                repeat(tp.topic, rows),
                repeat(tp.partition, rows),
                offsets,
                _pylist(table.column("timestamp")),
                keys,
                values,
                header_lists,
                strict=True,
            ),
        )
    )


def to_arrow(slices: list[tuple[TopicPartition, pa.Table]]) -> pa.Table:
    """Slices as one table with ``topic`` and ``partition`` columns (empty, with the same
    columns, if there are none)."""
    tables = []
    for tp, table in slices:
        n = table.num_rows
        topic = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), [tp.topic])
        tables.append(
            table.select(USER_COLUMNS)
            .add_column(0, "partition", pa.array(np.full(n, tp.partition, np.int32)))
            .add_column(0, "topic", topic)
        )
    if not tables:
        fields = [RECORD_SCHEMA.field(name) for name in USER_COLUMNS]
        schema = pa.schema(
            [
                pa.field("topic", pa.dictionary(pa.int32(), pa.string())),
                pa.field("partition", pa.int32()),
                *fields,
            ]
        )
        return schema.empty_table()
    return pa.concat_tables(tables, promote_options="permissive")
