"""What the overview shows, gathered in the background so that a page never waits for a
thousand partition actors: every ``SAMPLE_INTERVAL_S`` the monitor describes every topic and
group at once (``Admin.describe_topics`` / ``describe_groups``, concurrent inside the broker)
and records the counters the charts draw.

Counters: ``in:<topic>`` — the topic's high watermarks summed (records written);
``out:<topic>`` — committed offsets on the topic summed over groups (records consumed);
``lag:<group>`` — the group's total lag.

The loop never dies: a failed round is logged and kept as the last error, the previous
snapshot stays, and the next round runs. A slow round stretches the interval to five times
its duration (sampling takes at most a fifth of the time), so a large broker is sampled less
often rather than kept busy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray_broker.console.history import History
from ray_broker.errors import BrokerError
from ray_broker.structs import GroupDescription, TopicDescription

logger = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 2.0
SLOW_ROUND_FACTOR = 5.0


@dataclass(frozen=True)
class Snapshot:
    """The broker as of ``taken_at_ms``."""

    taken_at_ms: int = 0
    took_ms: float = 0.0
    topics: dict[str, TopicDescription] = field(default_factory=dict)
    groups: dict[str, GroupDescription] = field(default_factory=dict)
    nodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def under_replicated(self) -> list[tuple[str, int]]:
        return [
            (t.name, p.partition)
            for t in self.topics.values()
            for p in t.partitions
            if p.under_replicated
        ]

    @property
    def offline(self) -> list[tuple[str, int]]:
        return [
            (t.name, p.partition) for t in self.topics.values() for p in t.partitions if p.offline
        ]

    def leaders_on(self, node_id: str) -> int:
        return sum(p.leader_node_id == node_id for t in self.topics.values() for p in t.partitions)


def counters(snapshot: Snapshot) -> dict[str, float]:
    values: dict[str, float] = {}
    for name, topic in snapshot.topics.items():
        values[f"in:{name}"] = float(sum(max(p.high_watermark, 0) for p in topic.partitions))
    for group_id, group in snapshot.groups.items():
        values[f"lag:{group_id}"] = float(sum(p.lag or 0 for p in group.partitions))
        for p in group.partitions:
            if p.committed_offset is not None:
                key = f"out:{p.topic}"
                values[key] = values.get(key, 0.0) + p.committed_offset
    return values


def take_snapshot(admin: Any, nodes: Callable[[], list[dict[str, Any]]]) -> Snapshot:
    """Raises BrokerError: the Controller or the group coordinator did not answer."""
    started = time.monotonic()
    described = admin.describe_topics(admin.list_topics())
    topics = {n: d for n, d in described.items() if not isinstance(d, BrokerError)}
    listed = [g.group_id for g in admin.list_groups()]
    groups = {
        g: d for g, d in admin.describe_groups(listed).items() if not isinstance(d, BrokerError)
    }
    return Snapshot(
        taken_at_ms=int(time.time() * 1000),
        took_ms=(time.monotonic() - started) * 1000,
        topics=topics,
        groups=groups,
        nodes=nodes(),
    )


def ray_nodes() -> list[dict[str, Any]]:
    import ray

    return [
        {
            "node_id": n["NodeID"],
            "address": n.get("NodeManagerAddress", ""),
            "cpus": n.get("Resources", {}).get("CPU", 0),
            "memory_bytes": n.get("Resources", {}).get("memory", 0),
        }
        for n in ray.nodes()
        if n.get("Alive")
    ]


class Monitor:
    """Keeps ``snapshot`` and ``history`` fresh from a daemon thread."""

    def __init__(
        self,
        take: Callable[[], Snapshot],
        interval_s: float = SAMPLE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._take = take
        self._interval_s = interval_s
        self._clock = clock
        self.snapshot = Snapshot()
        self.history = History()
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="console-monitor", daemon=True)
        self._thread.start()

    def sample(self) -> Snapshot:
        """One round now (also what the thread runs)."""
        snapshot = self._take()
        self.snapshot = snapshot
        self.history.add(self._clock(), counters(snapshot))
        self.last_error = None
        return snapshot

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            try:
                self.sample()
            except Exception as exc:  # never die: the pages show the last good snapshot
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("console monitor round failed: %s", self.last_error)
            took = self._clock() - started
            self._stop.wait(max(self._interval_s, took * SLOW_ROUND_FACTOR) - took)
