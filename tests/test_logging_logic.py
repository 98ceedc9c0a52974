"""The logging handler's plain parts, without Ray: the JSON document of a record (hostile
arguments, huge messages, exceptions, trace ids), the bounded buffer's drop counting, and how
``ray-broker tail`` parses durations and shows lines."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ray_broker.errors import InvalidConfig
from ray_broker.log_view import line, parsed, since_ms
from ray_broker.logging.log_buffer import LogBuffer
from ray_broker.logging.log_json import (
    MAX_MESSAGE_BYTES,
    Captured,
    document,
    extras_of,
    message_of,
    truncated,
)


def record(msg, *args, **kwargs) -> logging.LogRecord:
    made = logging.LogRecord("app.pay", logging.ERROR, __file__, 1, msg, args, None)
    made.__dict__.update(kwargs)
    return made


def captured(message: str, **fields) -> Captured:
    base = dict(
        created=1_767_225_600.25,
        level="ERROR",
        logger="app.pay",
        message=message,
        exception=None,
        thread="MainThread",
        extra=None,
        task_id=None,
        seq=7,
    )
    return Captured(**{**base, **fields})


class Explodes:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


def test_a_record_becomes_one_json_document_with_its_context():
    made = record("paid %s", 42, trace_id="abc123", order={"id": 9}, otelSpanID="s1")
    body = json.loads(
        document(
            captured(message_of(made), extra=extras_of(made), task_id="t1"),
            "checkout",
            "host-a",
            123,
            {"job_id": "01000000"},
        )
    )
    assert body["message"] == "paid 42" and body["level"] == "ERROR"
    assert body["ts"] == 1_767_225_600_250 and body["time"].startswith("2026-01-01T00:00:00.250")
    assert (body["service"], body["host"], body["pid"], body["seq"]) == (
        "checkout",
        "host-a",
        123,
        7,
    )
    assert body["trace_id"] == "abc123" and body["span_id"] == "s1"
    assert body["extra"] == {"order": {"id": 9}}
    assert body["ray"] == {"job_id": "01000000", "task_id": "t1"}


def test_arguments_that_do_not_format_or_serialise_still_make_a_record():
    bad_format = record("%d items", "not a number")
    assert "unformattable" in message_of(bad_format) and "not a number" in message_of(bad_format)
    hostile = record("value: %s", Explodes())
    assert "unformattable" in message_of(hostile) and "unrepresentable" in message_of(hostile)
    body = json.loads(
        document(captured("x", extra={"thing": Explodes(), "obj": object()}), "s", "h", 1, {})
    )
    assert "unrepresentable Explodes" in body["extra"]["thing"]
    assert body["extra"]["obj"].startswith("<object object")


def test_huge_messages_are_truncated_with_a_marker_never_refused():
    huge = "é" * (MAX_MESSAGE_BYTES * 3)
    body = json.loads(document(captured(huge, exception="x" * 10**6), "s", "h", 1, {}))
    assert body["message"].endswith("bytes]") and "truncated" in body["message"]
    assert len(body["message"].encode()) < MAX_MESSAGE_BYTES + 100
    assert len(body["exception"].encode()) < MAX_MESSAGE_BYTES + 100
    huge_extra = json.loads(document(captured("m", extra={"blob": "y" * 10**6}), "s", "h", 1, {}))
    assert len(json.dumps(huge_extra)) < 3 * MAX_MESSAGE_BYTES


@given(st.text(), st.integers(min_value=1, max_value=200))
def test_truncation_keeps_valid_utf8_within_the_limit(text: str, limit: int):
    cut = truncated(text, limit)
    if len(text.encode()) <= limit:
        assert cut == text
    else:
        kept = cut[: cut.rindex("…[truncated")]
        assert text.startswith(kept) and len(kept.encode()) <= limit


def test_exceptions_are_captured_as_text():
    try:
        raise ValueError("boom")
    except ValueError:
        made = logging.LogRecord("a", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = logging.Formatter().formatException(made.exc_info)
    body = json.loads(document(captured("failed", exception=text), "s", "h", 1, {}))
    assert "ValueError: boom" in body["exception"] and "Traceback" in body["exception"]


def test_the_buffer_drops_and_counts_beyond_its_bound_including_what_is_in_flight():
    buffer: LogBuffer[int] = LogBuffer(capacity=3)
    assert all(buffer.append(i) for i in range(3))
    assert not buffer.append(3) and buffer.take_dropped() == 1 and buffer.take_dropped() == 0
    assert buffer.take(2, 0) == [0, 1] and buffer.pending == 3
    assert not buffer.append(4)  # taken but not acknowledged still counts
    buffer.done(2)
    assert buffer.append(5) and buffer.append(6)
    assert buffer.take(10, 0) == [2, 5, 6] and buffer.dropped_total == 2
    assert buffer.take(10, 0.01) == []


def test_since_durations():
    assert [since_ms(t) for t in ("10m", "90s", "2h", "1d", "500ms", "5")] == [
        600_000,
        90_000,
        7_200_000,
        86_400_000,
        500,
        5_000,
    ]
    for bad in ("", "ten minutes", "-5m", "5y"):
        with pytest.raises(InvalidConfig):
            since_ms(bad)


def test_tail_lines_show_level_service_and_message_and_raw_values_as_they_are():
    value = document(
        captured("card declined", exception="Traceback\nValueError"), "checkout", "h", 1, {}
    )
    shown = line(value)
    assert "ERROR" in shown.plain and "checkout" in shown.plain and "card declined" in shown.plain
    assert "    ValueError" in shown.plain
    assert any("red" in str(span.style) for span in shown.spans)
    assert line(b"plain text").plain == "plain text" and parsed(b"[1, 2]") is None
    assert line(None).plain == "" and parsed(b"\xff") is None


def _cyclic() -> dict:
    loop: dict = {}
    loop["self"] = loop
    return loop


@pytest.mark.parametrize(
    "bad",
    [_cyclic(), {(1, 2): "tuple key"}, 10**5000, Explodes()],
    ids=["cycle", "tuple-keyed", "huge-int", "explodes"],
)
def test_an_extra_json_cannot_hold_still_ships_as_its_repr(bad):
    doc = json.loads(document(captured("x", extra={"ctx": bad, "fine": 1}), "svc", "h", 1, {}))
    assert doc["message"] == "x" and doc["extra"]["fine"] == 1
    assert isinstance(doc["extra"]["ctx"], str)


def test_messages_are_cut_when_captured_and_the_buffer_is_bounded_in_bytes():
    from ray_broker.logging.handler import BrokerHandler

    handler = BrokerHandler.__new__(BrokerHandler)  # no broker: only emit's capture is under test
    logging.Handler.__init__(handler)
    handler._buffer = LogBuffer(capacity=1_000, capacity_bytes=4 * MAX_MESSAGE_BYTES)
    handler._task_id = None
    handler._seq = iter(range(10**6))
    handler._outage_reported = True  # quiet
    handler.topic = "logs"
    for _ in range(30):
        handler.emit(record("%s", "m" * 10_000_000))
    kept = handler._buffer.take(100, 0)
    assert 1 <= len(kept) <= 4, "the byte bound let 10 MB messages pile up"
    assert all(len(c.message.encode()) < MAX_MESSAGE_BYTES + 100 for c in kept)
    assert handler._buffer.dropped_total == 30 - len(kept)


def test_the_byte_bound_counts_what_is_in_flight_until_it_is_done():
    buffer: LogBuffer[int] = LogBuffer(capacity=100, capacity_bytes=10)
    assert buffer.append(1, 6) and not buffer.append(2, 6) and buffer.append(3, 4)
    assert buffer.take(10, 0) == [1, 3] and buffer.pending_bytes == 10
    assert not buffer.append(4, 1)
    buffer.done(2)
    assert buffer.pending_bytes == 0 and buffer.append(5, 10)
