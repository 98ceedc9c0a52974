"""RecordBatch v2 ⇄ Arrow, checked against kafka-python's independent codec both ways."""

from __future__ import annotations

import struct

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch as KafkaPythonBatch
from kafka.record.default_records import DefaultRecordBatchBuilder as KafkaPythonBuilder

from ray_broker.errors import InvalidRecord, RecordTooLarge
from ray_broker.kafka.record_batch import (
    decode_produced,
    empty_batch,
    encode_fetched,
    split_batches,
)
from ray_broker.storage.schema import HEADER_TYPE

CODECS = [0, 1, 2, 3, 4]  # none, gzip, snappy, lz4, zstd

record = st.tuples(
    st.integers(0, 2**41),  # timestamp
    st.none() | st.binary(max_size=20),  # key
    st.none() | st.binary(max_size=200),  # value (None: tombstone)
    st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)), max_size=3),
)


def kafka_python_batch(records, codec=0, producer=(-1, -1, -1), transactional=False) -> bytes:
    builder = KafkaPythonBuilder(2, codec, transactional, *producer, 2**30)
    for index, (timestamp, key, value, headers) in enumerate(records):
        builder.append(index, timestamp, key, value, headers)
    return bytes(builder.build())


def read_back(data: bytes) -> list[tuple[int, int, bytes | None, bytes | None, list]]:
    found = []
    for raw in split_batches(data):
        batch = KafkaPythonBatch(bytes(raw))
        assert batch.validate_crc()
        found += [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in batch]
    return found


def as_table(records, offsets) -> pa.Table:
    return pa.table(
        {
            "offset": pa.array(offsets, pa.int64()),
            "timestamp": pa.array([r[0] for r in records], pa.int64()),
            "key": pa.array([r[1] for r in records], pa.binary()),
            "value": pa.array([r[2] for r in records], pa.binary()),
            "headers": pa.array(
                [[{"key": k, "value": v} for k, v in r[3]] or None for r in records], HEADER_TYPE
            ),
        }
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(record, min_size=1, max_size=30), st.sampled_from(CODECS))
def test_produced_batches_decode_to_the_records_kafka_python_encoded(records, codec):
    (decoded,) = decode_produced(kafka_python_batch(records, codec, producer=(7, 2, 40)))
    assert (decoded.producer_id, decoded.producer_epoch, decoded.base_sequence) == (7, 2, 40)
    assert decoded.records.column("timestamp").to_pylist() == [r[0] for r in records]
    assert decoded.records.column("key").to_pylist() == [r[1] for r in records]
    assert decoded.records.column("value").to_pylist() == [r[2] for r in records]
    headers = [
        [(h["key"], h["value"]) for h in hs or []] for hs in decoded.records["headers"].to_pylist()
    ]
    assert headers == [list(r[3]) for r in records]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(record, min_size=1, max_size=30),
    st.integers(0, 2**40),
    st.integers(0, 5),
    st.integers(0, 5),
    st.sampled_from(CODECS),
)
def test_fetched_records_read_back_in_kafka_python_with_their_offsets(
    records, base, gap, hidden_tail, codec
):
    """Offsets keep the partition's gaps; a hidden tail is covered by an empty batch."""
    offsets = [base + i * (gap + 1) for i in range(len(records))]
    next_offset = offsets[-1] + 1 + hidden_tail
    data = encode_fetched(as_table(records, offsets), base, next_offset, codec)
    expected = [(o, r[0], r[1], r[2], list(r[3])) for o, r in zip(offsets, records, strict=True)]
    assert read_back(data) == expected
    last = KafkaPythonBatch(bytes(split_batches(data)[-1]))
    assert last.next_offset == next_offset


def test_a_read_of_only_hidden_records_is_one_empty_batch_that_moves_the_position():
    data = encode_fetched(as_table([], []), 100, 120)
    (raw,) = split_batches(data)
    batch = KafkaPythonBatch(bytes(raw))
    assert batch.base_offset == 100 and batch.next_offset == 120 and list(batch) == []
    assert encode_fetched(as_table([], []), 100, 100) == b""


def test_producer_state_and_the_transactional_flag_are_carried():
    (plain,) = decode_produced(kafka_python_batch([(1, None, b"v", [])]))
    assert plain.producer_id is None and not plain.transactional
    (txn,) = decode_produced(
        kafka_python_batch([(1, None, b"v", [])], producer=(5, 0, 0), transactional=True)
    )
    assert txn.producer_id == 5 and txn.transactional


def test_several_batches_in_one_record_set_decode_in_order():
    data = kafka_python_batch([(1, b"a", b"1", [])]) + kafka_python_batch([(2, b"b", b"2", [])])
    assert [b.records["value"][0].as_py() for b in decode_produced(data)] == [b"1", b"2"]


def test_corrupt_batches_are_refused_before_decoding():
    good = kafka_python_batch([(1, b"k", b"value", [])])
    flipped = bytearray(good)
    flipped[-1] ^= 0xFF
    with pytest.raises(InvalidRecord, match="CRC"):
        decode_produced(bytes(flipped))
    with pytest.raises(InvalidRecord, match="truncated|length"):
        decode_produced(good[:-3])
    with pytest.raises(InvalidRecord, match="truncated"):
        decode_produced(good + b"\x00" * 10)
    old = bytearray(good)
    old[16] = 1  # magic v1
    with pytest.raises(InvalidRecord, match="magic"):
        decode_produced(bytes(old))
    with pytest.raises(InvalidRecord):
        decode_produced(b"")
    lying = bytearray(good)
    struct.pack_into(">i", lying, 8, 2**30)
    with pytest.raises(InvalidRecord, match="length"):
        decode_produced(bytes(lying))


def test_control_batches_from_a_producer_are_refused():
    control = bytearray(empty_batch(0, 0))
    struct.pack_into(">h", control, 21, 0x20)
    from crc32c import crc32c

    struct.pack_into(">I", control, 17, crc32c(bytes(control[21:])))
    with pytest.raises(InvalidRecord, match="control"):
        decode_produced(bytes(control))


def test_an_empty_producer_batch_is_refused():
    with pytest.raises(InvalidRecord, match="no records"):
        decode_produced(empty_batch(0, 0))


@pytest.mark.parametrize("codec", [1, 2, 3, 4], ids=["gzip", "snappy", "lz4", "zstd"])
def test_a_compression_bomb_is_refused_while_it_inflates(codec: int) -> None:
    import tracemalloc

    bomb = kafka_python_batch([(0, None, b"\0" * (64 * 2**20), [])], codec=codec)
    assert len(bomb) < 4 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(RecordTooLarge):
            decode_produced(bomb, max_inflated_bytes=8 * 2**20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2**20, f"inflating the bomb took {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("codec", [1, 2, 3, 4], ids=["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_under_the_bound_decode_whole(codec: int) -> None:
    records = [(i, b"k%d" % i, b"v" * 1000, [("h", b"x")]) for i in range(200)]
    [batch] = decode_produced(kafka_python_batch(records, codec=codec), max_inflated_bytes=2**20)
    assert batch.records.column("value").to_pylist() == [b"v" * 1000] * 200
    assert batch.records.column("key").to_pylist() == [b"k%d" % i for i in range(200)]
