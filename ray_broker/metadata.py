"""The client's cached view of topic metadata, refreshed on demand and when it ages out.

Metadata calls go to the Controller, which restarts in place (``max_restarts=-1``) and can be
briefly unreachable while a node leaves the cluster. Every call here retries retriable failures
within ``request_timeout_ms``, looking the Controller up again by name between attempts, so a
producer's sender or a consumer's poll never sees a raw Ray failure from a metadata lookup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from ray_broker._ray import call, retrying
from ray_broker.actors.security.access_guard import with_session
from ray_broker.errors import BrokerError, BrokerNotRunning
from ray_broker.structs import TopicMetadata

METADATA_RETRY_BACKOFF_MS = 50
METADATA_REQUEST_TIMEOUT_MS = 30_000


class MetadataCache:
    """Topic → leader handles, shared by every client of one ``Broker``."""

    def __init__(
        self,
        controller: Any,
        max_age_ms: int = 300_000,
        lookup: Callable[[], Any] | None = None,
        request_timeout_ms: int = METADATA_REQUEST_TIMEOUT_MS,
        session: Callable[[], str] | None = None,
    ) -> None:
        self._session = session  # leaders' handles carry it (actors/security/access_guard.py)
        self._controller = controller
        self._lookup = lookup
        self._max_age_s = max_age_ms / 1000
        self._timeout_s = request_timeout_ms / 1000
        self._topics: dict[str, tuple[float, TopicMetadata]] = {}
        self._refreshing: set[str] = set()
        self._refresh_errors: dict[str, BrokerError] = {}
        self._lock = threading.Lock()

    def topic(self, name: str, *, auto_create: bool = False) -> TopicMetadata:
        """Raises TopicNotFound (and the other errors of Controller.metadata)."""
        with self._lock:
            cached = self._topics.get(name)
        if cached is not None and time.monotonic() - cached[0] < self._max_age_s:
            return cached[1]
        return self.refresh(name, auto_create=auto_create)

    def cached(self, name: str, on_refresh: Callable[[], None]) -> TopicMetadata | None:
        """The topic's metadata without waiting: what is cached, else None while a background
        refresh runs (``on_refresh`` is called when it ends) — so a producer's sender never
        holds every partition back behind one slow lookup.

        Raises:
            BrokerError: the last background refresh of this topic failed (e.g. TopicNotFound);
                raised once, the next call starts a new refresh.
        """
        with self._lock:
            error = self._refresh_errors.pop(name, None)
            if error is not None:
                raise error
            cached = self._topics.get(name)
            if cached is not None and time.monotonic() - cached[0] < self._max_age_s:
                return cached[1]
            if name not in self._refreshing:
                self._refreshing.add(name)
                threading.Thread(
                    target=self._refresh_in_background,
                    args=(name, on_refresh),
                    name=f"ray-broker-metadata-{name}",
                    daemon=True,
                ).start()
        return None if cached is None else cached[1]  # an aged entry serves until replaced

    def _refresh_in_background(self, name: str, on_refresh: Callable[[], None]) -> None:
        try:
            self.refresh(name)
        except BrokerError as exc:
            with self._lock:
                self._refresh_errors[name] = exc
        except Exception as exc:  # never let the thread die silently with waiters behind it
            with self._lock:
                self._refresh_errors[name] = BrokerError(
                    f"metadata refresh of {name!r} failed: {type(exc).__name__}: {exc}"
                )
        finally:
            with self._lock:
                self._refreshing.discard(name)
            on_refresh()

    def refresh(self, name: str, *, auto_create: bool = False) -> TopicMetadata:
        metadata = self.controller_call("metadata", name, auto_create)
        if self._session is not None:
            metadata = dataclasses.replace(
                metadata, leaders=[with_session(h, self._session) for h in metadata.leaders]
            )
        with self._lock:
            self._topics[name] = (time.monotonic(), metadata)
        return metadata

    def topic_names(self) -> list[str]:
        return self.controller_call("list_topics")

    def forget(self, name: str) -> None:
        """Mark the topic's entry stale (a leader moved): ``topic()`` refreshes before answering,
        ``cached()`` keeps serving the stale entry while a refresh runs — a retry goes to the
        old leader at worst, and fails over again, instead of waiting for the lookup."""
        with self._lock:
            cached = self._topics.get(name)
            if cached is not None:
                self._topics[name] = (-float("inf"), cached[1])

    def forget_all(self) -> None:
        """``forget`` every topic (after a failure whose topic is not known)."""
        with self._lock:
            names = list(self._topics)
        for name in names:
            self.forget(name)

    def controller_call(self, method: str, *args: Any) -> Any:
        """Call the Controller, retrying while it restarts or cannot be reached.

        Raises:
            BrokerNotRunning: the Controller stayed unreachable for the request timeout.
            BrokerError: the Controller's own typed error (TopicNotFound, ...).
        """
        deadline = time.monotonic() + self._timeout_s

        def attempt() -> Any:
            remaining = max(deadline - time.monotonic(), 0.001)
            return call(
                getattr(self._controller, method),
                *args,
                timeout_s=remaining,
                unavailable=BrokerNotRunning,
            )

        return retrying(attempt, deadline, METADATA_RETRY_BACKOFF_MS / 1000, self._relookup)

    def _relookup(self, _error: BrokerError) -> None:
        if self._lookup is None:
            return
        # Not registered again yet: keep the old handle and retry later.
        with contextlib.suppress(Exception):
            self._controller = self._lookup()
