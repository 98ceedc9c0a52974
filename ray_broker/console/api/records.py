"""Producing and reading records."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from ray_broker.console import records_json
from ray_broker.console.api.common import (
    PRODUCE_TIMEOUT_S,
    ClusterPath,
    Limit,
    OfCluster,
    RawBody,
    User,
    body_schema,
    parsed,
)
from ray_broker.console.browse import browse
from ray_broker.console.records_json import ProduceBatch, ProduceRecord
from ray_broker.errors import BrokerError
from ray_broker.views import record_view, rest_names

router = APIRouter()

# --- records ----------------------------------------------------------------------------------


def produced_json(topic: str, metadata: Any) -> dict[str, Any]:
    return {
        "error_code": 200,
        "topic_name": topic,
        "partition_id": metadata.partition,
        "offset": metadata.offset,
        "timestamp": metadata.timestamp,
    }


@router.post(
    ClusterPath + "/topics/{topic_name}/records",
    dependencies=OfCluster,
    openapi_extra=body_schema(ProduceRecord),
)
def produce(topic_name: str, raw: RawBody, user: User) -> JSONResponse:
    """Produce one record and answer once it is acknowledged (``acks=all``)."""
    body = parsed(ProduceRecord, raw)
    future = user.producer().send(topic_name, **records_json.send_arguments(body))
    return JSONResponse(produced_json(topic_name, future.result(timeout=PRODUCE_TIMEOUT_S)))


@router.post(
    ClusterPath + "/topics/{topic_name}/records:batch",
    dependencies=OfCluster,
    openapi_extra=body_schema(ProduceBatch),
)
def produce_batch(topic_name: str, raw: RawBody, user: User) -> JSONResponse:
    """Produce up to 10,000 records in one body; each entry succeeds or fails on its own
    (Confluent's ``records:batch``)."""
    body = parsed(ProduceBatch, raw)
    producer = user.producer()
    pending: list[tuple[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for entry in body.entries:
        try:
            pending.append(
                (entry.id, producer.send(topic_name, **records_json.send_arguments(entry)))
            )
        except BrokerError as exc:
            failures.append(_failure(entry.id, exc))
    successes = []
    for entry_id, future in pending:
        try:
            successes.append(
                {
                    "id": entry_id,
                    **produced_json(topic_name, future.result(timeout=PRODUCE_TIMEOUT_S)),
                }
            )
        except BrokerError as exc:
            failures.append(_failure(entry_id, exc))
    return JSONResponse({"successes": successes, "failures": failures})


def _failure(entry_id: str, exc: BrokerError) -> dict[str, Any]:
    from ray_broker.console.http_errors import error_body

    return {"id": entry_id, **error_body(exc)}


def _browse_json(records: list[Any]) -> dict[str, Any]:
    return {"kind": "KafkaRecordList", "data": [rest_names(record_view(r)) for r in records]}


@router.get(
    ClusterPath + "/topics/{topic_name}/partitions/{partition_id}/records", dependencies=OfCluster
)
def read_partition(
    topic_name: str,
    partition_id: int,
    user: User,
    offset: Annotated[int | None, Query(ge=0)] = None,
    timestamp: Annotated[int | None, Query(ge=0, description="epoch ms")] = None,
    filter: Annotated[str | None, Query(max_length=4096)] = None,  # noqa: A002 (the API's name)
    limit: Limit = 50,
) -> dict[str, Any]:
    """Records of one partition from ``offset`` (or the first at or after ``timestamp``, or
    the log start), through the broker-side ``filter`` (``headers.type = 'order'``)."""
    records = browse(
        user,
        topic_name,
        partition=partition_id,
        offset=offset,
        timestamp_ms=timestamp,
        filter_text=filter,
        limit=limit,
    )
    return _browse_json(records)


@router.get(ClusterPath + "/topics/{topic_name}/records", dependencies=OfCluster)
def read_topic(
    topic_name: str,
    user: User,
    timestamp: Annotated[int | None, Query(ge=0, description="epoch ms")] = None,
    filter: Annotated[str | None, Query(max_length=4096)] = None,  # noqa: A002
    limit: Limit = 50,
) -> dict[str, Any]:
    """Records of every partition from ``timestamp`` (or the start)."""
    return _browse_json(
        browse(user, topic_name, timestamp_ms=timestamp, filter_text=filter, limit=limit)
    )
