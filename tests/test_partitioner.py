from __future__ import annotations

import pytest

from ray_broker.partitioner import murmur2, partition_for_key


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
