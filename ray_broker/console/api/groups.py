"""Consumer groups: members, lag, offset resets."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

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
from ray_broker.views import lag_view, rest_names

router = APIRouter()

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
        "data": [
            {"consumer_group_id": group_id, **rest_names(lag_view(p))} for p in group.partitions
        ],
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
