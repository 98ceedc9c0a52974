"""Kafka's default key partitioner: murmur2 of the key bytes, compatible with the Java client.

Records with the same key land in the same partition as they would with a Java or kafka-python
producer on a topic with the same partition count.

Then, for a whole buffer or ``send_batch`` table at once: rows with an explicit partition go
there, rows with a key go to murmur2(key), the rest go to the topic's sticky partition
(KIP-480), so a buffer of unkeyed records stays one request.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Java ``Utils.murmur2``: a signed 32-bit hash."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for i in range(0, whole, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """Java ``Utils.toPositive(murmur2(key)) % numPartitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


def partitions_for_keys(keys: pa.Array | pa.ChunkedArray, num_partitions: int) -> np.ndarray:
    """``partition_for_key`` of every key at once (nulls get -1), vectorized with NumPy.

    Keys are grouped by length; each group is a (rows × length) byte matrix whose murmur2 runs
    column-wise in uint32 arithmetic (which wraps like Java's int), so the Python cost is per
    distinct key length, not per record.
    """
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks() if keys.num_chunks != 1 else keys.chunk(0)
    if pa.types.is_large_binary(keys.type):
        keys = keys.cast(pa.binary())
    out = np.full(len(keys), -1, dtype=np.int64)
    if len(keys) == 0:
        return out
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int32)[
        keys.offset : keys.offset + len(keys) + 1
    ]
    data_buffer = keys.buffers()[2]
    data = (
        np.frombuffer(data_buffer, dtype=np.uint8)
        if data_buffer is not None
        else np.zeros(0, np.uint8)
    )
    lengths = np.diff(offsets)
    valid = (
        np.ones(len(keys), dtype=bool)
        if keys.null_count == 0
        else keys.is_valid().to_numpy(zero_copy_only=False)
    )
    m = np.uint32(_M)
    for length in np.unique(lengths[valid]):
        rows = np.flatnonzero(valid & (lengths == length))
        block = data[offsets[rows][:, None] + np.arange(length)].astype(np.uint32)
        with np.errstate(over="ignore"):
            h = np.full(len(rows), (_SEED ^ int(length)) & _MASK, dtype=np.uint32)
            whole = int(length) & ~3
            for i in range(0, whole, 4):
                k = (
                    block[:, i]
                    | (block[:, i + 1] << 8)
                    | (block[:, i + 2] << 16)
                    | (block[:, i + 3] << 24)
                )
                k = k * m
                k ^= k >> np.uint32(24)
                k = k * m
                h = (h * m) ^ k
            tail = int(length) & 3
            if tail == 3:
                h ^= block[:, whole + 2] << 16
            if tail >= 2:
                h ^= block[:, whole + 1] << 8
            if tail >= 1:
                h ^= block[:, whole]
                h = h * m
            h ^= h >> np.uint32(13)
            h = h * m
            h ^= h >> np.uint32(15)
        out[rows] = (h & np.uint32(0x7FFFFFFF)).astype(np.int64) % num_partitions
    return out


def assign_partitions(
    rows: int,
    keys: pa.Array | pa.ChunkedArray | None,
    explicit: np.ndarray | None,
    num_partitions: int,
    sticky: int,
) -> tuple[np.ndarray, bool]:
    """The partition of every row, and whether any row took the sticky partition."""
    parts = np.full(rows, -1, dtype=np.int64) if explicit is None else explicit.astype(np.int64)
    if keys is not None and rows:
        if pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type):
            keys = keys.cast(pa.large_binary())  # murmur2 of the UTF-8 bytes
        unplaced = parts < 0
        if unplaced.any():
            hashed = partitions_for_keys(keys, num_partitions)
            parts[unplaced] = hashed[unplaced]
    unplaced = parts < 0
    used_sticky = bool(unplaced.any())
    if used_sticky:
        parts[unplaced] = sticky % num_partitions
    return parts, used_sticky


def group_by_partition(
    table: pa.Table, parts: np.ndarray, max_rows: int
) -> tuple[list[tuple[int, pa.Table]], np.ndarray | None, np.ndarray | None]:
    """Rows grouped by partition (each group in table order, cut at ``max_rows``) with one
    stable sort and slices, not a filter per partition.

    Returns the pieces, and for each row its piece and its index in that piece — both None when
    the table is one piece as it stands.
    """
    count = len(parts)
    if count == 0:
        return [], None, None
    if count <= max_rows and (parts == parts[0]).all():
        return [(int(parts[0]), table)], None, None
    if (np.diff(parts) >= 0).all():
        order, ordered = np.arange(count), table  # already grouped: no copy
    else:
        order = np.argsort(parts, kind="stable")
        ordered = table.take(pa.array(order))
    sorted_parts = parts[order]
    bounds = (np.flatnonzero(np.diff(sorted_parts)) + 1).tolist()
    pieces: list[tuple[int, pa.Table]] = []
    row_piece = np.empty(count, dtype=np.int64)
    row_index = np.empty(count, dtype=np.int64)
    for start, end in zip([0, *bounds], [*bounds, count], strict=True):
        for chunk_start in range(start, end, max_rows):
            chunk_end = min(chunk_start + max_rows, end)
            rows = order[chunk_start:chunk_end]
            row_piece[rows] = len(pieces)
            row_index[rows] = np.arange(chunk_end - chunk_start)
            pieces.append(
                (
                    int(sorted_parts[chunk_start]),
                    ordered.slice(chunk_start, chunk_end - chunk_start),
                )
            )
    return pieces, row_piece, row_index
