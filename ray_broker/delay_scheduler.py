"""The delay scheduler: moves delayed records from the schedule topic to their topic when due.

A named, detached actor (one per broker namespace, started by the first producer that sends
with ``delay_ms``/``deliver_at``; ``max_restarts=-1``). It is a client of the broker like any
other: a ``read_committed`` consumer of every schedule partition feeds a ``DelayIndex``, and a
transactional producer writes each round of due records to their topics together with a fired
marker in the schedule partition (see ``ray_broker/delay_index.py``). A restarted scheduler fences
the old one (same transactional id), replays the schedule topic and fires what is left. Being a
client, it lives in the client layer: exactly-once moves need the transactional producer, and a
second, actor-side one would duplicate the hardest client code.

Its loop runs on a thread of its own and survives any error: it logs, waits, and starts over
from the schedule topic (the index is rebuilt; nothing fired twice, by the markers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from ray_broker.actors.data_dir import internal_token
from ray_broker.actors.lean_arrow import skip_pandas_probe
from ray_broker.actors.security.access_guard import AccessGuard
from ray_broker.config import DAY_MS, DELAY_TOPIC, BrokerConfig, parse_config
from ray_broker.delay_index import DUE_HEADER, FIRED_HEADER, DelayIndex, Round, fired_ranges
from ray_broker.errors import TopicExists, TopicNotFound
from ray_broker.gc_pause import freeze_loaded_heap
from ray_broker.storage.log import wall_clock_ms

logger = logging.getLogger(__name__)

POLL_MS = 50  # the longest the loop sleeps: also how soon a new near-due record is seen
FIRE_BATCH = 10_000  # records per transaction
RESTART_BACKOFF_S = 1.0
MAX_SERVING_WAIT_S = 120.0
LATENESS_SAMPLES = 100_000
TRANSACTIONAL_ID = "ray-broker.delay-scheduler"
POISON_AFTER_FAILURES = 3


def ensure_schedule_topic(controller: Any, config: BrokerConfig) -> None:
    """Create the schedule topic if it does not exist yet (internal, named "__...").

    Raises:
        BrokerNotRunning and the Controller's other typed errors.
    """
    from ray_broker._ray import call
    from ray_broker.errors import BrokerNotRunning

    with contextlib.suppress(TopicExists):
        call(
            controller.create_topic,
            DELAY_TOPIC,
            config.delay_schedule_partitions,
            config.default_replication_factor,
            {"retention.ms": config.delay_max_ms + DAY_MS},
            True,
            timeout_s=120,
            unavailable=BrokerNotRunning,
        )


class DelayScheduler:
    """See the module docstring."""

    def __init__(self, settings: dict[str, Any], namespace: str) -> None:
        skip_pandas_probe()
        freeze_loaded_heap()
        self._settings = settings
        self._config: BrokerConfig = parse_config(BrokerConfig, settings)
        self._namespace = namespace
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._index = DelayIndex()
        self._fired = 0
        self._dropped = 0
        self._lateness: deque[int] = deque(maxlen=LATENESS_SAMPLES)
        self._restarts = 0
        self._failures = 0  # rounds failed in a row (see _serve)
        self._token = internal_token(Path(self._config.data_dir))
        self._guard = AccessGuard(self._token)
        self._serving = threading.Event()  # reading the schedule and able to fire
        self._thread = threading.Thread(target=self._run, name="delay-scheduler", daemon=True)
        self._thread.start()

    def _check(self, session: object, operation: str | None) -> None:
        """Authenticate (and with ``operation``, authorize on the cluster) a caller.

        Raises:
            AuthenticationFailed, Unauthorized.
        """
        import ray

        from ray_broker.config import CONTROLLER_NAME

        if self._guard.policy is None:
            controller = ray.get_actor(CONTROLLER_NAME, namespace=self._namespace)
            policy = ray.get(controller.security_policy.remote(session=self._token), timeout=30)
            self._guard.apply(policy)
        if operation is None:
            self._guard.authenticate(session)
        else:
            self._guard.check(session, operation, "cluster", "cluster")

    def apply_policy(self, policy: Any, *, session: str = "") -> bool:
        """The Controller's newest rules. Raises Unauthorized for anyone else."""
        return self._guard.accept(policy, session)

    def ready(self, *, session: str = "") -> bool:
        self._check(session, None)  # any user whose delayed sends started this scheduler
        return self._thread.is_alive()

    def serving(self, timeout_s: float = 0.0, *, session: str = "") -> bool:
        """Whether the scheduler reads the schedule and can fire (waiting up to
        ``timeout_s``): its start — a connection, a consumer, a transactional producer — takes
        seconds on two cores, which a first delayed record would otherwise pay in lateness."""
        self._check(session, None)
        return self._serving.wait(max(0.0, min(float(timeout_s), MAX_SERVING_WAIT_S)))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._serve()
            except Exception as exc:  # any failure: start over from the schedule topic
                logger.warning("delay scheduler restarts after: %r", exc)
                with self._lock:
                    self._index = DelayIndex()
                    self._restarts += 1
                self._stop.wait(RESTART_BACKOFF_S)

    def _serve(self) -> None:
        import ray_broker as rb
        from ray_broker.structs import TopicPartition

        broker = rb.connect(
            namespace=self._namespace, data_dir=self._settings.get("log.dirs"), token=self._token
        )
        try:
            ensure_schedule_topic(broker._controller, self._config)
            consumer = broker.consumer(
                isolation_level="read_committed",
                enable_auto_commit=False,
                fetch_max_wait_ms=POLL_MS,
            )
            partitions = broker.admin().describe_topic(DELAY_TOPIC).partitions
            consumer.assign([TopicPartition(DELAY_TOPIC, p.partition) for p in partitions])
            consumer.seek_to_beginning()
            producer = broker.producer(transactional_id=TRANSACTIONAL_ID, linger_ms=0)
            producer.init_transactions()
            self._serving.set()
            while not self._stop.is_set():
                self._read(consumer)
                # After repeated failures, one record per round: a record that can never be
                # written (a target topic's rules changed) is found and dropped, not retried
                # forever in front of the others.
                batch = 1 if self._failures >= POISON_AFTER_FAILURES else FIRE_BATCH
                with self._lock:
                    due = self._index.due(wall_clock_ms(), batch)
                if due:
                    self._fire(producer, due)
        finally:
            self._serving.clear()
            broker.close()

    def _read(self, consumer: Any) -> None:
        with self._lock:
            next_due = self._index.next_due()
        wait_ms = POLL_MS if next_due is None else min(max(next_due - wall_clock_ms(), 0), POLL_MS)
        table = consumer.poll_arrow(timeout_ms=int(wait_ms))
        if table.num_rows == 0:
            return
        partitions = table.column("partition").to_numpy()
        for partition in sorted(set(partitions.tolist())):
            part = table.filter(pc.equal(table.column("partition"), partition))
            with self._lock:
                self._index.add(int(partition), part)

    def _fire(self, producer: Any, due: Round) -> None:
        with self._lock:
            tables = self._index.tables(due)
            markers = self._index.offsets_by_partition(due)
        try:
            self._move(producer, tables, markers)
        except Exception as exc:
            self._failures += 1
            if len(due) == 1 and self._failures > POISON_AFTER_FAILURES:
                logger.error("dropping a delayed record that cannot be delivered: %r", exc)
                with contextlib.suppress(Exception):
                    producer.abort_transaction()
                self._move(producer, {}, markers)  # the fired marker alone
                self._dropped += 1
            else:
                with self._lock:
                    self._index.failed(due)
                raise
        self._failures = 0 if len(due) > 1 or not self._failures else self._failures
        now = wall_clock_ms()
        with self._lock:
            self._lateness.extend(self._index.lateness(due, now))
            self._index.fired(due)
            self._fired += len(due)

    def _move(self, producer: Any, tables: dict[str, Any], markers: dict[int, list[int]]) -> None:
        """One transaction: the records to their topics, fired markers to the schedule."""
        producer.begin_transaction()
        for topic, table in tables.items():
            given = pc.greater_equal(table.column("partition"), 0)
            try:
                if pc.all(given).as_py():
                    producer.send_batch(topic, table)
                else:  # no partition named (not written by our producer): by key
                    producer.send_batch(topic, table.filter(given))
                    rest = table.filter(pc.invert(given)).drop_columns(["partition"])
                    producer.send_batch(topic, rest)
            except TopicNotFound:
                logger.warning("%d delayed records for deleted %r dropped", len(table), topic)
                self._dropped += table.num_rows
        for partition, offsets in markers.items():
            producer.send(
                DELAY_TOPIC,
                value=fired_ranges(offsets),
                key=FIRED_HEADER.encode(),
                headers=[(FIRED_HEADER, b"1")],
                partition=partition,
            )
        producer.commit_transaction()

    def describe(self, *, session: str = "") -> dict[str, Any]:
        """Pending records, the next due time, how many fired, lateness percentiles and the
        index's memory (for ``Admin.describe_delayed`` and the benchmark)."""
        self._check(session, "describe")
        with self._lock:
            lateness = sorted(self._lateness)
            index = self._index
            return {
                "pending": len(index),
                "next_due_ms": index.next_due(),
                "fired": self._fired,
                "dropped": self._dropped,
                "malformed": index.malformed,
                "restarts": self._restarts,
                "index_bytes": index.memory_bytes,
                "rss_bytes": _rss_bytes(),
                "lateness_ms": _percentiles(lateness),
            }

    def shutdown(self, *, session: str = "") -> None:
        self._check(session, "alter")
        self._stop.set()
        self._thread.join(timeout=10)


def _percentiles(values: list[int]) -> dict[str, int | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": values[len(values) // 2],
        "p99": values[min(int(len(values) * 0.99), len(values) - 1)],
        "max": values[-1],
    }


def _rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return -1


__all__ = ["DUE_HEADER", "DelayScheduler", "ensure_schedule_topic"]
