"""The HTTP API, shaped after Confluent's REST Proxy v3 (``/v3/clusters/{cluster_id}/...``).

Handlers are plain ``def``: FastAPI runs them on its thread pool, where blocking broker calls
belong. Each acts as the requesting user (``state.acting``); the broker's actors check the
ACLs. Beyond REST Proxy: browsing records (by offset, by time, through the broker-side
filter), share groups, dead-letter queues, users, ACLs and quotas.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ray_broker.console import records_json
from ray_broker.console.browse import MAX_PAGE_RECORDS, browse
from ray_broker.console.gateway import Account
from ray_broker.console.records_json import ProduceBatch, ProduceRecord
from ray_broker.console.state import acting, console_state, json_ready
from ray_broker.errors import BrokerError, InvalidRequest
from ray_broker.structs import Acl, QuotaEntity, TopicDescription

MAX_LIST_PAGE = 1_000
PRODUCE_TIMEOUT_S = 60.0

router = APIRouter(prefix="/v3", tags=["v3"])
User = Annotated[Account, Depends(acting)]


def require_json(request: Request) -> None:
    """Bodies are JSON only: a cross-site HTML form cannot send ``application/json``, so this
    is also what keeps the API safe from CSRF with Basic credentials a browser remembers.

    Raises:
        InvalidRequest (415): another content type.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise InvalidRequest(
            f"the body must be application/json, got {kind or 'no content type'}", status=415
        )


JsonBody = [Depends(require_json)]


async def raw_json(request: Request) -> bytes:
    """The body's bytes, for the produce endpoints to validate in one pass
    (``model_validate_json``: a third of the CPU of FastAPI's parse-then-validate on a
    thousand-record batch), on the handler's thread rather than the event loop."""
    require_json(request)
    return await request.body()


M = TypeVar("M", bound=BaseModel)


def parsed(model: type[M], body: bytes) -> M:
    """Raises InvalidRequest: malformed JSON (400) or a body ``model`` refuses (422)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_body(exc.errors()) from None


def invalid_body(problems: Sequence[Any]) -> InvalidRequest:
    """What a body that does not validate is answered with (here and for FastAPI's own
    validation of the other endpoints)."""
    malformed = any(p.get("type") == "json_invalid" for p in problems)
    text = "; ".join(
        f"{'.'.join(str(x) for x in p.get('loc', ()))}: {p.get('msg', '')}" for p in problems[:10]
    )
    return InvalidRequest(
        ("malformed JSON: " if malformed else "") + text, status=400 if malformed else 422
    )


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body read by ``raw_json`` (the schema is inlined, its
    definitions under ``$defs`` as JSON Schema 2020-12 allows)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        },
        "x-body-schemas": {model.__name__: schema, **schema.pop("$defs", {})},
    }


RawBody = Annotated[bytes, Depends(raw_json)]


def cluster(request: Request, cluster_id: str) -> None:
    """Raises InvalidRequest (404): not this broker's cluster id."""
    if cluster_id != console_state(request).cluster_id:
        raise InvalidRequest(f"no cluster {cluster_id!r} here", status=404)


ClusterPath = "/clusters/{cluster_id}"
OfCluster = [Depends(cluster)]


# --- cluster ----------------------------------------------------------------------------------


def _cluster_json(request: Request, user: Account) -> dict[str, Any]:
    state = console_state(request)
    return {
        "kind": "KafkaCluster",
        "cluster_id": state.cluster_id,
        "namespace": state.gateway.namespace,
        "secured": state.gateway.secured,
        "principal": user.principal,
    }


@router.get("/clusters")
def list_clusters(request: Request, user: User) -> dict[str, Any]:
    return {"kind": "KafkaClusterList", "data": [_cluster_json(request, user)]}


@router.get(ClusterPath, dependencies=OfCluster)
def get_cluster(request: Request, user: User) -> dict[str, Any]:
    return _cluster_json(request, user)


@router.get(ClusterPath + "/brokers", dependencies=OfCluster)
def list_nodes(request: Request, user: User) -> dict[str, Any]:
    """Ray nodes with how many partition leaders each holds (as of the last sample); for
    users allowed ``describe`` on the cluster (a tenant's users are not)."""
    user.admin().describe_cluster()  # raises Unauthorized (403) for the others
    snapshot = console_state(request).monitor.snapshot
    nodes = [{**n, "leaders": snapshot.leaders_on(n["node_id"])} for n in snapshot.nodes]
    return {"kind": "KafkaBrokerList", "data": nodes}


@router.get(ClusterPath + "/health", dependencies=OfCluster)
def health(user: User) -> dict[str, Any]:
    """Under-replicated and offline partitions of the topics this user may describe, now."""
    admin = user.admin()
    described = admin.describe_topics(admin.list_topics())
    under, offline = [], []
    for name, topic in described.items():
        if isinstance(topic, BrokerError):
            continue
        for p in topic.partitions:
            if p.offline:
                offline.append({"topic_name": name, "partition_id": p.partition})
            elif p.under_replicated:
                under.append({"topic_name": name, "partition_id": p.partition})
    return {"under_replicated_partitions": under, "offline_partitions": offline}


# --- topics -----------------------------------------------------------------------------------


class ConfigEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    value: str | int | float | bool | None = None


class CreateTopic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic_name: str = Field(min_length=1, max_length=249)
    partitions_count: int | None = Field(default=None, ge=1, le=10_000)
    replication_factor: int | None = Field(default=None, ge=1, le=100)
    configs: list[ConfigEntry] = Field(default_factory=list, max_length=200)


class AlterConfigs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: list[ConfigEntry] = Field(min_length=1, max_length=200)


def topic_json(topic: TopicDescription) -> dict[str, Any]:
    return {
        "kind": "KafkaTopic",
        "topic_name": topic.name,
        "topic_id": topic.topic_id,
        "partitions_count": len(topic.partitions),
        "replication_factor": max((len(p.replicas) for p in topic.partitions), default=0),
        "is_internal": topic.name.startswith("__"),
        "partitions": [partition_json(p) for p in topic.partitions],
    }


def partition_json(p: Any) -> dict[str, Any]:
    return {
        "partition_id": p.partition,
        "leader": p.leader,
        "leader_node_id": p.leader_node_id,
        "leader_epoch": p.leader_epoch,
        "replicas": list(p.replicas),
        "isr": list(p.isr),
        "log_start_offset": p.log_start_offset,
        "high_watermark": p.high_watermark,
        "log_end_offset": p.log_end_offset,
        "under_replicated": p.under_replicated,
        "offline": p.offline,
    }


def page(names: list[str], limit: int, start_after: str | None) -> tuple[list[str], str | None]:
    """A page of sorted ``names`` after ``start_after``; the next page's cursor, if any."""
    rest = [n for n in names if start_after is None or n > start_after]
    chunk = rest[:limit]
    return chunk, (chunk[-1] if len(rest) > limit else None)


@router.get(ClusterPath + "/topics", dependencies=OfCluster)
def list_topics(
    user: User,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_PAGE)] = 100,
    start_after: str | None = None,
    include_internal: bool = False,
) -> dict[str, Any]:
    admin = user.admin()
    names, next_cursor = page(admin.list_topics(include_internal), limit, start_after)
    described = admin.describe_topics(names)
    data = [topic_json(d) for d in described.values() if not isinstance(d, BrokerError)]
    return {"kind": "KafkaTopicList", "data": data, "next_start_after": next_cursor}


@router.post(ClusterPath + "/topics", dependencies=OfCluster + JsonBody, status_code=201)
def create_topic(body: CreateTopic, user: User) -> dict[str, Any]:
    config = {c.name: c.value for c in body.configs}
    created = user.admin().create_topic(
        body.topic_name, body.partitions_count, body.replication_factor, config or None
    )
    return topic_json(created)


@router.get(ClusterPath + "/topics/{topic_name}", dependencies=OfCluster)
def get_topic(topic_name: str, user: User) -> dict[str, Any]:
    return topic_json(user.admin().describe_topic(topic_name))


@router.delete(ClusterPath + "/topics/{topic_name}", dependencies=OfCluster, status_code=204)
def delete_topic(topic_name: str, user: User) -> Response:
    user.admin().delete_topic(topic_name)
    return Response(status_code=204)


@router.get(ClusterPath + "/topics/{topic_name}/partitions", dependencies=OfCluster)
def list_partitions(topic_name: str, user: User) -> dict[str, Any]:
    topic = user.admin().describe_topic(topic_name)
    return {"kind": "KafkaPartitionList", "data": [partition_json(p) for p in topic.partitions]}


@router.get(ClusterPath + "/topics/{topic_name}/partitions/{partition_id}", dependencies=OfCluster)
def get_partition(topic_name: str, partition_id: int, user: User) -> dict[str, Any]:
    topic = user.admin().describe_topic(topic_name)
    if not 0 <= partition_id < len(topic.partitions):
        from ray_broker.errors import UnknownTopicOrPartition

        raise UnknownTopicOrPartition(f"{topic_name!r} has no partition {partition_id}")
    return partition_json(topic.partitions[partition_id])


@router.get(ClusterPath + "/topics/{topic_name}/configs", dependencies=OfCluster)
def list_configs(topic_name: str, user: User) -> dict[str, Any]:
    config = user.admin().describe_topic(topic_name).config
    return {
        "kind": "KafkaTopicConfigList",
        "data": [{"name": k, "value": v} for k, v in sorted(config.items())],
    }


@router.post(
    ClusterPath + "/topics/{topic_name}/configs:alter",
    dependencies=OfCluster + JsonBody,
    status_code=204,
)
def alter_configs(topic_name: str, body: AlterConfigs, user: User) -> Response:
    user.admin().alter_topic_config(topic_name, {c.name: c.value for c in body.data})
    return Response(status_code=204)


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
    return {"kind": "KafkaRecordList", "data": [records_json.record_json(r) for r in records]}


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_RECORDS)]


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


# --- consumer groups --------------------------------------------------------------------------


class ResetOffsets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic_name: str = Field(min_length=1, max_length=249)
    to: Literal["earliest", "latest", "datetime", "offset"]
    value: int | datetime | None = None


def group_json(group: Any) -> dict[str, Any]:
    lags = [p.lag for p in group.partitions if p.lag is not None]
    return {
        "kind": "KafkaConsumerGroup",
        "consumer_group_id": group.group_id,
        "state": group.state,
        "generation": group.generation,
        "partition_assignor": group.strategy,
        "consumers": [
            {
                "consumer_id": m.member_id,
                "instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "assignments": [{"topic_name": t, "partition_id": p} for t, p in m.assignment],
            }
            for m in group.members
        ],
        "total_lag": sum(lags),
        "max_lag": max(lags, default=0),
    }


def lag_json(group_id: str, p: Any) -> dict[str, Any]:
    return {
        "consumer_group_id": group_id,
        "topic_name": p.topic,
        "partition_id": p.partition,
        "current_offset": p.committed_offset,
        "log_end_offset": p.log_end_offset,
        "lag": p.lag,
        "consumer_id": p.member_id,
    }


@router.get(ClusterPath + "/consumer-groups", dependencies=OfCluster)
def list_groups(
    user: User,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_PAGE)] = 100,
    start_after: str | None = None,
) -> dict[str, Any]:
    listed = {g.group_id: g for g in user.admin().list_groups()}
    ids, next_cursor = page(sorted(listed), limit, start_after)
    data = [
        {"consumer_group_id": g, "state": listed[g].state, "members": listed[g].members}
        for g in ids
    ]
    return {"kind": "KafkaConsumerGroupList", "data": data, "next_start_after": next_cursor}


@router.get(ClusterPath + "/consumer-groups/{group_id}", dependencies=OfCluster)
def get_group(group_id: str, user: User) -> dict[str, Any]:
    return group_json(user.admin().describe_group(group_id))


@router.get(ClusterPath + "/consumer-groups/{group_id}/consumers", dependencies=OfCluster)
def list_consumers(group_id: str, user: User) -> dict[str, Any]:
    return {"kind": "KafkaConsumerList", "data": get_group(group_id, user)["consumers"]}


@router.get(ClusterPath + "/consumer-groups/{group_id}/lags", dependencies=OfCluster)
def list_lags(group_id: str, user: User) -> dict[str, Any]:
    group = user.admin().describe_group(group_id)
    return {
        "kind": "KafkaConsumerLagList",
        "data": [lag_json(group_id, p) for p in group.partitions],
    }


@router.get(ClusterPath + "/consumer-groups/{group_id}/lag-summary", dependencies=OfCluster)
def lag_summary(group_id: str, user: User) -> dict[str, Any]:
    group = user.admin().describe_group(group_id)
    lags = [p for p in group.partitions if p.lag is not None]
    worst = max(lags, key=lambda p: p.lag or 0, default=None)
    return {
        "kind": "KafkaConsumerGroupLagSummary",
        "consumer_group_id": group_id,
        "total_lag": sum(p.lag or 0 for p in lags),
        "max_lag": worst.lag if worst else 0,
        "max_lag_topic_name": worst.topic if worst else None,
        "max_lag_partition_id": worst.partition if worst else None,
    }


@router.post(
    ClusterPath + "/consumer-groups/{group_id}/offsets:reset", dependencies=OfCluster + JsonBody
)
def reset_offsets(group_id: str, body: ResetOffsets, user: User) -> dict[str, Any]:
    """Move an empty group's committed offsets (409 GroupNotEmpty while members run)."""
    moved = user.admin().reset_offsets(group_id, body.topic_name, body.to, body.value)
    return {
        "data": [
            {"topic_name": tp.topic, "partition_id": tp.partition, "offset": offset}
            for tp, offset in sorted(moved.items())
        ]
    }


@router.delete(ClusterPath + "/consumer-groups/{group_id}", dependencies=OfCluster, status_code=204)
def delete_group(group_id: str, user: User) -> Response:
    user.admin().delete_group(group_id)
    return Response(status_code=204)


# --- share groups and dead letters ------------------------------------------------------------


@router.get(ClusterPath + "/share-groups", dependencies=OfCluster)
def list_share_groups(user: User) -> dict[str, Any]:
    return {"kind": "ShareGroupList", "data": user.admin().list_share_groups()}


@router.get(ClusterPath + "/share-groups/{group_id}", dependencies=OfCluster)
def get_share_group(group_id: str, user: User) -> dict[str, Any]:
    """Members, and per partition the records in flight, available, dead-lettered, the lag
    and the delivery window."""
    return json_ready(user.admin().describe_share_group(group_id))


@router.delete(ClusterPath + "/share-groups/{group_id}", dependencies=OfCluster, status_code=204)
def delete_share_group(group_id: str, user: User) -> Response:
    user.admin().delete_share_group(group_id)
    return Response(status_code=204)


class Redrive(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_records: int | None = Field(default=None, ge=1, le=10_000_000)


def dead_letter_json(d: Any) -> dict[str, Any]:
    return {
        "partition_id": d.partition,
        "offset": d.offset,
        "timestamp": d.timestamp,
        "key": records_json.shown(d.key),
        "value": records_json.shown(d.value),
        "original_topic": d.original_topic,
        "original_partition": d.original_partition,
        "original_offset": d.original_offset,
        "delivery_count": d.delivery_count,
        "reason": d.reason,
        "error": d.error,
        "group_id": d.group_id,
    }


@router.get(ClusterPath + "/topics/{topic_name}/dead-letters", dependencies=OfCluster)
def list_dead_letters(topic_name: str, user: User, limit: Limit = 100) -> dict[str, Any]:
    found = user.admin().list_dead_letters(topic_name, limit)
    return {"kind": "DeadLetterList", "data": [dead_letter_json(d) for d in found]}


@router.post(
    ClusterPath + "/topics/{topic_name}/dead-letters:redrive", dependencies=OfCluster + JsonBody
)
def redrive_dead_letters(topic_name: str, body: Redrive, user: User) -> dict[str, Any]:
    """Send the dead letters back to their original topics, exactly once."""
    return {"redriven": user.admin().redrive_dead_letters(topic_name, body.max_records)}


# --- users, ACLs, quotas (administrators) -----------------------------------------------------


class CreateUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)
    superuser: bool = False


class AclBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principal: str = Field(min_length=1, max_length=300)
    resource_type: str = Field(min_length=1, max_length=40)
    resource_name: str = Field(min_length=1, max_length=300)
    operation: str = Field(min_length=1, max_length=40)
    permission: str = "allow"
    pattern_type: str = "literal"


class QuotaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str | None = None
    client_id: str | None = None
    tenant: str | None = None
    values: dict[str, float | None] = Field(min_length=1, max_length=10)


@router.get(ClusterPath + "/users", dependencies=OfCluster)
def list_users(user: User) -> dict[str, Any]:
    return {"kind": "UserList", "data": json_ready(user.admin().list_users())}


@router.post(ClusterPath + "/users", dependencies=OfCluster + JsonBody, status_code=201)
def create_user(body: CreateUser, user: User) -> dict[str, Any]:
    user.admin().create_user(body.name, body.password, superuser=body.superuser)
    return {"name": body.name, "superuser": body.superuser}


@router.delete(ClusterPath + "/users/{name}", dependencies=OfCluster, status_code=204)
def delete_user(name: str, user: User) -> Response:
    user.admin().delete_user(name)
    return Response(status_code=204)


def acl_json(acl: Acl) -> dict[str, Any]:
    return {
        "principal": acl.principal,
        "resource_type": acl.resource_type,
        "resource_name": acl.name,
        "operation": acl.operation,
        "permission": acl.permission,
        "pattern_type": acl.pattern,
    }


@router.get(ClusterPath + "/acls", dependencies=OfCluster)
def list_acls(
    user: User,
    principal: str | None = None,
    resource_type: str | None = None,
    resource_name: str | None = None,
) -> dict[str, Any]:
    found = user.admin().describe_acls(principal, resource_type, resource_name)
    return {"kind": "KafkaAclList", "data": [acl_json(a) for a in found]}


@router.post(ClusterPath + "/acls", dependencies=OfCluster + JsonBody, status_code=201)
def create_acl(body: AclBody, user: User) -> dict[str, Any]:
    acl = Acl(
        body.principal,
        body.resource_type,
        body.resource_name,
        body.operation,
        body.permission,
        body.pattern_type,
    )
    return {"data": [acl_json(a) for a in user.admin().create_acls([acl])]}


@router.delete(ClusterPath + "/acls", dependencies=OfCluster)
def delete_acls(
    user: User,
    principal: str | None = None,
    resource_type: str | None = None,
    resource_name: str | None = None,
) -> dict[str, Any]:
    if principal is None and resource_type is None and resource_name is None:
        raise InvalidRequest(
            "name at least one of principal, resource_type, resource_name", status=422
        )
    deleted = user.admin().delete_acls(principal, resource_type, resource_name)
    return {"data": [acl_json(a) for a in deleted]}


@router.get(ClusterPath + "/quotas", dependencies=OfCluster)
def list_quotas(user: User) -> dict[str, Any]:
    return {"kind": "QuotaList", "data": user.admin().describe_quotas()}


@router.post(ClusterPath + "/quotas", dependencies=OfCluster + JsonBody)
def alter_quotas(body: QuotaBody, user: User) -> dict[str, Any]:
    entity = QuotaEntity(
        **{
            k: v
            for k, v in (
                ("user", body.user),
                ("client_id", body.client_id),
                ("tenant", body.tenant),
            )
            if v is not None
        }
    )
    return {"values": user.admin().alter_quotas(entity, body.values)}
