"""Reading a traced record's trail back from the trace topic
(``actors/partition/message_trace.py``).

The trail is found with a server-side filter on the trace topic — by the event key
``"<topic>/<partition>/<offset>"`` or by the ``trace.id`` header — so only the record's own
events cross the network, however long the trace log is.
"""

from __future__ import annotations

import json
from typing import Any

from ray_broker.config import TRACE_ID_HEADER, TRACE_TOPIC
from ray_broker.dead_letters import read_all
from ray_broker.errors import InvalidConfig, TopicNotFound
from ray_broker.structs import TraceEvent

# A trail is short (a few events per delivery); this bounds a lookup of a very busy trace id.
TRAIL_MAX_EVENTS = 10_000
_FIXED = ("event", "time_ms", "topic", "partition", "offset", "trace_id")


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def trail(broker: Any, topic: str, partition: int, offset: int) -> list[TraceEvent]:
    """The trace events of record ``topic``/``partition``/``offset``, oldest first; empty if
    the record was not traced (or does not exist).

    Raises:
        InvalidConfig: a partition or offset that is not an int >= 0.
    """
    for name, value in (("partition", partition), ("offset", offset)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidConfig(f"{name} must be an int >= 0, got {value!r}")
    return _read(broker, f"key = {_quoted(f'{topic}/{partition}/{offset}')}")


def trail_by_id(broker: Any, trace_id: str) -> list[TraceEvent]:
    """The trace events of records sent with header ``trace.id`` = ``trace_id``.

    Raises:
        InvalidConfig: an empty or non-str ``trace_id``.
    """
    if not isinstance(trace_id, str) or not trace_id:
        raise InvalidConfig(f"a trace id is a non-empty str, got {trace_id!r}")
    return _read(broker, f"headers[{_quoted(TRACE_ID_HEADER)}] = {_quoted(trace_id)}")


def _read(broker: Any, condition: str) -> list[TraceEvent]:
    consumer = broker.consumer(
        auto_offset_reset="earliest", enable_auto_commit=False, filter=condition
    )
    try:
        try:
            consumer.subscribe([TRACE_TOPIC])
        except TopicNotFound:
            return []  # nothing was ever traced
        ends = consumer.end_offsets(consumer.assignment())
        events = [
            _event(record.value)
            for records in read_all(consumer, ends, TRAIL_MAX_EVENTS)
            for record in records
        ]
    finally:
        consumer.close()
    return sorted(events, key=lambda e: (e.time_ms, e.offset))


def _event(value: bytes) -> TraceEvent:
    fields = json.loads(value)
    details = {k: v for k, v in fields.items() if k not in _FIXED}
    return TraceEvent(
        fields["event"],
        fields["time_ms"],
        fields["topic"],
        fields["partition"],
        fields["offset"],
        fields.get("trace_id"),
        details,
    )
