"""The one JSON view of partitions, lags, records and dead letters, and the HTTP API's names."""

from __future__ import annotations

import base64

from ray_broker.structs import DeadLetter, PartitionInfo, PartitionLag, Record
from ray_broker.views import (
    bytes_text,
    bytes_view,
    dead_letter_view,
    lag_view,
    partition_view,
    record_view,
    rest_names,
)


def test_bytes_are_text_when_utf8_and_base64_otherwise_and_round_trip() -> None:
    assert bytes_view("héllo".encode()) == {"type": "STRING", "data": "héllo"}
    binary = b"\xff\x00\x10"
    shown = bytes_view(binary)
    assert shown is not None and shown["type"] == "BINARY"
    assert base64.b64decode(shown["data"]) == binary
    assert bytes_view(None) is None and bytes_text(None) is None
    assert bytes_text(binary) == "base64:" + base64.b64encode(binary).decode()
    assert bytes_view({"already": "decoded"}) == {"type": "JSON", "data": {"already": "decoded"}}


def test_a_partition_view_says_offline_and_under_replicated_once() -> None:
    offline = PartitionInfo(3, "", "", 4, ["r0", "r1"], ["r0"], 0, 10, 10)
    view = partition_view(offline)
    assert view["partition"] == 3 and view["offline"] and not view["under_replicated"]
    healthy = PartitionInfo(0, "r0", "n", 1, ["r0", "r1"], ["r0", "r1"], 0, 5, 5)
    assert not partition_view(healthy)["offline"]
    assert rest_names(view)["partition_id"] == 3 and "partition" not in rest_names(view)


def test_lags_records_and_dead_letters_take_the_rest_names() -> None:
    lag = rest_names(lag_view(PartitionLag("t", 1, 4, 9, 5, "m-1")))
    assert lag == {
        "topic_name": "t",
        "partition_id": 1,
        "current_offset": 4,
        "log_end_offset": 9,
        "lag": 5,
        "consumer_id": "m-1",
    }
    record = Record("t", 2, 7, 1_000, b"k", b"\xfe", [("h", b"v"), ("n", None)])
    shown = rest_names(record_view(record))
    assert shown["topic_name"] == "t" and shown["partition_id"] == 2
    assert shown["value"]["type"] == "BINARY"
    assert shown["headers"] == [{"name": "h", "value": "dg=="}, {"name": "n", "value": None}]
    assert record_view(record, bytes_text)["key"] == "k"
    letter = DeadLetter("t.dlq", 0, 1, 5, None, b"job", "t", 2, 3, 4, "rejected", "bad", "g")
    assert dead_letter_view(letter, bytes_text)["value"] == "job"
    assert dead_letter_view(letter)["original_offset"] == 3
