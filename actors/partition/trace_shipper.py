"""Ships a partition's trace events (``actors/partition/message_trace.py``) to the trace topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ray_broker._ray import await_ref, submit
from ray_broker.actors.partition.message_trace import TraceRecorder
from ray_broker.config import TRACE_TOPIC
from ray_broker.errors import TopicExists

logger = logging.getLogger(__name__)

# How often a partition ships its buffered trace events.
TRACE_FLUSH_MS = 100
TRACE_CALL_TIMEOUT_S = 30.0
TRACE_RETRY_S = 1.0


class TraceShipper:
    """Ships a partition's trace events to the trace topic every ``TRACE_FLUSH_MS`` (a task of
    the partition actor's event loop; any failure is logged and retried on the next tick)."""

    def __init__(
        self,
        recorder: TraceRecorder,
        controller: Any,
        replication: Callable[[], int],
        token: str = "",
    ) -> None:
        self.recorder = recorder
        self._token = token  # the broker's internal session
        self._controller = controller
        self._replication = replication
        self._leader: Any = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        """Runs while events wait (started again by the next event)."""
        while self.recorder.events:
            await asyncio.sleep(TRACE_FLUSH_MS / 1000)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the trace topic's leader moved or restarts: retry
                logger.info("trace events of %s not shipped yet: %s", self.recorder.topic, exc)
                self._leader = None
                await asyncio.sleep(TRACE_RETRY_S)

    async def flush(self) -> int:
        """Ship what is buffered now; returns how many events were shipped."""
        shipped = 0
        while (batch := self.recorder.take()) is not None:
            leader = await self._trace_leader()
            ref = submit(leader.produce, batch, None, 0, 0, -1, False, session=self._token)
            await await_ref(ref, TRACE_CALL_TIMEOUT_S)
            self.recorder.shipped(batch.num_rows)
            shipped += batch.num_rows
        return shipped

    async def _trace_leader(self) -> Any:
        if self._leader is not None:
            return self._leader
        if self._controller is None:
            raise RuntimeError("no Controller to find the trace topic with")
        with contextlib.suppress(TopicExists):
            await await_ref(
                submit(
                    self._controller.create_topic,
                    TRACE_TOPIC,
                    1,
                    self._replication(),
                    None,
                    True,
                    session=self._token,
                ),
                TRACE_CALL_TIMEOUT_S,
            )
        meta = await await_ref(
            submit(self._controller.metadata, TRACE_TOPIC, session=self._token),
            TRACE_CALL_TIMEOUT_S,
        )
        self._leader = meta.leader(0)
        return self._leader
