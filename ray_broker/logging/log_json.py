"""A ``logging.LogRecord`` as one JSON document — what a log topic's values are.

Fields: ``ts`` (epoch ms), ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
``service``, ``host``, ``pid``, ``thread``, ``seq`` (per process, from 0: gaps mean dropped
records, order is checkable), optional ``exception``, ``ray`` (``job_id``, ``actor_id``,
``task_id``, ``node_id`` inside Ray), ``trace_id``/``span_id`` (from the record's attributes,
OpenTelemetry's names included), and ``extra`` (what the call passed in ``extra=``).

Nothing here raises: a message whose arguments do not format, an attribute that does not
serialise, a message too long for a topic (truncated with a marker) — each still becomes a
document.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, NamedTuple

MAX_MESSAGE_BYTES = 64 * 1024
TRUNCATED = "…[truncated {} bytes]"
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_TRACE_ATTRIBUTES = (
    ("trace_id", ("trace_id", "otelTraceID", "dd.trace_id")),
    ("span_id", ("span_id", "otelSpanID", "dd.span_id")),
)


class Captured(NamedTuple):
    """What ``emit`` keeps of a record: everything resolved at the call (arguments may change
    after it), nothing formatted as JSON yet (that happens off the caller's thread)."""

    created: float
    level: str
    logger: str
    message: str
    exception: str | None
    thread: str | None
    extra: dict[str, Any] | None
    task_id: str | None
    seq: int


def message_of(record: logging.LogRecord) -> str:
    """``record.getMessage()``, or a readable stand-in when its arguments do not format."""
    try:
        return record.getMessage()
    except Exception as exc:  # a bad format string, an argument whose __str__ raises
        return f"{_safe_repr(record.msg)} % {_safe_repr(record.args)} (unformattable: {exc!r})"


def extras_of(record: logging.LogRecord) -> dict[str, Any] | None:
    found = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    return found or None


def document(
    captured: Captured, service: str, host: str, pid: int, ray_ids: dict[str, str]
) -> bytes:
    """The JSON bytes of one record, at most about ``MAX_MESSAGE_BYTES`` + the fixed fields.
    Never raises: an extra field JSON cannot hold (a cycle, a dict with tuple keys, an int past
    Python's digit limit) ships as its ``repr``, and a record that still fails ships as a
    document that says so."""
    try:
        return _document(captured, service, host, pid, ray_ids)
    except Exception as exc:  # a shipper that cannot encode one record must ship the rest
        return json.dumps(
            {
                "ts": int(captured.created * 1000),
                "level": captured.level,
                "logger": captured.logger,
                "message": truncated(str(captured.message)),
                "service": service,
                "seq": captured.seq,
                "encoding_error": _safe_repr(exc),
            },
            ensure_ascii=False,
        ).encode("utf-8", errors="replace")


def _document(
    captured: Captured, service: str, host: str, pid: int, ray_ids: dict[str, str]
) -> bytes:
    body: dict[str, Any] = {
        "ts": int(captured.created * 1000),
        "time": datetime.fromtimestamp(captured.created, timezone.utc).isoformat(
            timespec="milliseconds"
        ),
        "level": captured.level,
        "logger": captured.logger,
        "message": truncated(captured.message),
        "service": service,
        "host": host,
        "pid": pid,
        "thread": captured.thread,
        "seq": captured.seq,
    }
    if captured.exception:
        body["exception"] = truncated(captured.exception)
    if ray_ids or captured.task_id:
        body["ray"] = {**ray_ids, **({"task_id": captured.task_id} if captured.task_id else {})}
    extra = dict(captured.extra or {})
    for field, names in _TRACE_ATTRIBUTES:
        for name in names:
            if name in extra:
                body[field] = _safe_str(extra.pop(name))
                break
    if extra:
        body["extra"] = {str(key): _serialisable(value) for key, value in extra.items()}
    text = json.dumps(body, default=_safe_repr, ensure_ascii=False, separators=(",", ":"))
    data = text.encode("utf-8", errors="replace")
    if len(data) > 2 * MAX_MESSAGE_BYTES:  # huge extras: keep the record, drop the extras
        body["extra"] = truncated(_safe_repr(extra))
        data = json.dumps(body, default=_safe_repr, ensure_ascii=False).encode("utf-8", "replace")
    return data


def _serialisable(value: Any) -> Any:
    """``value`` if JSON can hold it (objects it does not know become their repr), else its
    repr, cut to ``MAX_MESSAGE_BYTES``."""
    try:
        json.dumps(value, default=_safe_repr, ensure_ascii=False)
    except Exception:  # ValueError (a cycle, a huge int), TypeError (non-str keys), recursion
        return truncated(_safe_repr(value))
    return value


def truncated(text: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes, with a marker saying how much went."""
    if len(text) * 4 <= limit:  # a character is at most 4 bytes: short texts need no encoding
        return text
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", errors="ignore")
    return kept + TRUNCATED.format(len(data) - len(kept.encode()))


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # a __repr__ that raises, an int past the digit limit
        return f"<unrepresentable {type(value).__name__}>"


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return _safe_repr(value)
