"""Kafka's RecordBatch v2 ⇄ Arrow record tables.

A produce request carries one or more batches per partition; the partition actor takes an
Arrow table. Decoding checks what a broker must before trusting a batch — the header's length,
magic and CRC-32C over the whole batch — and only then lets aiokafka's compiled codec parse and
decompress the records (it would silently stop at a truncated batch). Encoding builds one
batch per fetch answer; records the partition hid (aborted, control, filtered) leave offset
gaps, which RecordBatch v2 carries, and a hidden tail becomes an empty batch so the client's
position moves past it as it would over Kafka's compacted or aborted ranges.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pyarrow as pa
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from crc32c import crc32c

from ray_broker.errors import InvalidRecord
from ray_broker.kafka.bounded_decompress import decompress
from ray_broker.storage.schema import HEADER_TYPE

MAGIC_V2 = 2
# base offset i64, batch length i32, leader epoch i32, magic i8, crc u32 | attributes i16,
# last offset delta i32, first and max timestamp i64, producer id i64, epoch i16, base
# sequence i32, record count i32: 61 bytes.
HEADER_SIZE = struct.calcsize(">qiibIhiqqqhii")
LENGTH_OFFSET = 12  # what the batch length counts from (after base offset and length)
CRC_FROM = 21  # the CRC covers attributes to the end
NO_PRODUCER_ID = -1
COMPRESSION_MASK = 0x07  # the attribute bits naming the codec
# What one compressed batch may inflate to. Kafka bounds the *compressed* batch by
# max.message.bytes (1 MiB by default) and producers batch 16 KiB by default; 32 MiB leaves a
# ratio of 32 over the largest default batch, and refuses a bomb after inflating that much.
MAX_INFLATED_BATCH_BYTES = 32 * 1024 * 1024

PRODUCED_SCHEMA = pa.schema(
    [
        pa.field("timestamp", pa.int64()),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("headers", HEADER_TYPE),
    ]
)


@dataclass(frozen=True)
class ProducedBatch:
    """One RecordBatch of a produce request, as the partition actor's ``produce`` takes it."""

    records: pa.Table
    producer_id: int | None  # None: not an idempotent producer
    producer_epoch: int
    base_sequence: int
    transactional: bool


def split_batches(data: bytes | memoryview) -> list[memoryview]:
    """The batches of a partition's record set, each checked for length, magic and CRC.

    Raises:
        InvalidRecord: a truncated or corrupt batch, an old message format (magic 0/1), or
            trailing bytes that are not a whole batch.
    """
    view = memoryview(data)
    batches = []
    position = 0
    while position < len(view):
        if len(view) - position < HEADER_SIZE:
            raise InvalidRecord(f"a record batch is truncated: {len(view) - position} bytes")
        _, length, _, magic, crc = struct.unpack_from(">qiibI", view, position)
        end = position + LENGTH_OFFSET + length
        if length < HEADER_SIZE - LENGTH_OFFSET or end > len(view):
            raise InvalidRecord(f"a record batch states length {length}, which it does not have")
        if magic != MAGIC_V2:
            raise InvalidRecord(f"message format magic {magic} is not supported (only v2)")
        batch = view[position:end]
        if crc32c(batch[CRC_FROM:]) != crc:
            raise InvalidRecord("a record batch failed its CRC-32C check (corrupt message)")
        batches.append(batch)
        position = end
    if not batches:
        raise InvalidRecord("a produce request carries no record batch")
    return batches


def decode_produced(
    data: bytes | memoryview, max_inflated_bytes: int = MAX_INFLATED_BATCH_BYTES
) -> list[ProducedBatch]:
    """The producer batches of one partition's record set. A compressed batch inflates to
    at most ``max_inflated_bytes``, checked while it inflates.

    Raises:
        InvalidRecord: see ``split_batches``; a control batch (only brokers write them);
            a batch that does not decompress or parse; a batch with no records.
        RecordTooLarge: a compressed batch inflates past ``max_inflated_bytes``.
    """
    decoded = []
    for raw in split_batches(data):
        batch = DefaultRecordBatch(_inflated(raw, max_inflated_bytes))
        if batch.is_control_batch:
            raise InvalidRecord("a producer may not write control batches")
        try:
            records = list(batch)  # the compiled codec decompresses and parses
        except Exception as exc:  # the codec's own errors: corrupt or unknown compression
            raise InvalidRecord(f"a record batch does not decode: {exc}") from None
        if not records:
            raise InvalidRecord("a record batch holds no records")
        table = pa.Table.from_arrays(
            [
                pa.array([r.timestamp for r in records], pa.int64()),
                pa.array([r.key for r in records], pa.binary()),
                pa.array([r.value for r in records], pa.binary()),
                _headers([r.headers for r in records]),
            ],
            schema=PRODUCED_SCHEMA,
        )
        producer_id = batch.producer_id
        decoded.append(
            ProducedBatch(
                table,
                None if producer_id < 0 else producer_id,
                max(batch.producer_epoch, 0),
                max(batch.base_sequence, 0),
                batch.is_transactional,
            )
        )
    return decoded


def _inflated(raw: memoryview, limit: int) -> bytes:
    """The batch with its records decompressed (bounded, see ``bounded_decompress``), so the
    compiled codec only parses: it would inflate any ratio into memory at once."""
    (attributes,) = struct.unpack_from(">h", raw, CRC_FROM)
    codec = attributes & COMPRESSION_MASK
    if codec == 0:
        return bytes(raw)
    plain = decompress(codec, raw[HEADER_SIZE:], limit)
    header = bytearray(raw[:HEADER_SIZE])
    struct.pack_into(">h", header, CRC_FROM, attributes & ~COMPRESSION_MASK)
    struct.pack_into(">i", header, 8, HEADER_SIZE - LENGTH_OFFSET + len(plain))
    return bytes(header) + plain  # the CRC was checked on the batch as sent


def _headers(per_record: list[list[tuple[str, bytes | None]]]) -> pa.Array:
    if not any(per_record):
        return pa.nulls(len(per_record), HEADER_TYPE)
    return pa.array(
        [[{"key": k, "value": v} for k, v in headers] or None for headers in per_record],
        HEADER_TYPE,
    )


def encode_fetched(
    table: pa.Table, fetch_offset: int, next_offset: int, compression: int = 0
) -> bytes:
    """The records of a fetch answer as RecordBatch v2 bytes, ending where the consumer's
    next fetch should begin (``next_offset``) even when the last records were hidden."""
    out = bytearray()
    covered_to = fetch_offset
    if table.num_rows:
        out += _encode_records(table, compression)
        covered_to = table.column("offset")[-1].as_py() + 1
    if next_offset > covered_to:
        out += empty_batch(covered_to, next_offset - 1)
    return bytes(out)


def _encode_records(table: pa.Table, compression: int) -> bytearray:
    offsets = table.column("offset").to_pylist()
    base = offsets[0]
    builder = DefaultRecordBatchBuilder(MAGIC_V2, compression, 0, -1, -1, -1, 2**31 - 1)
    headers = table.column("headers").to_pylist()
    for delta_offset, timestamp, key, value, header in zip(
        offsets,
        table.column("timestamp").to_pylist(),
        table.column("key").to_pylist(),
        table.column("value").to_pylist(),
        headers,
        strict=True,
    ):
        pairs = [(h["key"], h["value"]) for h in header] if header else []
        builder.append(delta_offset - base, timestamp, key, value, pairs)
    built = builder.build()
    struct.pack_into(">q", built, 0, base)
    return built


def empty_batch(first_offset: int, last_offset: int) -> bytes:
    """A batch with no records covering ``[first_offset, last_offset]``: Kafka clients move
    their position past it (records there were hidden from this reader)."""
    body = struct.pack(
        ">hiqqqhii", 0, last_offset - first_offset, -1, -1, NO_PRODUCER_ID, -1, -1, 0
    )
    length = 4 + 1 + 4 + len(body)  # leader epoch, magic, crc, the rest
    crc = crc32c(body)
    return struct.pack(">qiibI", first_offset, length, 0, MAGIC_V2, crc) + body
