"""The HTTP API, shaped after Confluent's REST Proxy v3 (``/v3/clusters/{cluster_id}/...``).

Handlers are plain ``def``: FastAPI runs them on its thread pool, where blocking broker calls
belong. Each acts as the requesting user (``state.acting``); the broker's actors check the
ACLs. Beyond REST Proxy: browsing records (by offset, by time, through the broker-side
filter), share groups, dead-letter queues, users, ACLs and quotas.
"""

from __future__ import annotations

from fastapi import APIRouter

from ray_broker.console.api import cluster, groups, queues, records, security, topics
from ray_broker.console.api.common import User, invalid_body

router = APIRouter(prefix="/v3", tags=["v3"])
for resource in (cluster, topics, records, groups, queues, security):
    router.include_router(resource.router)

__all__ = ["User", "invalid_body", "router"]
