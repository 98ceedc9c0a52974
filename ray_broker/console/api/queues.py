"""Share groups and dead letters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from ray_broker.console.api.common import (
    ClusterPath,
    JsonBody,
    Limit,
    OfCluster,
    User,
)
from ray_broker.console.state import json_ready
from ray_broker.views import dead_letter_view, rest_names

router = APIRouter()

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


@router.get(ClusterPath + "/topics/{topic_name}/dead-letters", dependencies=OfCluster)
def list_dead_letters(topic_name: str, user: User, limit: Limit = 100) -> dict[str, Any]:
    found = user.admin().list_dead_letters(topic_name, limit)
    return {"kind": "DeadLetterList", "data": [rest_names(dead_letter_view(d)) for d in found]}


@router.post(
    ClusterPath + "/topics/{topic_name}/dead-letters:redrive", dependencies=OfCluster + JsonBody
)
def redrive_dead_letters(topic_name: str, body: Redrive, user: User) -> dict[str, Any]:
    """Send the dead letters back to their original topics, exactly once."""
    return {"redriven": user.admin().redrive_dead_letters(topic_name, body.max_records)}
