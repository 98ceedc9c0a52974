"""Admin clients' topic calls, idempotent producer ids, and Kafka's transaction APIs mapped
onto the broker's transaction coordinator."""

from __future__ import annotations

import secrets
from typing import Any

from ray_broker.config import TRANSACTIONAL_ID_SPACE, TopicConfig
from ray_broker.errors import BrokerError
from ray_broker.kafka.context import Connection
from ray_broker.kafka.error_codes import ErrorCode, error_code
from ray_broker.kafka.protocol import Request

TOPIC_RESOURCE = 2
BROKER_RESOURCE = 4
DEFAULT_CONFIG = 5  # DescribeConfigs config_source: DEFAULT_CONFIG
TOPIC_CONFIG = 1  # DYNAMIC_TOPIC_CONFIG
_TOPIC_DEFAULTS = TopicConfig().to_kafka_dict()


async def create_topics(conn: Connection, request: Request) -> dict[str, Any]:
    link = conn.listener.link
    body = request.body
    answers = []
    for topic in body.topics:
        answer = {"name": topic.name, "error_code": ErrorCode.NONE, "error_message": None}
        if topic.assignments:
            answer["error_code"] = ErrorCode.INVALID_REQUEST
            answer["error_message"] = "manual replica assignment is not supported"
        elif not body.validate_only:
            config = {c.name: c.value for c in topic.configs or []}
            try:
                await link.call(
                    link.controller.create_topic,
                    topic.name,
                    None if topic.num_partitions < 0 else topic.num_partitions,
                    None if topic.replication_factor < 0 else topic.replication_factor,
                    config,
                    session=conn.session,
                )
            except BrokerError as exc:
                answer["error_code"] = error_code(exc)
                answer["error_message"] = str(exc)[:500]
        answers.append(answer)
    return {"throttle_time_ms": 0, "topics": answers}


async def delete_topics(conn: Connection, request: Request) -> dict[str, Any]:
    link = conn.listener.link
    answers = []
    for name in request.body.topic_names:
        code = await link.outcome(link.controller.delete_topic, name, session=conn.session)
        if code == ErrorCode.NONE:
            link.invalidate(name)
        answers.append({"name": name, "error_code": code})
    return {"throttle_time_ms": 0, "responses": answers}


async def describe_configs(conn: Connection, request: Request) -> dict[str, Any]:
    link = conn.listener.link
    results = []
    for resource in request.body.resources:
        result: dict[str, Any] = {
            "error_code": ErrorCode.NONE,
            "error_message": None,
            "resource_type": resource.resource_type,
            "resource_name": resource.resource_name,
            "configs": [],
        }
        try:
            if resource.resource_type == TOPIC_RESOURCE:
                described = await link.call(
                    link.controller.describe_topic, resource.resource_name, session=conn.session
                )
                config, defaults = described.config, _TOPIC_DEFAULTS
            elif resource.resource_type == BROKER_RESOURCE:
                config = await link.call(link.controller.broker_config, session=conn.session)
                defaults = config
            else:
                raise _Refused(ErrorCode.INVALID_REQUEST, "only topic and broker resources")
            keys = resource.configuration_keys
            result["configs"] = [
                {
                    "name": name,
                    "value": _config_text(value),
                    "read_only": resource.resource_type == BROKER_RESOURCE,
                    # Kafka's tools show only what differs from the default ("modified").
                    "config_source": DEFAULT_CONFIG
                    if defaults.get(name) == value
                    else TOPIC_CONFIG,
                    "is_sensitive": False,
                    "synonyms": [],
                }
                for name, value in sorted(config.items())
                if keys is None or name in keys
            ]
        except _Refused as refused:
            result["error_code"], result["error_message"] = refused.code, str(refused)
        except BrokerError as exc:
            result["error_code"], result["error_message"] = error_code(exc), str(exc)[:500]
        results.append(result)
    return {"throttle_time_ms": 0, "results": results}


class _Refused(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _config_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


# --- producer ids and transactions --------------------------------------------------------------


async def init_producer_id(conn: Connection, request: Request) -> dict[str, Any]:
    body = request.body
    answer = {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "producer_id": -1}
    answer["producer_epoch"] = -1
    if body.transactional_id is None:
        # An idempotent producer: a random id above the transactional id space, as the
        # broker's own producers draw (ray_broker/producer/producer.py).
        answer["producer_id"] = TRANSACTIONAL_ID_SPACE + secrets.randbelow(
            2**62 - TRANSACTIONAL_ID_SPACE
        )
        answer["producer_epoch"] = 0
        return answer
    link = conn.listener.link
    try:
        producer_id, epoch = await link.call(
            link.transactions.init_producer_id,
            body.transactional_id,
            body.transaction_timeout_ms,
            session=conn.session,
        )
        answer["producer_id"], answer["producer_epoch"] = producer_id, epoch
        conn.listener.txn_epochs.registered(producer_id, epoch)
    except BrokerError as exc:
        answer["error_code"] = error_code(exc)
    return answer


async def add_partitions_to_txn(conn: Connection, request: Request) -> dict[str, Any]:
    body = request.body
    topics = body.v3_and_below_topics or []
    partitions = [(t.name, p) for t in topics for p in t.partitions]
    link = conn.listener.link
    producer_id, epoch = conn.listener.txn_epochs.broker_ids(
        body.v3_and_below_producer_id, body.v3_and_below_producer_epoch
    )
    code = await link.outcome(
        link.transactions.add_partitions,
        body.v3_and_below_transactional_id,
        producer_id,
        epoch,
        partitions,
        session=conn.session,
    )
    return {
        "throttle_time_ms": 0,
        "results_by_topic_v3_and_below": [
            {
                "name": t.name,
                "results_by_partition": [
                    {"partition_index": p, "partition_error_code": code} for p in t.partitions
                ],
            }
            for t in topics
        ],
    }


async def add_offsets_to_txn(conn: Connection, request: Request) -> dict[str, Any]:
    body = request.body
    link = conn.listener.link
    producer_id, epoch = conn.listener.txn_epochs.broker_ids(body.producer_id, body.producer_epoch)
    code = await link.outcome(
        link.transactions.add_offsets,
        body.transactional_id,
        producer_id,
        epoch,
        body.group_id,
        session=conn.session,
    )
    return {"throttle_time_ms": 0, "error_code": code}


async def end_txn(conn: Connection, request: Request) -> dict[str, Any]:
    body = request.body
    link = conn.listener.link
    code = ErrorCode.NONE
    epochs = conn.listener.txn_epochs
    producer_id, epoch = epochs.broker_ids(body.producer_id, body.producer_epoch)
    try:
        next_id, next_epoch = await link.call(
            link.transactions.end_txn,
            body.transactional_id,
            producer_id,
            epoch,
            bool(body.committed),
            allow_empty=False,
            session=conn.session,
        )
        epochs.ended(body.producer_id, body.producer_epoch, next_id, next_epoch)
    except BrokerError as exc:
        code = error_code(exc)
    return {"throttle_time_ms": 0, "error_code": code}


async def txn_offset_commit(conn: Connection, request: Request) -> dict[str, Any]:
    body = request.body
    link = conn.listener.link
    offsets = {
        (t.name, p.partition_index): (p.committed_offset, p.committed_metadata or "")
        for t in body.topics
        for p in t.partitions
    }
    code = await link.outcome(
        link.groups.txn_commit,
        body.group_id,
        None,
        conn.listener.txn_epochs.broker_ids(body.producer_id, body.producer_epoch)[0],
        offsets,
        session=conn.session,
    )
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                "name": t.name,
                "partitions": [
                    {"partition_index": p.partition_index, "error_code": code} for p in t.partitions
                ],
            }
            for t in body.topics
        ],
    }
