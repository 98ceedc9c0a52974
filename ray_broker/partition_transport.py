"""How a client reaches a partition leader: over the data plane when it can, Ray calls when it
cannot — one request/response model under both.

``produce`` and ``fetch`` return a ``concurrent.futures.Future`` of the leader's answer
(``ProduceResult``, ``FetchResponse``) whichever way the request went; a Ray failure raises
Ray's own exception (callers map it with ``ray_broker._ray.classify`` as before), a data-plane
failure a ``BrokerError``.

The first request to a leader goes by Ray while its endpoint is looked up (one Ray call,
cached per actor); later ones go direct. A connection that cannot be made (a firewall between
nodes) sends that leader's requests by Ray for ``RAY_FALLBACK_S``; a lost connection forgets the
endpoint (a restarted actor listens on a new port). ``data.plane="ray"`` keeps every request
on Ray. A filtered fetch goes by Ray: a filter is an Arrow expression, which the data plane
does not carry.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from ray_broker import frames
from ray_broker._ray import submit
from ray_broker.data_plane import DataPlane, Endpoint
from ray_broker.data_plane_connection import RAY_FALLBACK_S
from ray_broker.errors import LeaderUnreachable, PartitionUnavailable
from ray_broker.storage.record_filter import RecordFilter
from ray_broker.structs import FetchResponse, ProduceResult

DIRECT = "direct"
RAY = "ray"


class PartitionTransport:
    """One per producer or consumer (its ``lane`` keeps them on separate connections)."""

    def __init__(self, mode: str, lane: str) -> None:
        self._direct = mode == DIRECT
        self._lane = lane
        self._lock = threading.Lock()
        self._endpoints: dict[Any, Endpoint | concurrent.futures.Future[Any]] = {}
        self._by_ray_until: dict[Any, float] = {}
        self.counts = {DIRECT: 0, RAY: 0}  # requests sent each way (tests, diagnostics)

    # --- the requests ---------------------------------------------------------------------------

    def produce(
        self,
        leader: Any,
        payload: Any,
        producer_id: int | None,
        producer_epoch: int,
        base_sequence: int,
        acks: int,
        predecessors_in_flight: bool,
        transactional: bool,
        client_id: str,
        session: str | None = None,
    ) -> concurrent.futures.Future[ProduceResult]:
        """``session``: the token to send, for a bare leader handle (a handle from a client's
        metadata carries its own). Raises BrokerError: the request could not be sent
        (retriable when the leader is down)."""
        request = frames.Produce(
            producer_id,
            producer_epoch,
            base_sequence,
            acks,
            predecessors_in_flight,
            transactional,
            client_id,
        )
        extra = {} if session is None else {"session": session}
        endpoint = self._endpoint(leader, extra)
        self.counts[RAY if endpoint is None else DIRECT] += 1
        if endpoint is None:
            return submit(leader.produce, payload, **frames.arguments(request), **extra).future()
        return self._direct_call(leader, endpoint, request, _ipc_bytes(payload), _produced, session)

    def fetch(
        self,
        leader: Any,
        offset: int,
        max_records: int,
        max_bytes: int,
        max_wait_ms: int,
        read_committed: bool,
        flt: RecordFilter | None,
        consumer: str,
        client_id: str,
        session: str | None = None,
    ) -> concurrent.futures.Future[FetchResponse]:
        """Raises BrokerError: the request could not be sent."""
        request = frames.Fetch(
            offset, max_records, max_bytes, max_wait_ms, read_committed, consumer, client_id
        )
        extra = {} if session is None else {"session": session}
        endpoint = self._endpoint(leader, extra) if flt is None else None
        self.counts[RAY if endpoint is None else DIRECT] += 1
        if endpoint is None:
            return submit(leader.fetch, **frames.arguments(request), flt=flt, **extra).future()
        return self._direct_call(leader, endpoint, request, None, _fetched, session)

    # --- the data plane -------------------------------------------------------------------------

    def _direct_call(
        self,
        leader: Any,
        endpoint: Endpoint,
        request: frames.Produce | frames.Fetch,
        body: Any,
        answer: Callable[[frames.Result, memoryview], Any],
        session: str | None,
    ) -> concurrent.futures.Future[Any]:
        key = _actor_key(leader)
        tokens = _session_of(leader) if session is None else _FixedSession(session)
        reply = DataPlane.shared().request(endpoint, self._lane, tokens, request, body)
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def settle(done: concurrent.futures.Future[Any]) -> None:
            try:
                result.set_result(answer(*done.result()))
            except LeaderUnreachable as exc:
                self._by_ray(key)
                result.set_exception(exc)
            except PartitionUnavailable as exc:  # the actor may listen elsewhere now
                self._forget(key)
                result.set_exception(exc)
            except BaseException as exc:
                result.set_exception(exc)

        reply.add_done_callback(settle)
        return result

    def _endpoint(self, leader: Any, extra: dict[str, str]) -> Endpoint | None:
        """The leader's endpoint if requests to it go direct now; else None (Ray), starting
        the lookup when none is known."""
        if not self._direct:
            return None
        key = _actor_key(leader)
        if key is None:
            return None
        with self._lock:
            if self._by_ray_until.get(key, 0.0) > time.monotonic():
                return None
            known = self._endpoints.get(key)
            if isinstance(known, tuple):
                return known
            if known is not None:  # the lookup runs
                return None
            try:
                lookup = submit(leader.data_endpoint, **extra).future()
            except Exception:  # the leader cannot be reached: the Ray call will say why
                return None
            self._endpoints[key] = lookup
        lookup.add_done_callback(lambda done: self._learned(key, done))
        return None

    def _learned(self, key: Any, done: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            try:
                host, port = done.result()
            except Exception:  # an actor that cannot say: Ray serves it for a while
                self._endpoints.pop(key, None)
                self._by_ray_until[key] = time.monotonic() + RAY_FALLBACK_S
                return
            self._endpoints[key] = (str(host), int(port))

    def _forget(self, key: Any) -> None:
        with self._lock:
            self._endpoints.pop(key, None)

    def _by_ray(self, key: Any) -> None:
        with self._lock:
            self._endpoints.pop(key, None)
            self._by_ray_until[key] = time.monotonic() + RAY_FALLBACK_S


def _actor_key(leader: Any) -> Any:
    handle = getattr(leader, "unwrapped", leader)
    actor_id = getattr(handle, "_actor_id", None)
    return None if actor_id is None else actor_id.binary()


class _FixedSession:
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self) -> str:
        return self.token


def _session_of(leader: Any) -> Callable[[], str] | None:
    return getattr(leader, "session", None)


def _ipc_bytes(payload: Any) -> Any:
    if isinstance(payload, pa.Buffer):
        return memoryview(payload)
    return payload


def _produced(result: frames.Result, _body: memoryview) -> ProduceResult:
    if isinstance(result, frames.Failed):
        raise frames.raised(result)
    if not isinstance(result, frames.Produced):
        raise PartitionUnavailable(f"a produce was answered with {type(result).__name__}")
    return ProduceResult(**frames.arguments(result))


def _fetched(result: frames.Result, body: memoryview) -> FetchResponse:
    if isinstance(result, frames.Failed):
        raise frames.raised(result)
    if not isinstance(result, frames.Fetched):
        raise PartitionUnavailable(f"a fetch was answered with {type(result).__name__}")
    return FetchResponse(pa.py_buffer(body), **frames.arguments(result))
