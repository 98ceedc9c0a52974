"""The listener's side of the broker: its actors, a short-lived cache of topic leaders, and
calls that raise only typed errors (``ray_broker._ray``).

A listener serves many connections; they share one ``BrokerLink``. A leader handle is trusted
for ``METADATA_TTL_S`` or until a call says the partition moved (``invalidate``), as a Kafka
client refreshes its metadata on NOT_LEADER_OR_FOLLOWER.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

from ray_broker._ray import await_ref, classify, submit
from ray_broker.config import (
    CONTROLLER_NAME,
    GROUP_COORDINATOR_NAME,
    TRANSACTION_COORDINATOR_NAME,
)
from ray_broker.errors import BrokerError, BrokerNotRunning, BrokerTimeoutError
from ray_broker.kafka.error_codes import ErrorCode, error_code
from ray_broker.partition_transport import DIRECT, PartitionTransport
from ray_broker.placement import singleton
from ray_broker.structs import TopicMetadata

METADATA_TTL_S = 5.0
ADMIN_TIMEOUT_S = 60.0


class BrokerLink:
    """Handles to the namespace's Controller and coordinators, looked up by name."""

    def __init__(self, namespace: str, settings: dict[str, Any]) -> None:
        self.namespace = namespace
        self.settings = settings
        # Records to and from partition leaders go over the data plane (or Ray, as clients'):
        # produce and fetch on separate connections, so a parked fetch never holds a produce up.
        self.produce_plane = PartitionTransport(DIRECT, lane="kafka-produce")
        self._fetch_plane = PartitionTransport(DIRECT, lane="kafka-fetch")
        self._topics: dict[tuple[str, str], tuple[float, TopicMetadata]] = {}

    def _named(self, name: str) -> Any:
        import ray

        try:
            return ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            raise BrokerNotRunning(f"{name} is not running") from None

    @property
    def controller(self) -> Any:
        return self._named(CONTROLLER_NAME)

    @property
    def groups(self) -> Any:
        return self._named(GROUP_COORDINATOR_NAME)

    @property
    def transactions(self) -> Any:
        """Started on first use, as a transactional producer of ours would."""
        from ray_broker.actors.coordination.transaction_coordinator import TransactionCoordinator

        return singleton(
            TransactionCoordinator, TRANSACTION_COORDINATOR_NAME, self.settings, self.namespace
        )

    async def call(
        self, method: Any, *args: Any, timeout_s: float = ADMIN_TIMEOUT_S, **kwargs: Any
    ) -> Any:
        """``await method.remote(*args, **kwargs)`` with typed errors and a deadline."""
        return await await_ref(submit(method, *args, **kwargs), timeout_s)

    async def fetch(self, leader: Any, *args: Any, session: str, timeout_s: float) -> Any:
        """A leader's ``fetch`` (``PartitionTransport.fetch`` arguments) with typed errors and a
        deadline."""
        return await settled(self._fetch_plane.fetch(leader, *args, session=session), timeout_s)

    async def outcome(self, method: Any, *args: Any, **kwargs: Any) -> ErrorCode:
        """Call for its effect only: the Kafka error code a client should see (NONE when the
        call succeeded)."""
        try:
            await self.call(method, *args, **kwargs)
        except BrokerError as exc:
            return error_code(exc)
        return ErrorCode.NONE

    async def topic(self, name: str, session: str, auto_create: bool = False) -> TopicMetadata:
        """Raises UnknownTopicOrPartition, Unauthorized (from the Controller)."""
        key = (name, session)
        cached = self._topics.get(key)
        if cached is not None and time.monotonic() - cached[0] < METADATA_TTL_S:
            return cached[1]
        meta = await self.call(
            self.controller.metadata, name, auto_create, session=session, timeout_s=30.0
        )
        if len(self._topics) > 10_000:
            self._topics.clear()
        self._topics[key] = (time.monotonic(), meta)
        return meta

    def invalidate(self, name: str) -> None:
        for key in [key for key in self._topics if key[0] == name]:
            del self._topics[key]


async def settled(future: concurrent.futures.Future[Any], timeout_s: float) -> Any:
    """A transport's answer on this loop, with typed errors and a deadline.

    Raises:
        BrokerError: the leader's typed error, a mapped Ray failure, or BrokerTimeoutError.
    """
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
    except asyncio.TimeoutError:
        raise BrokerTimeoutError(f"no answer within {timeout_s} s") from None
    except BrokerError:
        raise
    except Exception as exc:  # Ray's own types: classify() maps them
        raise classify(exc) from None
