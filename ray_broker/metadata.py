"""The client's cached view of topic metadata, refreshed on demand and when it ages out."""

from __future__ import annotations

import threading
import time
from typing import Any

from ray_broker._remote import resolve
from ray_broker.errors import BrokerNotRunning
from ray_broker.structs import TopicMetadata


class MetadataCache:
    """Topic → leader handles, shared by every client of one ``Broker``."""

    def __init__(self, controller: Any, max_age_ms: int = 300_000) -> None:
        self._controller = controller
        self._max_age_s = max_age_ms / 1000
        self._topics: dict[str, tuple[float, TopicMetadata]] = {}
        self._lock = threading.Lock()

    def topic(self, name: str, *, auto_create: bool = False) -> TopicMetadata:
        """Raises TopicNotFound (and the other errors of Controller.metadata)."""
        with self._lock:
            cached = self._topics.get(name)
        if cached is not None and time.monotonic() - cached[0] < self._max_age_s:
            return cached[1]
        return self.refresh(name, auto_create=auto_create)

    def refresh(self, name: str, *, auto_create: bool = False) -> TopicMetadata:
        metadata = resolve(
            self._controller.metadata.remote(name, auto_create), unavailable=BrokerNotRunning
        )
        with self._lock:
            self._topics[name] = (time.monotonic(), metadata)
        return metadata

    def topic_names(self) -> list[str]:
        return resolve(self._controller.list_topics.remote(), unavailable=BrokerNotRunning)

    def forget(self, name: str) -> None:
        with self._lock:
            self._topics.pop(name, None)
