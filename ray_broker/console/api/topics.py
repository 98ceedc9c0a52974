"""Topics, partitions and topic configs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from ray_broker.console.api.common import (
    MAX_LIST_PAGE,
    ClusterPath,
    JsonBody,
    OfCluster,
    User,
    page,
)
from ray_broker.errors import BrokerError
from ray_broker.structs import TopicDescription
from ray_broker.views import partition_view, rest_names

router = APIRouter()

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
        "partitions": [rest_names(partition_view(p)) for p in topic.partitions],
    }


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
    return {
        "kind": "KafkaPartitionList",
        "data": [rest_names(partition_view(p)) for p in topic.partitions],
    }


@router.get(ClusterPath + "/topics/{topic_name}/partitions/{partition_id}", dependencies=OfCluster)
def get_partition(topic_name: str, partition_id: int, user: User) -> dict[str, Any]:
    topic = user.admin().describe_topic(topic_name)
    if not 0 <= partition_id < len(topic.partitions):
        from ray_broker.errors import UnknownTopicOrPartition

        raise UnknownTopicOrPartition(f"{topic_name!r} has no partition {partition_id}")
    return rest_names(partition_view(topic.partitions[partition_id]))


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
