"""The push delivery loop: fetch as a group member, hand batches to a handler while it holds
fewer than ``credits``, answer each batch by how the handler did (see ``ray_broker/push.py``
for the feature and its failure rules). A plain class over a broker connection: an in-process
subscription runs it on a thread, a ``PushDispatcher`` actor runs it beside the broker.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from ray_broker.errors import BrokerError, BrokerNotRunning, ConsumerClosed, InvalidConfig
from ray_broker.push_window import CreditWindow, Delivery, GroupProgress, check_credits
from ray_broker.structs import TopicPartition

logger = logging.getLogger(__name__)

GROUP_TYPES = ("share", "consumer")
POLL_MS = 200
# A consumer-group batch whose handler keeps raising is copied to the dead-letter topic after
# this many attempts (share groups use the topic's share.delivery.count.limit instead).
MAX_DELIVERY_ATTEMPTS = 5
RETRY_BACKOFF_MS = 100
# A consumer-group push subscription commits finished batches at most this often.
COMMIT_INTERVAL_MS = 200
MAX_RETRY_BACKOFF_MS = 5_000
# How long close() waits for batches still with the handler before giving them back.
CLOSE_TIMEOUT_S = 30.0
# A handler actor that failed is probed this long before the subscription gives up on it.
ACTOR_PROBE_TIMEOUT_S = 60.0


# --- handlers ---------------------------------------------------------------------------------


class HandlerFailed(Exception):
    """The handler raised (a failed delivery of this batch)."""


class HandlerGone(Exception):
    """The handler's actor died or is restarting (not the batch's fault)."""


def actor_method(handler: Any) -> tuple[Any, str] | None:
    """``(actor handle, method name)`` if ``handler`` is a Ray actor method, else None."""
    try:
        from ray.actor import ActorHandle, ActorMethod
    except ImportError:  # pragma: no cover - Ray is a dependency
        return None
    if isinstance(handler, ActorMethod):
        return handler._actor, handler._method_name
    if (
        isinstance(handler, tuple)
        and len(handler) == 2
        and isinstance(handler[0], ActorHandle)
        and isinstance(handler[1], str)
    ):
        return handler
    return None


class CallableTarget:
    """Runs a plain callable on one worker thread, one batch after another."""

    def __init__(self, handler: Callable[[pa.Table], Any]) -> None:
        self._handler = handler
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="push-handler")

    def deliver(self, table: pa.Table) -> concurrent.futures.Future[Any]:
        return self._pool.submit(self._handler, table)

    def outcome(self, future: concurrent.futures.Future[Any]) -> None:
        """Raises HandlerFailed if the handler raised."""
        error = future.exception()
        if error is not None:
            raise HandlerFailed(f"{type(error).__name__}: {error}") from error

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ActorTarget:
    """Calls a Ray actor's method with ``.remote()``; up to ``credits`` calls are in flight."""

    def __init__(self, actor: Any, method: str) -> None:
        self._actor = actor
        self._method = method

    def deliver(self, table: pa.Table) -> concurrent.futures.Future[Any]:
        try:
            return getattr(self._actor, self._method).remote(table).future()
        except Exception as exc:  # submission itself failed: the actor is gone
            failed: concurrent.futures.Future[Any] = concurrent.futures.Future()
            failed.set_exception(exc)
            return failed

    def outcome(self, future: concurrent.futures.Future[Any]) -> None:
        """Raises HandlerFailed (the method raised) or HandlerGone (its actor is down)."""
        from ray import exceptions as rex

        error = future.exception()
        if error is None:
            return
        if isinstance(error, rex.RayTaskError) and not isinstance(error, rex.RayActorError):
            cause = error.cause if error.cause is not None else error
            raise HandlerFailed(f"{type(cause).__name__}: {cause}") from error
        raise HandlerGone(f"{type(error).__name__}: {error}") from error

    def alive(self) -> bool:
        """Whether the actor answers (waiting while it restarts); False once it is dead."""
        import ray
        from ray import exceptions as rex

        try:
            ray.get(self._actor.__ray_call__.remote(_nothing), timeout=ACTOR_PROBE_TIMEOUT_S)
            return True
        except (rex.ActorDiedError, rex.GetTimeoutError):
            return False
        except Exception:  # unavailable for a moment: try again with the next batch
            return True

    def close(self) -> None:
        pass


def _nothing(_actor: Any) -> None:
    return None


# --- sources ----------------------------------------------------------------------------------


def _ranges(table: pa.Table) -> dict[TopicPartition, tuple[int, int]]:
    """Per partition of a batch, its first and last offset (one Arrow group-by)."""
    keyed = table.select(["topic", "partition", "offset"]).cast(
        pa.schema([("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64())])
    )
    grouped = keyed.group_by(["topic", "partition"]).aggregate(
        [("offset", "min"), ("offset", "max")]
    )
    return {
        TopicPartition(topic, partition): (first, last)
        for topic, partition, first, last in zip(
            grouped.column("topic").to_pylist(),
            grouped.column("partition").to_pylist(),
            grouped.column("offset_min").to_pylist(),
            grouped.column("offset_max").to_pylist(),
            strict=True,
        )
    }


class ShareSource:
    """Batches from a share consumer in explicit mode (``poll_arrow``: no Python object per
    record); answers become acknowledgements of the whole batch."""

    group_type = "share"

    def __init__(self, broker: Any, topic: str, options: dict[str, Any]) -> None:
        self.consumer = broker.share_consumer(
            topic, share_acknowledgement_mode="explicit", **options
        )

    def poll(self) -> pa.Table | None:
        table = self.consumer.poll_arrow(timeout_ms=POLL_MS)
        return table if table.num_rows else None

    def attempt_of(self, ranges: dict[TopicPartition, tuple[int, int]]) -> int:
        return 1  # the broker counts share deliveries

    def delivered(self, delivery: Delivery) -> None:
        pass

    def idle(self) -> None:
        pass

    def succeeded(self, delivery: Delivery, table: pa.Table) -> None:
        self.consumer.acknowledge_batch(table, "accept")
        self.consumer.commit_async()

    def failed(self, delivery: Delivery, error: str, gone: bool, table: pa.Table) -> float:
        """Release the batch (delivered again); returns no back-off: the broker spaces
        redeliveries (``share.release.backoff.ms``) and counts them."""
        self.consumer.acknowledge_batch(table, "release", error=error[:200])
        self.consumer.commit_async()
        return 0.0

    def close(self) -> None:
        self.consumer.close()  # releases anything not answered


class GroupSource:
    """Batches from a consumer-group member; finished batches are committed in order."""

    group_type = "consumer"

    def __init__(self, broker: Any, topic: str, options: dict[str, Any]) -> None:
        self._broker = broker
        self._topic = topic
        self.max_attempts = int(options.pop("max_delivery_attempts", MAX_DELIVERY_ATTEMPTS))
        if not 1 <= self.max_attempts <= 100:
            raise InvalidConfig(f"max_delivery_attempts is 1..100, got {self.max_attempts}")
        self.progress = GroupProgress()
        self._dirty = False
        self._next_commit = 0.0
        self._retry: dict[tuple[TopicPartition, int], int] = {}  # rewound batch -> attempt
        self._max_records = int(options.get("max_poll_records", 500))
        from ray_broker.consumer.group_member import ConsumerRebalanceListener

        source = self

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
                source._revoked(revoked)

        self.consumer = broker.consumer(enable_auto_commit=False, **options)
        self.consumer.subscribe([topic], listener=_Listener())
        self._dead_letters: Any = None

    def poll(self) -> pa.Table | None:
        table = self.consumer.poll_arrow(timeout_ms=POLL_MS, max_records=self._max_records)
        return table if table.num_rows else None

    def attempt_of(self, ranges: dict[TopicPartition, tuple[int, int]]) -> int:
        return max(
            (self._retry.pop((tp, first), 1) for tp, (first, _) in ranges.items()), default=1
        )

    def delivered(self, delivery: Delivery) -> None:
        self.progress.delivered(delivery)

    def succeeded(self, delivery: Delivery, table: pa.Table) -> None:
        if self.progress.succeeded(delivery):
            self._dirty = True
        if self._dirty and time.monotonic() >= self._next_commit:
            self._commit()

    def failed(self, delivery: Delivery, error: str, gone: bool, table: pa.Table) -> float:
        """Rewind to the batch (delivered again after a back-off), or — after
        ``max_attempts`` failures of the handler — copy it to the dead-letter topic."""
        if not gone and delivery.attempt >= self.max_attempts:
            self._dead_letter(table, delivery.attempt, error)
            self.succeeded(delivery, table)
            return 0.0
        rewind = self.progress.failed(delivery)
        for tp, offset in rewind.items():
            self.consumer.seek(tp, offset)
            if not gone:
                self._retry[(tp, offset)] = delivery.attempt + 1
        backoff = RETRY_BACKOFF_MS * 2 ** (delivery.attempt - 1)
        return min(backoff, MAX_RETRY_BACKOFF_MS) / 1000

    def _commit(self) -> None:
        """Commit what finished, at most every ``COMMIT_INTERVAL_MS`` (a commit per batch
        would cost a coordinator call per batch; a crash re-reads at most that much more)."""
        offsets = self.progress.committable()
        self._dirty = False
        self._next_commit = time.monotonic() + COMMIT_INTERVAL_MS / 1000
        if offsets:
            with contextlib.suppress(BrokerError):  # the next finished batch commits again
                self.consumer.commit_async(offsets)

    def idle(self) -> None:
        """Nothing new: commit what finished since the last commit."""
        if self._dirty and time.monotonic() >= self._next_commit:
            self._commit()

    def _revoked(self, revoked: set[TopicPartition]) -> None:
        """Before giving partitions up, commit what finished on them (batches still with the
        handler are delivered again to the partitions' next owner)."""
        offsets = {tp: o for tp, o in self.progress.committable().items() if tp in revoked}
        if offsets:
            with contextlib.suppress(BrokerError):
                self.consumer.commit(offsets)
        self.progress.forget(revoked)

    def _dead_letter(self, table: pa.Table, attempts: int, error: str) -> None:
        from ray_broker.dead_letters import dead_letter_batch, ensure_dead_letter_topic

        group = self.consumer.config.group_id
        target = ensure_dead_letter_topic(self._broker, self._topic, group)
        if target is None:
            logger.error(
                "push subscription %s: a batch of %d records failed %d times and the topic "
                "keeps no dead letters (share.dlq.topic is empty); it is skipped",
                group,
                table.num_rows,
                attempts,
            )
            return
        if self._dead_letters is None:
            self._dead_letters = self._broker.producer(acks="all", enable_idempotence=True)
        batch = dead_letter_batch(table, group, attempts, error)
        self._dead_letters.send_batch(target, batch).result()

    def close(self) -> None:
        self._commit()
        if self._dead_letters is not None:
            self._dead_letters.close()
        self.consumer.close()


# --- the loop ---------------------------------------------------------------------------------


class PushLoop:
    """Fetch → deliver while credits last → answer; one thread, every failure caught."""

    def __init__(
        self,
        broker: Any,
        topic: str,
        target: CallableTarget | ActorTarget,
        credits: int,
        group_type: str,
        options: dict[str, Any],
    ) -> None:
        self.window = CreditWindow(check_credits(credits))
        self.target = target
        if group_type == "share":
            self.source: ShareSource | GroupSource = ShareSource(broker, topic, options)
        else:
            self.source = GroupSource(broker, topic, options)
        self.delivered_batches = self.delivered_records = 0
        self.succeeded_batches = self.failed_batches = 0
        self.error: BrokerError | None = None
        self._futures: dict[concurrent.futures.Future[Any], Delivery] = {}
        self._pause_until = 0.0
        self._stop = threading.Event()

    def run(self) -> None:
        """Until ``stop()``; then gives back what the handler still holds, within bounds."""
        try:
            while not self._stop.is_set():
                try:
                    self._step()
                except ConsumerClosed:
                    return
                except BrokerError as exc:
                    if not exc.retriable:
                        self.error = exc
                        logger.error("push subscription stopped: %s", exc)
                        return
                    logger.warning("push subscription retries after: %s", exc)
                    self._stop.wait(RETRY_BACKOFF_MS / 1000)
                except Exception as exc:  # never let the loop die: log, back off, go on
                    logger.exception("push subscription step failed: %r", exc)
                    self._stop.wait(RETRY_BACKOFF_MS / 1000)
        finally:
            self._drain()

    def stop(self) -> None:
        self._stop.set()

    def _step(self) -> None:
        wait_s = 0.0 if self.window.has_credit else POLL_MS / 1000
        self._answers(wait_s)
        if self.error is not None:
            self._stop.set()
            return
        if not self.window.has_credit or time.monotonic() < self._pause_until:
            if self.window.has_credit:  # backing off: stay responsive to answers and stop()
                self._stop.wait(min(self._pause_until - time.monotonic(), POLL_MS / 1000))
            return
        table = self.source.poll()
        if table is None:
            self.source.idle()
            return
        ranges = _ranges(table)
        delivery = self.window.start(
            ranges, table.num_rows, self.source.attempt_of(ranges), batch=table
        )
        self.source.delivered(delivery)
        self._futures[self.target.deliver(table)] = delivery
        self.delivered_batches += 1
        self.delivered_records += table.num_rows

    def _answers(self, wait_s: float) -> None:
        if not self._futures:
            if wait_s:
                self._stop.wait(wait_s)
            return
        done, _ = concurrent.futures.wait(
            list(self._futures), timeout=wait_s, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for future in done:
            delivery = self._futures.pop(future)
            self.window.finish(delivery.id)
            table = delivery.batch
            try:
                self.target.outcome(future)
            except HandlerFailed as exc:
                self._failed(delivery, str(exc), gone=False, table=table)
            except HandlerGone as exc:
                self._failed(delivery, str(exc), gone=True, table=table)
            else:
                self.succeeded_batches += 1
                self.source.succeeded(delivery, table)

    def _failed(self, delivery: Delivery, error: str, gone: bool, table: pa.Table) -> None:
        self.failed_batches += 1
        logger.warning("push delivery of %d records failed: %s", delivery.records, error)
        backoff = self.source.failed(delivery, error, gone, table)
        self._pause_until = max(self._pause_until, time.monotonic() + backoff)
        if gone and not self.target.alive():
            self.error = BrokerNotRunning(f"the push handler's actor is gone for good: {error}")

    def _drain(self) -> None:
        """Wait (bounded) for batches still with the handler, answer them, close the source."""
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        with contextlib.suppress(Exception):
            while self._futures and time.monotonic() < deadline and self.error is None:
                self._answers(min(POLL_MS / 1000, max(deadline - time.monotonic(), 0)))
        with contextlib.suppress(Exception):
            self.source.close()  # unanswered share records are released; commits flushed
        self.target.close()

    def stats(self) -> dict[str, Any]:
        return {
            "group_type": self.source.group_type,
            "credits": self.window.credits,
            "in_flight": len(self.window.outstanding),
            "max_in_flight": self.window.max_held,
            "delivered_batches": self.delivered_batches,
            "delivered_records": self.delivered_records,
            "succeeded_batches": self.succeeded_batches,
            "failed_batches": self.failed_batches,
            "error": None if self.error is None else str(self.error),
        }


# --- the subscription -------------------------------------------------------------------------
