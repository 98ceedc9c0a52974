"""A consumer's membership in a group: join, background heartbeats, and reconciling assignments.

The heartbeat thread keeps the session alive and fetches the coordinator's latest answer; the
consumer's own thread applies it inside ``poll()`` (as Kafka does), so rebalance callbacks and
the commits they need run where the application expects them. A member that stops calling
``poll()`` for ``max.poll.interval.ms`` leaves the group from the heartbeat thread, so its
partitions move on instead of stalling.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ray_broker._ray import call
from ray_broker.config import ConsumerConfig
from ray_broker.errors import BrokerError, IllegalGeneration
from ray_broker.structs import TopicPartition

logger = logging.getLogger(__name__)


class ConsumerRebalanceListener:
    """Callbacks around rebalances, called from inside ``poll()`` (kafka-python's interface)."""

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Before partitions are given up; their offsets are committed first when auto-commit
        is on. Commit here yourself when it is off."""

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """After partitions were added; positions come from committed offsets."""

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        """Partitions taken away without a chance to commit (this consumer was removed from
        the group). Defaults to ``on_partitions_revoked``."""
        self.on_partitions_revoked(lost)


class GroupMembership:
    def __init__(
        self,
        coordinator: Any,
        config: ConsumerConfig,
        topics: list[str],
        pattern: str | None,
        listener: ConsumerRebalanceListener | None,
    ) -> None:
        assert config.group_id is not None
        self.group_id = config.group_id
        self.config = config
        self.topics = topics
        self.pattern = pattern
        self.listener = listener or ConsumerRebalanceListener()
        self.member_id: str | None = None
        self.generation = -1
        self.owned: set[TopicPartition] = set()
        self._coordinator = coordinator
        self._latest: Any = None
        self._seen_generation = -1
        self._fenced = False
        self._lock = threading.Lock()
        self._last_poll = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._eager = config.partition_assignment_strategy != "cooperative-sticky"

    @property
    def _timeout_s(self) -> float:
        return self.config.request_timeout_ms / 1000

    def _owned_keys(self) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in self.owned]

    # --- coordinator calls ----------------------------------------------------------------------

    def _join(self) -> None:
        answer = call(
            self._coordinator.join,
            self.group_id,
            None,
            self.config.group_instance_id,
            self.config.client_id,
            self.topics,
            self.pattern,
            self.config.partition_assignment_strategy,
            self.config.session_timeout_ms,
            timeout_s=self._timeout_s,
        )
        with self._lock:
            self.member_id = answer.member_id
            self._latest = answer
            self._fenced = False
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._heartbeats, name=f"ray-broker-heartbeat-{self.group_id}", daemon=True
            )
            self._thread.start()

    def _heartbeat_now(self) -> Any:
        answer = call(
            self._coordinator.heartbeat,
            self.group_id,
            self.member_id,
            self._owned_keys(),
            timeout_s=self._timeout_s,
        )
        with self._lock:
            self._latest = answer
        return answer

    def _heartbeats(self) -> None:
        interval = self.config.heartbeat_interval_ms / 1000
        while not self._stop.wait(interval):
            if self.member_id is None or self._fenced:
                continue
            if time.monotonic() - self._last_poll > self.config.max_poll_interval_ms / 1000:
                logger.warning(
                    "poll() not called for max.poll.interval.ms=%d; leaving group %s",
                    self.config.max_poll_interval_ms,
                    self.group_id,
                )
                self._leave_quietly()
                with self._lock:
                    self._fenced = True
                continue
            try:
                self._heartbeat_now()
            except IllegalGeneration:
                with self._lock:
                    self._fenced = True
            except BrokerError as exc:  # coordinator restarting: the session timeout decides
                logger.debug("heartbeat failed: %s", exc)
            except Exception:  # never let the heartbeat thread die: the session would expire
                logger.exception("heartbeat round failed; continuing")

    def _leave_quietly(self) -> None:
        if self.member_id is not None:
            try:
                call(
                    self._coordinator.leave,
                    self.group_id,
                    self.member_id,
                    timeout_s=self._timeout_s,
                )
            except BrokerError as exc:
                logger.debug("leave failed: %s", exc)

    # --- called from poll() ---------------------------------------------------------------------

    def reconcile(
        self, commit: Callable[[set[TopicPartition]], None]
    ) -> tuple[set[TopicPartition], set[TopicPartition]]:
        """Apply the coordinator's latest answer; returns (revoked, assigned) partitions.

        ``commit(partitions)`` is called before partitions are revoked.
        """
        self._last_poll = time.monotonic()
        lost: set[TopicPartition] = set()
        if self._fenced or self.member_id is None:
            if self.owned:
                lost, self.owned = self.owned, set()
                self.listener.on_partitions_lost(lost)
            self._seen_generation = -1
            self._join()
        answer = self._latest
        target = {TopicPartition(t, p) for t, p in answer.target}
        if self._eager and answer.generation != self._seen_generation:
            revoked = set(self.owned)
        else:
            revoked = self.owned - target
        if revoked:
            commit(revoked)
            self.listener.on_partitions_revoked(revoked)
            # Rebound, never mutated: the heartbeat thread reads it.
            self.owned = self.owned - revoked
            # Report at once: other members wait for these partitions.
            answer = self._heartbeat_now()
        granted = {TopicPartition(t, p) for t, p in answer.granted}
        assigned = granted - self.owned
        if assigned:
            self.owned = self.owned | assigned
            self.listener.on_partitions_assigned(assigned)
            answer = self._heartbeat_now()
        self._seen_generation = answer.generation
        self.generation = answer.generation
        return revoked | lost, assigned

    def close(self, leave: bool) -> None:
        """Stop heartbeating; leave the group unless this is a static member (which keeps its
        partitions for session.timeout.ms, so a quick restart gets them back without a
        rebalance)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if leave and self.config.group_instance_id is None:
            self._leave_quietly()
        self.member_id = None
