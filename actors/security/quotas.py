"""Client quotas, decided as Kafka decides them: measure, then delay the response.

Kafka never drops or refuses a request for going over quota: it measures the rate over sampled
windows (``quota.window.num`` = 11 windows of ``quota.window.size.seconds`` = 1 s) and, when the
rate is above the quota, delays the response by the time that brings the rate back down —

    throttle = (rate − quota) / quota × measured window

— and tells the client ``throttle_time_ms``. A client that keeps sending converges to its quota.

Quota kinds: ``producer_byte_rate`` and ``consumer_byte_rate`` (bytes/s), ``request_rate``
(requests/s). Entities, most specific first: (user, client id), user, the user's tenant,
client id. The matching entity's bucket is shared by everything it matches (a user's quota is
shared by all its clients), as in Kafka.

Enforced by each partition leader, the way Kafka enforces quotas per broker: a user's produce
quota of 1 MB/s allows 1 MB/s into each partition leader it writes to.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from ray_broker.errors import InvalidAcl
from ray_broker.structs import QuotaEntity

QUOTA_KINDS = (
    "producer_byte_rate",
    "consumer_byte_rate",
    "request_rate",
    "controller_mutation_rate",
)
WINDOW_S = 1.0
WINDOWS = 11
# One answer is held back at most this long (Kafka bounds it by its 11 s of windows): long
# enough that a 1 MB request can be throttled down to 100 kB/s, short of the clients' 30 s
# request timeout.
MAX_THROTTLE_S = 11.0
MAX_QUOTA = 1e15  # bytes or requests per second; beyond this a quota means nothing


def entity_key(entity: QuotaEntity) -> str:
    """A stable name for an entity: ``user=alice,client=app``, ``tenant=acme``…

    Raises:
        InvalidAcl: not a QuotaEntity, no part set, a tenant combined with anything, or a
            part that is not a non-empty string of ≤ 255 characters.
    """
    if not isinstance(entity, QuotaEntity):
        raise InvalidAcl(f"expected ray_broker.QuotaEntity, got {type(entity).__name__}")
    parts = [("user", entity.user), ("client", entity.client_id), ("tenant", entity.tenant)]
    given = [(k, v) for k, v in parts if v is not None]
    if not given:
        raise InvalidAcl("a quota entity names a user, a client id, both, or a tenant")
    if entity.tenant is not None and len(given) > 1:
        raise InvalidAcl("a tenant quota applies to the whole tenant: name nothing else")
    for name, value in given:
        if not isinstance(value, str) or not 0 < len(value) <= 255 or "," in value:
            raise InvalidAcl(
                f"quota entity {name} must be 1..255 characters without ',': {value!r}"
            )
    return ",".join(f"{k}={v}" for k, v in given)


def checked_quota_values(values: object) -> dict[str, float | None]:
    """``{kind: rate or None}`` (None removes the quota).

    Raises:
        InvalidAcl: an unknown kind, or a rate that is not a finite number in (0, 1e15].
    """
    if not isinstance(values, dict) or not values:
        raise InvalidAcl(f"quota values are a non-empty dict of {', '.join(QUOTA_KINDS)}")
    checked: dict[str, float | None] = {}
    for kind, rate in values.items():
        if kind not in QUOTA_KINDS:
            raise InvalidAcl(f"unknown quota {kind!r}; use {', '.join(QUOTA_KINDS)}")
        if rate is not None:
            if (
                isinstance(rate, bool)
                or not isinstance(rate, (int, float))
                or not (math.isfinite(rate) and 0 < rate <= MAX_QUOTA)
            ):
                raise InvalidAcl(f"quota {kind} must be a number in (0, {MAX_QUOTA:.0e}]: {rate!r}")
            rate = float(rate)
        checked[kind] = rate
    return checked


class QuotaBook:
    """Which quota applies to a caller: entity key → {kind: rate}."""

    def __init__(self, quotas: dict[str, dict[str, float]] | None = None) -> None:
        self.quotas = {k: dict(v) for k, v in (quotas or {}).items()}

    def limit(
        self, kind: str, user: str | None, tenant: str | None, client_id: str
    ) -> tuple[str, float] | None:
        """(bucket key, rate) of the most specific entity with a ``kind`` quota, or None."""
        if not self.quotas:
            return None
        for key in _candidates(user, tenant, client_id):
            rate = self.quotas.get(key, {}).get(kind)
            if rate is not None:
                return key, rate
        return None


def _candidates(user: str | None, tenant: str | None, client_id: str) -> Iterable[str]:
    if user is not None:
        if client_id:
            yield f"user={user},client={client_id}"
        yield f"user={user}"
        if tenant is not None:
            yield f"tenant={tenant}"
    if client_id:
        yield f"client={client_id}"


class RateMeter:
    """Per-bucket rates over ``windows`` sampled windows; ``record()`` answers the delay.

    Kafka also *mutes* a throttled client's connection: the requests it pipelined behind the
    throttled one are not read until the throttle ends. A Ray caller has no connection to mute,
    so the meter keeps a virtual clock per bucket instead: a request arriving while its bucket
    is throttled counts as arriving when the throttle ends, and waits until then plus its own
    throttle. Without this, five pipelined requests would each wait one throttle at once and
    the rate would settle at five times the quota.
    """

    def __init__(
        self,
        window_s: float = WINDOW_S,
        windows: int = WINDOWS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._windows = windows
        self._clock = clock
        self._samples: dict[str, list[tuple[float, float]]] = {}  # key → [(window start, sum)]
        self._muted_until: dict[str, float] = {}

    def record(self, key: str, amount: float, quota: float) -> int:
        """Count ``amount`` for ``key``; the milliseconds to hold the answer back (0 when the
        bucket is within ``quota`` and not throttled)."""
        now = self._clock()
        at = max(now, self._muted_until.get(key, now))
        samples = self._current(key, at)
        if samples and at - samples[-1][0] < self._window_s:
            start, total = samples[-1]
            samples[-1] = (start, total + amount)
        else:
            samples.append((at, amount))
        total, elapsed = self._measured(samples, at)
        rate = total / elapsed
        throttle_s = 0.0
        if rate > quota:
            cap_s = max(self._window_s * self._windows, MAX_THROTTLE_S)
            throttle_s = min((rate - quota) / quota * elapsed, cap_s)
        self._muted_until[key] = at + throttle_s
        return int((at + throttle_s - now) * 1000)

    def admit(self, key: str, amount: float, quota: float) -> int:
        """Kafka's controller mutation quota (KIP-599): while the bucket's rate is above
        ``quota`` a request is refused — 0 counted, the milliseconds until the rate is back
        down answered; otherwise it is admitted and counted whole, even when it takes the rate
        above (a request larger than the burst allowance must still get through once).
        Refused, not delayed: creating topics is not a stream a client should wait on."""
        now = self._clock()
        samples = self._current(key, now)
        total, elapsed = self._measured(samples, now)
        if total / elapsed <= quota:
            self.record(key, amount, float("inf"))
            return 0
        return max(int((self._back_within(samples, quota, now) - now) * 1000) + 1, 1)

    def _current(self, key: str, at: float) -> list[tuple[float, float]]:
        """``key``'s samples, those aged out of the windows by ``at`` dropped."""
        samples = self._samples.setdefault(key, [])
        oldest_kept = at - self._window_s * self._windows
        while samples and samples[0][0] <= oldest_kept:
            samples.pop(0)
        return samples

    def _measured(self, samples: list[tuple[float, float]], at: float) -> tuple[float, float]:
        """(amount, seconds) the rate is judged over: Kafka's measured window is the samples'
        span, at least (windows − 1) full windows, so a first burst is not judged over a few
        milliseconds."""
        total = sum(v for _, v in samples)
        first = samples[0][0] if samples else at
        return total, max(at - first, self._window_s * (self._windows - 1))

    def _back_within(self, samples: list[tuple[float, float]], quota: float, now: float) -> float:
        """The first moment the rate is within ``quota`` again: either the samples span long
        enough, or the oldest of them have aged out of the windows."""
        horizon = self._window_s * self._windows
        floor = self._window_s * (self._windows - 1)
        for i, (start, _) in enumerate(samples):
            aged = now if i == 0 else samples[i - 1][0] + horizon  # samples before i gone
            span_needed = sum(v for _, v in samples[i:]) / quota
            moment = aged if span_needed <= floor else max(aged, start + span_needed)
            if moment < start + horizon:  # before sample i itself ages out
                return moment
        return samples[-1][0] + horizon

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the buckets (``<kind>:<entity>``) of entities without quotas any more."""
        keep = set(keep)
        for key in list(self._samples):
            if key.partition(":")[2] not in keep:
                del self._samples[key]
                self._muted_until.pop(key, None)
