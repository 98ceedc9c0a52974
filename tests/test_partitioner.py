from __future__ import annotations

import pytest

from ray_broker.producer.partitioner import murmur2, partition_for_key


@pytest.mark.parametrize(
    ("key", "partition"),
    # Kafka's Java client output, as kafka-python's compatibility test records it.
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_partition_for_key_matches_the_java_client(key, partition):
    assert partition_for_key(key, 1000) == partition


def test_murmur2_is_a_signed_32_bit_value():
    values = [murmur2(bytes([i]) * i) for i in range(64)]
    assert all(-(2**31) <= v < 2**31 for v in values)
    assert any(v < 0 for v in values)


def test_vectorized_partitioning_matches_the_java_vectors_and_the_scalar_path():
    import random

    import pyarrow as pa

    from ray_broker.producer.partitioner import partitions_for_keys

    java = [b"", b"a", b"ab", b"abc", b"123456789", b"\x00 "]
    assert partitions_for_keys(pa.array(java, pa.binary()), 1000).tolist() == [
        681,
        524,
        434,
        107,
        566,
        742,
    ]
    rng = random.Random(5)
    keys = [None if rng.random() < 0.05 else rng.randbytes(rng.randint(0, 40)) for _ in range(5000)]
    array = pa.chunked_array(
        [pa.array(keys[:2500], pa.binary()), pa.array(keys[2500:], pa.binary())]
    )
    expected = [-1 if k is None else partition_for_key(k, 12) for k in keys]
    assert partitions_for_keys(array, 12).tolist() == expected
    assert (
        partitions_for_keys(pa.array(keys, pa.binary()).slice(7, 100), 12).tolist()
        == expected[7:107]
    )
