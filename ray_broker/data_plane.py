"""The client's side of the data plane: direct connections to partition leaders.

One I/O thread per process runs an event loop with one connection per (leader endpoint,
lane): producers and consumers use separate lanes, so a fetch parked at the leader never
holds up a produce answer behind it on the same connection. Requests are written as they come
(several in flight), answers arrive in order, and each resolves a ``concurrent.futures.Future``
— the same kind of future a Ray call gives (``ObjectRef.future()``), so the producer's sender
and the consumer's fetcher wait on either transport alike.

A connection that fails fails every request on it with ``PartitionUnavailable`` (retriable):
the caller refreshes metadata from the Controller and sends again, as after a Ray failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from ray_broker import frames
from ray_broker.data_plane_connection import Connection, Endpoint, Reply
from ray_broker.errors import PartitionUnavailable


class DataPlane:
    """The process's connections (see the module docstring); ``DataPlane.shared()``."""

    _shared: DataPlane | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> DataPlane:
        with cls._shared_lock:
            if cls._shared is None or not cls._shared._thread.is_alive():
                cls._shared = DataPlane()
            return cls._shared

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._connections: dict[tuple[Endpoint, str], Connection] = {}
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ray-broker-data-plane", daemon=True
        )
        self._thread.start()

    def request(
        self,
        endpoint: Endpoint,
        lane: str,
        session: Callable[[], str] | None,
        request: frames.Produce | frames.Fetch,
        body: Any = None,
        epoch: int = frames.NO_EPOCH,
    ) -> concurrent.futures.Future[Reply]:
        """Send ``request`` (and ``body``, Arrow IPC) to the leader at ``endpoint``; the future
        holds the answer's result and body, or raises PartitionUnavailable (connection lost)."""
        future: concurrent.futures.Future[Reply] = concurrent.futures.Future()
        token = session() if session is not None else ""
        self._loop.call_soon_threadsafe(
            self._send, endpoint, lane, token, request, body, epoch, future
        )
        return future

    def _send(
        self,
        endpoint: Endpoint,
        lane: str,
        token: str,
        request: Any,
        body: Any,
        epoch: int,
        future: concurrent.futures.Future[Reply],
    ) -> None:
        key = (endpoint, lane)
        connection = self._connections.get(key)
        if connection is None or connection.broken:
            connection = Connection(endpoint, lambda: self._connections.pop(key, None))
            self._connections[key] = connection
        connection.send(token, request, body, epoch, future)

    def close_all(self) -> None:
        """Close every connection (tests; the process's end closes them anyway)."""

        def close() -> None:
            for connection in list(self._connections.values()):
                connection.fail(PartitionUnavailable("the data plane was closed"))
            self._connections.clear()

        self._loop.call_soon_threadsafe(close)
