"""The leader side of replication over Ray: one sender task per follower, and the ISR watch.

Each task drives a ``FollowerSender`` (``replication.py``): it sends the sender's next request
to the follower's ``PartitionActor`` and hands the answer back — over the data plane (one
connection per follower, opened from this actor's loop; ``acks=all`` then costs a socket
round trip), or by a Ray call while the follower's endpoint is unknown or unreachable. Every
failure is mapped once (``ray_broker._ray.classify``); the task never exits while its epoch
lasts — a follower that is down simply stays out of the in-sync set until it answers again.

The ISR watch proposes in-sync changes (``Replica.isr_proposal``) to the Controller, which
records them before the leader applies them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ray_broker import frames
from ray_broker._ray import await_ref, classify, submit
from ray_broker.actors.partition.core import Partition
from ray_broker.actors.partition.replica import Replica
from ray_broker.actors.partition.replication import EpochQuery, FollowerSender, Push
from ray_broker.actors.partition.signals import PartitionSignals
from ray_broker.data_plane_connection import RAY_FALLBACK_S, Connection
from ray_broker.errors import (
    BrokerError,
    FencedLeaderEpoch,
    InvalidRecord,
    LeaderUnreachable,
    PartitionUnavailable,
)
from ray_broker.storage.ipc import to_ipc

logger = logging.getLogger(__name__)

# Records per replication request, and how long an idle sender waits before a heartbeat push
# (which carries the high watermark and keeps the follower's lag clock fresh).
REPLICA_FETCH_RECORDS = 100_000
REPLICA_IDLE_PUSH_MS = 200
REPLICA_RETRY_BACKOFF_MS = 100
ISR_CHECK_INTERVAL_MS = 100
# A leader without followers (or a follower) has no ISR to watch closely: it wakes once a
# second, for its gauges and any late ISR change — ten wake-ups a second on every idle
# partition actor were a measurable share of an idle broker's CPU.
LONE_CHECK_INTERVAL_MS = 1_000
# Offsets and ISR gauges (ray_broker.metrics) are set this often.
METRICS_INTERVAL_S = 1.0
ALTER_ISR_TIMEOUT_S = 5.0
ENDPOINT_TIMEOUT_S = 5.0


class ReplicationLinks:
    """The leader's sender tasks (slot → task) and the ISR watch of one partition replica.

    ``high_watermark_moved(moved)`` and ``stepped_down()`` are the actor's reactions: wake the
    waiters, or stop acting as leader because a follower knows a newer epoch.
    """

    def __init__(
        self,
        core: Partition,
        replica: Replica,
        signals: PartitionSignals,
        token: str,
        controller: Any,
        high_watermark_moved: Callable[[bool], None],
        stepped_down: Callable[[], None],
        report_state: Callable[[], None],
    ) -> None:
        self.core = core
        self.replica = replica
        self.signals = signals
        self._token = token
        self._controller = controller
        self._moved = high_watermark_moved
        self._stepped_down = stepped_down
        self._report_state = report_state
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._direct: dict[str, Connection] = {}  # follower slot → data-plane connection
        self._by_ray_until: dict[str, float] = {}  # follower slot → monotonic time

    def start(self, replicas: dict[str, Any]) -> None:
        """Start one sender per follower for the epoch this replica now leads."""
        self.stop()
        loop = asyncio.get_running_loop()
        for slot, handle in replicas.items():
            if slot == self.replica.slot:
                continue
            sender = FollowerSender(
                self.replica,
                slot,
                self.core.log.read,
                _row_count,
                self._moved,
                REPLICA_FETCH_RECORDS,
            )
            self.tasks[slot] = loop.create_task(self._run(sender, handle))

    def direct_followers(self) -> list[str]:
        """The followers this leader reaches over the data plane now."""
        return sorted(slot for slot, c in self._direct.items() if not c.broken)

    def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks = {}
        for connection in list(self._direct.values()):
            connection.fail(PartitionUnavailable("replication to this follower stopped"))
        self._direct = {}

    async def _run(self, sender: FollowerSender, handle: Any) -> None:
        while sender.active:
            try:
                request = sender.next_request()
                if request is None:  # caught up: wait for new records or the heartbeat
                    await self.signals.wait_for_data(REPLICA_IDLE_PUSH_MS / 1000)
                    request = sender.next_request(heartbeat=True)
                if request is not None:
                    await self._send(sender, handle, request)
            except asyncio.CancelledError:
                raise
            except FencedLeaderEpoch:
                if sender.on_fenced():
                    logger.warning(
                        "%s: fenced by leader epoch %d, stepping down",
                        self.core.name,
                        sender.epoch + 1,
                    )
                self._stepped_down()
                return
            except InvalidRecord:
                sender.on_log_moved()  # the follower's log moved (it restarted): compare again
            except LeaderUnreachable:  # its address cannot be reached: Ray calls meanwhile
                self._by_ray_until[sender.slot] = time.monotonic() + RAY_FALLBACK_S
                sender.on_log_moved()
            except Exception as exc:
                error = classify(exc)
                if error.retriable:  # follower down or restarting: it stays out of the ISR
                    logger.debug("%s: replication to %s: %s", self.core.name, sender.slot, error)
                else:  # a bug or a refused request: loud, but keep trying (never exit)
                    logger.error(
                        "%s: replication to %s failed: %s", self.core.name, sender.slot, error
                    )
                sender.on_log_moved()
                await asyncio.sleep(REPLICA_RETRY_BACKOFF_MS / 1000)

    async def _send(self, sender: FollowerSender, handle: Any, request: EpochQuery | Push) -> None:
        connection = await self._connection(sender.slot, handle)
        if connection is not None:
            await self._send_direct(sender, connection, request)
            return
        token = self._token
        if isinstance(request, EpochQuery):
            epochs, end = await handle.epoch_state.remote(request.epoch, token=token)
            cut = sender.on_epoch_state(epochs, end)
            if cut is not None:
                end = await handle.truncate.remote(
                    cut.epoch, cut.offset, cut.leader_log_start, cut.expected_end, token=token
                )
                sender.on_truncated(end)
            return
        payload = to_ipc(request.records) if request.records is not None else None
        end = await handle.replicate.remote(
            request.epoch, payload, request.epochs, request.high_watermark, token=token
        )
        sender.on_pushed(request, end)

    async def _send_direct(
        self, sender: FollowerSender, connection: Connection, request: EpochQuery | Push
    ) -> None:
        token = self._token
        if isinstance(request, EpochQuery):
            stated, _ = await connection.call(token, frames.EpochState(request.epoch))
            assert isinstance(stated, frames.EpochStated)
            cut = sender.on_epoch_state([tuple(e) for e in stated.entries], stated.log_end)
            if cut is not None:
                ask = frames.Truncate(cut.epoch, cut.offset, cut.leader_log_start, cut.expected_end)
                truncated, _ = await connection.call(token, ask)
                assert isinstance(truncated, frames.LogEnd)
                sender.on_truncated(truncated.log_end)
            return
        body = memoryview(to_ipc(request.records)) if request.records is not None else None
        push = frames.Replicate(request.epoch, list(request.epochs), request.high_watermark)
        replicated, _ = await connection.call(token, push, body)
        assert isinstance(replicated, frames.LogEnd)
        sender.on_pushed(request, replicated.log_end)

    async def _connection(self, slot: str, handle: Any) -> Connection | None:
        """The follower's data-plane connection, opened on first use; None (use Ray) when its
        endpoint cannot be learned. A broken connection is dropped: the next request looks
        the endpoint up again (a restarted follower listens on a new port)."""
        connection = self._direct.get(slot)
        if connection is not None and not connection.broken:
            return connection
        if self._by_ray_until.get(slot, 0.0) > time.monotonic():
            return None
        try:
            host, port = await await_ref(
                submit(handle.data_endpoint, session=self._token), ENDPOINT_TIMEOUT_S
            )
        except BrokerError:
            self._by_ray_until[slot] = time.monotonic() + RAY_FALLBACK_S
            return None
        connection = Connection((str(host), int(port)), lambda: self._direct.pop(slot, None))
        self._direct[slot] = connection
        return connection

    # --- the ISR watch ----------------------------------------------------------------------------

    async def watch_isr(self) -> None:
        """Shrink the ISR when a follower lags more than replica.lag.time.max.ms; expand it when
        a follower has caught up to the high watermark. The Controller records every change."""
        last_report = time.monotonic()
        while True:
            watching = self.replica.followers or self.replica.pending_since is not None
            await asyncio.sleep(
                (ISR_CHECK_INTERVAL_MS if watching else LONE_CHECK_INTERVAL_MS) / 1000
            )
            if time.monotonic() - last_report >= METRICS_INTERVAL_S:
                last_report = time.monotonic()
                with contextlib.suppress(Exception):
                    self._report_state()
            if self._controller is None:
                continue
            try:
                lag_s = self.core.log.config.replica_lag_time_max_ms / 1000
                isr = self.replica.isr_proposal(lag_s, ALTER_ISR_TIMEOUT_S)
                if isr is not None:
                    await self._alter_isr(isr)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep checking: a dead ISR loop would freeze the ISR for good
                logger.exception("%s: ISR check failed", self.core.name)

    async def _alter_isr(self, isr: set[str]) -> None:
        epoch = self.replica.leader_epoch
        try:
            accepted = await await_ref(
                submit(
                    self._controller.alter_isr,
                    self.core.topic,
                    self.core.partition,
                    epoch,
                    sorted(isr),
                    session=self._token,
                ),
                ALTER_ISR_TIMEOUT_S,
            )
        except BrokerError as exc:  # Controller restarting, or we were fenced
            logger.info("%s: ISR change to %s refused: %s", self.core.name, sorted(isr), exc)
            if self.replica.is_leading(epoch):
                self.replica.isr_answered()
                self._moved(self.replica.advance_high_watermark())
            return
        if self.replica.apply_isr(epoch, accepted):
            self._moved(True)


def _row_count(table: Any) -> int:
    return int(table.num_rows)
