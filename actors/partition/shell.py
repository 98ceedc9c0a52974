"""What every group of a ``PartitionActor``'s calls shares: the pieces it drives, its role
(leader or follower, learned from the Controller), and how it reacts when either changes.

The calls themselves are grouped by concern, each in its own module over this shell:
``produce_calls.py`` (writes, ``acks=all``, transactions), ``share_calls.py`` (queue
semantics), ``follower_calls.py`` (the follower side of replication) and ``actor.py`` (fetch,
introspection and housekeeping, and the actor class that joins them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from ray_broker._ray import await_ref, submit
from ray_broker.actors.data_dir import make_private
from ray_broker.actors.lean_arrow import skip_pandas_probe
from ray_broker.actors.partition.arguments import (
    check_epoch_value,
)
from ray_broker.actors.partition.core import Partition
from ray_broker.actors.partition.housekeeping import Housekeeping
from ray_broker.actors.partition.named_actors import NamedActors
from ray_broker.actors.partition.replica import Replica, Role
from ray_broker.actors.partition.replication_links import ReplicationLinks
from ray_broker.actors.partition.share_groups import ShareGroups
from ray_broker.actors.partition.signals import PartitionSignals
from ray_broker.actors.partition.trace_shipper import TraceShipper
from ray_broker.actors.priority import serve_at_normal_priority
from ray_broker.actors.security.access_guard import DISABLED
from ray_broker.actors.security.guarded import GuardedActor
from ray_broker.actors.security.session_tokens import SessionClaims
from ray_broker.config import (
    TopicConfig,
    parse_config,
)
from ray_broker.gc_pause import freeze_loaded_heap
from ray_broker.metrics import PartitionMetrics
from ray_broker.structs import FetchResponse

logger = logging.getLogger(__name__)

ROLE_CALL_TIMEOUT_S = 5.0  # asking the Controller for this replica's role
# Long polls parked at once (fetch and share fetch); more are answered at once, possibly empty,
# so parked polls never take the call slots producers need.
PARKED_FETCHES_MAX = 256


def _was_restarted() -> bool:
    """Whether this actor process replaces one that died (False outside a Ray actor)."""
    try:
        import ray

        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not running as an actor (unit tests)
        return False


class PartitionShell(GuardedActor):
    """The state and role handling under every call group (see the module docstring)."""

    def __init__(
        self,
        topic: str,
        partition: int,
        directory: str,
        config: dict[str, Any],
        maintenance_interval_ms: int = 60_000,
        fetch_max_wait_cap_ms: int = 30_000,
        slot: str = "r0",
        controller: Any = None,
        token: str = "",
        namespace: str = "",
    ) -> None:
        skip_pandas_probe()
        freeze_loaded_heap()
        make_private()
        serve_at_normal_priority()
        self.core = Partition(
            topic, partition, directory, parse_config(TopicConfig, config), replica=slot
        )
        # Role, epoch and replication calls must carry the Controller's token: a caller with
        # only this actor's handle cannot demote a leader or rewrite its log.
        self._token = token
        self._controller = controller
        self._named = NamedActors(namespace, token)  # the coordinators, by name
        self._parked = 0  # long polls waiting for data right now
        self.slot = slot
        self.replica = Replica(slot, self.core, time.monotonic)
        self.signals = PartitionSignals()
        self.housekeeping = Housekeeping(self.core)
        self._maintenance_interval_s = maintenance_interval_ms / 1000
        self._fetch_wait_cap_ms = fetch_max_wait_cap_ms
        self._background: list[asyncio.Task[None]] = []
        self._role_lock = asyncio.Lock()
        # A restarted process must not resume leading the epoch it led before the crash (its
        # high watermark is relearned and would move back within that epoch): it asks the
        # Controller first, which gives a restarted leader a new epoch.
        self._restarted = _was_restarted()
        self.metrics = PartitionMetrics(topic, partition)
        self.traces = TraceShipper(self.core.trace, controller, self._trace_replication, token)
        self.links = ReplicationLinks(
            self.core,
            self.replica,
            self.signals,
            token,
            controller,
            self._on_high_watermark,
            self._stepped_down,
            self._report_state,
        )
        self.shares = ShareGroups(
            self.core,
            self.replica,
            self.signals,
            self.traces,
            self._named,
            controller,
            fetch_max_wait_cap_ms,
        )
        self._init_guard(token, lambda: self._controller)
        if controller is None:  # a stand-alone partition (tests): nobody to ask for rules
            self._guard.apply(DISABLED)

    # --- start-up and roles ---------------------------------------------------------------------

    def _start_background(self) -> None:
        if not self._background:
            loop = asyncio.get_running_loop()
            self._background.append(
                loop.create_task(self.housekeeping.every(self._maintenance_interval_s))
            )
            self._background.append(loop.create_task(self.links.watch_isr()))

    async def _ensure_role(self) -> None:
        """After a restart, learn this replica's role from the Controller."""
        self._start_background()
        if self.replica.role != Role.UNKNOWN or self._controller is None:
            return
        async with self._role_lock:
            if self.replica.role != Role.UNKNOWN:
                return
            state = await await_ref(
                submit(
                    self._controller.replica_state,
                    self.core.topic,
                    self.core.partition,
                    self.slot,
                    self._restarted,
                    session=self._token,
                ),
                ROLE_CALL_TIMEOUT_S,
            )
            if state is not None:
                self._apply_state(**state)

    def _apply_state(self, role: str, epoch: int, replicas: dict[str, Any], isr: list[str]) -> None:
        if role == Role.LEADER.value:
            self._become_leader(epoch, replicas, isr)
        else:
            self._become_follower(epoch)

    async def become_leader(
        self, epoch: int, replicas: dict[str, Any], isr: list[str], *, token: str = ""
    ) -> None:
        """Lead ``epoch`` with these replicas (slot → handle) and in-sync slots (the
        Controller's order; a restarted replica first asks for its current role).

        Raises:
            FencedLeaderEpoch: an older epoch than this replica already knows.
            Unauthorized: the call does not carry the Controller's token.
        """
        self._authorize(token)
        check_epoch_value(epoch)
        if self._restarted:
            await self._ensure_role()
        self._become_leader(epoch, replicas, isr)

    def _become_leader(self, epoch: int, replicas: dict[str, Any], isr: list[str]) -> None:
        self._start_background()
        self.replica.become_leader(epoch, replicas, isr)
        self.links.start(replicas)
        self._on_high_watermark(moved=True)

    async def become_follower(self, epoch: int, *, token: str = "") -> None:
        """Follow the leader of ``epoch``. Raises FencedLeaderEpoch for an older epoch,
        Unauthorized without the Controller's token."""
        self._authorize(token)
        check_epoch_value(epoch)
        if self._restarted:
            await self._ensure_role()
        self._become_follower(epoch)

    def _become_follower(self, epoch: int) -> None:
        self._start_background()
        self.replica.become_follower(epoch)
        self._stepped_down()

    def _stepped_down(self) -> None:
        """This replica no longer leads: drop the leader's state and wake ``acks=all`` waiters
        (they learn they lost the leadership)."""
        self.shares.clear()
        self.core.trace.forget_uncommitted()
        self.links.stop()
        self.signals.high_watermark_moved()

    def _check_leader(self) -> None:
        self.replica.check_leader()

    def _on_high_watermark(self, moved: bool) -> None:
        if moved:
            self.signals.high_watermark_moved()
            self.signals.data_arrived()  # consumers wait for committed records, not appended ones
            if self.core.trace.uncommitted:
                self.core.trace.committed(
                    self.core.high_watermark, in_sync=sorted(self.replica.isr)
                )
                self.traces.start()

    def _trace_replication(self) -> int:
        """The trace topic's replication factor: as many copies as this partition has."""
        return max(len(self.replica.followers) + 1, 1)

    def _report_state(self) -> None:
        leading = self.replica.role == Role.LEADER
        self.metrics.state(
            self.core.log.log_end_offset,
            self.core.high_watermark,
            len(self.replica.isr) if leading else 0,
            len(self.replica.followers) + 1 if leading else 0,
        )

    async def _throttled(
        self, response: FetchResponse, claims: SessionClaims, client_id: str
    ) -> FetchResponse:
        """The answer, held back as long as the caller's fetch quota says."""
        size = response.records_ipc.size
        throttle_ms = self._guard.throttle_ms(claims, client_id, "consumer_byte_rate", size)
        if not throttle_ms:
            return response
        await asyncio.sleep(throttle_ms / 1000)
        return dataclasses.replace(response, throttle_time_ms=throttle_ms)
