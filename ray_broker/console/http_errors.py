"""The one place a ``BrokerError`` becomes an HTTP answer: a status and a JSON body naming the
typed error, as Confluent's REST Proxy answers (``error_code`` is the status followed by two
digits), never a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from ray_broker import errors

logger = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides.
STATUS: list[tuple[type[errors.BrokerError], int]] = [
    (errors.AuthenticationFailed, 401),
    (errors.Unauthorized, 403),
    (errors.TopicNotFound, 404),
    (errors.GroupNotFound, 404),
    (errors.TransactionalIdNotFound, 404),
    (errors.TopicExists, 409),
    (errors.GroupNotEmpty, 409),
    (errors.RecordTooLarge, 413),
    (errors.QuotaExceeded, 429),
    (errors.OffsetOutOfRange, 416),
    (errors.InvalidFilter, 400),
    (errors.InvalidConfig, 400),
    (errors.InvalidTopicName, 400),
    (errors.InvalidPartitions, 400),
    (errors.InvalidReplicationFactor, 400),
    (errors.InvalidRecord, 400),
    (errors.SerializationError, 400),
    (errors.InvalidRecordState, 409),
]


def status_of(exc: errors.BrokerError) -> int:
    if isinstance(exc, errors.InvalidRequest):
        return exc.status or 400
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    # Retriable: the broker is moving (a leader election, a restart) — come back later.
    return 503 if exc.retriable else 409


def error_body(exc: errors.BrokerError) -> dict[str, Any]:
    status = status_of(exc)
    return {
        "error_code": status * 100 + _SUFFIX.get(type(exc).__name__, 0),
        "error": type(exc).__name__,
        "message": str(exc),
        "retriable": exc.retriable,
    }


def headers_of(exc: errors.BrokerError) -> dict[str, str]:
    if isinstance(exc, errors.AuthenticationFailed):
        return {"WWW-Authenticate": 'Basic realm="ray-broker", charset="UTF-8"'}
    if exc.retriable:
        throttle_ms = getattr(exc, "throttle_ms", None) or 1000
        return {"Retry-After": str(max(1, round(throttle_ms / 1000)))}
    return {}


# Confluent's codes where one exists (40401 unknown topic, 40403 unknown group...).
_SUFFIX = {
    "TopicNotFound": 1,
    "UnknownTopicOrPartition": 2,
    "GroupNotFound": 3,
    "TopicExists": 2,
}
