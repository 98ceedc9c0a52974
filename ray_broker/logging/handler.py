"""``BrokerHandler``: a ``logging.Handler`` that ships records to a topic.

The logging call only captures the record and appends it to a bounded buffer (a few µs, no
lock held by anything slow, no I/O): a slow or unreachable broker never slows the application
down and never raises into it. A shipper thread formats batches as JSON (``log_json``) and
sends each as one Arrow table keyed by the service name, so one service's records share a
partition and keep their order. A batch the broker did not take is kept and sent again —
before any later one — with a growing back-off: while the broker is away the buffer fills, and
records that do not fit are dropped, counted, reported on stderr and, once the broker is back,
as a WARNING record in the topic itself. ``seq`` in every record numbers a process's records,
so a reader can check order and see gaps; a batch sent again after a timeout may arrive twice
(at least once; ``(host, pid, seq)`` identifies a record).

``flush()`` waits for what is buffered; ``close()`` (called by ``logging.shutdown`` at exit)
flushes for up to ``CLOSE_TIMEOUT_S`` and says on stderr what it could not deliver.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

import pyarrow as pa

from ray_broker.errors import TopicNotFound
from ray_broker.logging.log_buffer import BUFFER_RECORDS, LogBuffer
from ray_broker.logging.log_json import Captured, document, extras_of, message_of, truncated

BATCH_RECORDS = 5_000
LINGER_S = 0.05
SEND_TIMEOUT_S = 30.0
RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0
CLOSE_TIMEOUT_S = 10.0
# What a captured record costs besides its message: the fixed fields, the extras' references.
CAPTURED_OVERHEAD_BYTES = 200
LOG_RETENTION_MS = 3 * 24 * 3600 * 1000
DEFAULT_PARTITIONS = 4


def default_service() -> str:
    """``$RAY_BROKER_SERVICE``, else the program's name."""
    found = os.environ.get("RAY_BROKER_SERVICE")
    if found:
        return found
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return program.removesuffix(".py") or "python"


class BrokerHandler(logging.Handler):
    """Ship log records to ``topic`` of ``broker`` (a connection from ``rb.connect``; without
    one the handler connects with ``connect_options`` and closes that connection itself).

    ``acks`` is 1 by default (the leader has it; logs favour the application's latency over
    a replica's copy), ``acks="all"`` for logs that must survive a node loss. A missing topic
    is created (``partitions``, 3 days' retention) unless ``create_topic=False``.

    ``attach_later=True`` connects from the shipper thread instead, retrying until the broker
    answers (records wait in the buffer): for a Ray worker's setup hook, which runs before the
    worker may call other actors.

    Raises:
        InvalidTopicName; TopicNotFound (missing, and ``create_topic=False``); InvalidConfig;
        BrokerNotRunning, AuthenticationFailed (connecting).
    """

    def __init__(
        self,
        topic: str,
        broker: Any = None,
        level: int | str = logging.NOTSET,
        *,
        service: str | None = None,
        acks: int | str = 1,
        buffer_records: int = BUFFER_RECORDS,
        batch_records: int = BATCH_RECORDS,
        create_topic: bool = True,
        partitions: int = DEFAULT_PARTITIONS,
        attach_later: bool = False,
        **connect_options: Any,
    ) -> None:
        from ray_broker.config import validate_topic_name

        super().__init__(level)
        self.topic = validate_topic_name(topic)
        self.service = service or default_service()
        self._owns_broker = broker is None
        self._broker = broker
        self._connect_options = connect_options
        self._create_topic = create_topic
        self._partitions = partitions
        self._producer_options = {"acks": acks, "linger_ms": 5, "delivery_timeout_ms": 30_000}
        self._producer: Any = None
        if not attach_later:
            self._attach()
        # pyarrow imports pandas on its first conversion of a list; that import fails when the
        # first batch is built while the interpreter exits. Convert once now.
        pa.array([b""], pa.binary())
        self._host = socket.gethostname()
        self._pid = os.getpid()
        self._ray_ids, self._task_id = _ray_identity()
        self._buffer: LogBuffer[Captured] = LogBuffer(buffer_records)
        self._batch_records = batch_records
        self._seq = itertools.count()
        self._closing = False
        self._close_deadline = float("inf")
        self.shipped = 0
        self.last_error: str | None = None
        self._outage_reported = False
        self._unreported_drops = 0
        self._drop_cause = ""
        self._shipper = threading.Thread(
            target=self._ship, name="ray-broker-log-shipper", daemon=True
        )
        self._shipper.start()
        # Registered after Ray's own exit hook, so it runs first (atexit is last-in, first-out):
        # the buffer is flushed while the broker can still be reached.
        atexit.register(self.close)

    # --- the application's side: never blocks, never raises ---------------------------------

    def _attach(self) -> None:
        """Connect (unless given a broker), make sure the topic exists, start the producer.

        Raises: see the class.
        """
        if self._broker is None:
            import ray_broker as rb

            self._broker = rb.connect(**self._connect_options)
        try:
            _ensure_topic(self._broker, self.topic, self._create_topic, self._partitions)
            self._producer = self._broker.producer(**self._producer_options)
        except BaseException:
            if self._owns_broker:
                self._broker.close()
                self._broker = None
            raise

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exception = None
            if record.exc_info:
                exception = logging.Formatter().formatException(record.exc_info)
            if record.stack_info:
                exception = (exception + "\n" if exception else "") + record.stack_info
            # Cut at the call, not at shipping: a 10 MB message must not sit in the buffer.
            message = truncated(message_of(record))
            if exception is not None:
                exception = truncated(exception)
            captured = Captured(
                record.created,
                record.levelname,
                record.name,
                message,
                exception,
                record.threadName,
                extras_of(record),
                self._task_id() if self._task_id else None,
                next(self._seq),
            )
            size = len(message) + len(exception or "") + CAPTURED_OVERHEAD_BYTES
            if not self._buffer.append(captured, size) and not self._outage_reported:
                self._outage_reported = True
                self._drop_cause = self.last_error or "the broker is slow"
                _say(
                    f"ray_broker.logging: the buffer of {self._buffer.capacity} records for "
                    f"topic {self.topic!r} is full ({self._drop_cause}); "
                    "dropping records until it drains, and counting them"
                )
        except Exception:
            self.handleError(record)

    @property
    def dropped(self) -> int:
        """Records dropped because the buffer was full, since the handler started."""
        return self._buffer.dropped_total

    @property
    def pending(self) -> int:
        return self._buffer.pending

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything buffered is acknowledged; False if ``timeout_s`` passed first."""
        if self._buffer.pending == 0:
            return True
        self._buffer.wake()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._buffer.pending:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        atexit.unregister(self.close)
        self._close_deadline = time.monotonic() + CLOSE_TIMEOUT_S
        self._buffer.wake()
        self._shipper.join(CLOSE_TIMEOUT_S + 5)
        left = self._buffer.pending + self._unreported_drops
        if left:
            _say(
                f"ray_broker.logging: {left} records for topic {self.topic!r} were not "
                f"delivered before exit, {self._unreported_drops} of them dropped earlier "
                f"({self.last_error or 'the broker did not answer'})"
            )
        # Already failing, if it fails: what was lost is reported above.
        with contextlib.suppress(Exception):
            if self._producer is not None:
                self._producer.close(timeout=1)
        if self._owns_broker and self._broker is not None:
            self._broker.close()
        super().close()

    # --- the shipper thread ------------------------------------------------------------------

    def _ship(self) -> None:
        batch: list[Captured] = []
        backoff = RETRY_MIN_S
        while True:
            try:
                if self._producer is None:
                    if self._closing:
                        return
                    self._attach()
                if not batch:
                    if self._closing and self._buffer.pending == 0:
                        return
                    batch = self._buffer.take(self._batch_records, LINGER_S)
                    self._unreported_drops += self._buffer.take_dropped()
                    if not batch and not self._unreported_drops:
                        continue
                self._send(batch)
                if self.last_error is not None:
                    _say(f"ray_broker.logging: shipping to {self.topic!r} works again")
                    self.last_error = None
                self._buffer.done(len(batch))
                self.shipped += len(batch)
                batch = []
                backoff = RETRY_MIN_S
                if self._outage_reported and self._buffer.pending < self._buffer.capacity // 2:
                    self._outage_reported = False
            except Exception as exc:  # never die: keep the batch, back off, try again
                if self.last_error is None:
                    _say(
                        f"ray_broker.logging: shipping to {self.topic!r} failed, retrying: {exc!r}"
                    )
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self._closing and time.monotonic() >= self._close_deadline:
                    return
                time.sleep(min(backoff, max(0.0, self._close_deadline - time.monotonic())))
                backoff = min(backoff * 2, RETRY_MAX_S)
                self._renew_producer()

    def _send(self, batch: list[Captured]) -> None:
        values = [
            document(c, self.service, self._host, self._pid, self._ray_ids) for c in batch
        ]  # document() never raises: a batch always encodes, so it never blocks later ones
        drops = self._unreported_drops
        if drops:
            values.append(self._drop_report(drops))
        key = self.service.encode()
        table = pa.Table.from_arrays(
            [pa.array([key] * len(values), pa.binary()), pa.array(values, pa.binary())],
            names=["key", "value"],
        )
        self._producer.send_batch(self.topic, table).result(timeout=SEND_TIMEOUT_S)
        self._unreported_drops -= drops

    def _drop_report(self, drops: int) -> bytes:
        message = (
            f"dropped {drops} log records: the buffer of {self._buffer.capacity} records was "
            f"full ({self._drop_cause or 'the broker was slow'})"
        )
        _say(f"ray_broker.logging: {message}")
        record = Captured(
            time.time(),
            "WARNING",
            "ray_broker.logging",
            message,
            None,
            None,
            {"dropped": drops},
            None,
            -1,
        )
        return document(record, self.service, self._host, self._pid, self._ray_ids)

    def _renew_producer(self) -> None:
        """After a failure, a fresh producer: the old one may hold a producer id the restarted
        broker no longer knows, or handles of actors that are gone."""
        old = self._producer
        if old is None or self._broker is None:
            return  # not attached yet: the next round attaches
        try:
            self._producer = self._broker.producer(**self._producer_options)
            threading.Thread(target=_close_quietly, args=(old,), daemon=True).start()
        except Exception as exc:  # still unreachable, or exiting: the next round tries again
            self.last_error = f"{type(exc).__name__}: {exc}"


def _close_quietly(producer: Any) -> None:
    with contextlib.suppress(Exception):
        producer.close(timeout=0)


def _ensure_topic(broker: Any, topic: str, create: bool, partitions: int) -> None:
    """Raises TopicNotFound: missing and not to be created."""
    from ray_broker.errors import TopicExists

    admin = broker.admin()
    try:
        admin.describe_topic(topic)
        return
    except TopicNotFound:
        if not create:
            raise
    with contextlib.suppress(TopicExists):  # another process made it meanwhile
        admin.create_topic(topic, partitions, config={"retention.ms": LOG_RETENTION_MS})


def _ray_identity() -> tuple[dict[str, str], Any]:
    """The Ray ids of this process (job, node, actor) and a reader of the current task id;
    empty and None outside Ray."""
    try:
        import ray

        if not ray.is_initialized():
            return {}, None
        context = ray.get_runtime_context()
        ids = {"job_id": context.get_job_id(), "node_id": context.get_node_id()}
        actor = context.get_actor_id()
        if actor:
            ids["actor_id"] = actor
        in_worker = context.worker.mode == ray.WORKER_MODE
        return ids, (context.get_task_id if in_worker else None)
    except Exception:  # a Ray too old or too new to ask: log without the ids
        return {}, None


def _say(text: str) -> None:
    """To stderr, never through ``logging`` (this handler may be on the root logger)."""
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except Exception:
        pass
