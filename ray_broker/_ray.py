"""The one place where Ray's failures become ray-broker's typed errors.

Ray raises in three places: when a call is *submitted* (``handle.method.remote()`` raises a plain
``Exception`` — "Failed to submit task … Can't find actor" — while a node is being removed), when
its result is *read* (``ray.get``, ``ray.wait``, ``ObjectRef.future()``), and inside an actor that
awaits another actor. Every client path goes through ``submit`` / ``resolve`` / ``classify`` so a
caller sees a ``BrokerError`` whose ``retriable`` flag says what to do, never a Ray traceback:

* retriable — the actor serving the call died, is restarting or unreachable; the reply was lost
  with its node (``ObjectLostError``, ``OwnerDiedError``); Ray's own RPCs failed. Look the actor
  up again (refresh metadata), back off, retry within the caller's deadline.
* not retriable — the actor's own typed error (re-raised unwrapped), or a programming error
  (bad arguments), reported as ``BrokerError`` naming the original type.

A leaf module like ``errors``: it imports nothing of the project but ``errors``, so actors that
await other actors (the group coordinator) use it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import ray
from ray import exceptions as rex

from ray_broker.errors import BrokerError, BrokerTimeoutError, PartitionUnavailable

T = TypeVar("T")

# Ray failures after which the same request, sent again (perhaps to a new leader), can succeed.
_RETRIABLE = (
    rex.RayActorError,  # ActorDiedError, ActorUnavailableError
    rex.ActorUnschedulableError,
    rex.ObjectLostError,  # OwnerDiedError, ObjectFetchTimedOutError, ObjectReconstructionFailed…
    rex.NodeDiedError,
    rex.LocalRayletDiedError,
    rex.WorkerCrashedError,
    rex.RpcError,
    rex.RaySystemError,
    rex.ObjectStoreFullError,
    rex.PendingCallsLimitExceeded,
    rex.TaskCancelledError,
    rex.OutOfMemoryError,
)


def classify(
    exc: BaseException, unavailable: type[BrokerError] = PartitionUnavailable
) -> BrokerError:
    """The ray-broker error that ``exc`` (raised by Ray or by an actor) stands for.

    ``unavailable`` is the retriable class used when the serving actor is down (a partition's
    ``PartitionUnavailable``, the Controller's ``BrokerNotRunning``).
    """
    if isinstance(exc, rex.RayTaskError):
        # Ray raises an actor's error as a class deriving from both RayTaskError and the error's
        # own class; the user gets the plain error, without Ray's wrapper.
        cause = exc.cause
        if isinstance(cause, BrokerError):
            return cause
        if cause is not None and cause is not exc:
            return classify(cause, unavailable)
        return BrokerError(f"unexpected broker failure: {exc}")
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, rex.GetTimeoutError):
        return BrokerTimeoutError(f"the broker did not answer in time ({exc})")
    if isinstance(exc, rex.ObjectLostError):
        return unavailable(
            f"the reply was lost with the process or node that held it ({type(exc).__name__}); "
            "the request is sent again"
        )
    if isinstance(exc, _RETRIABLE):
        return unavailable(
            f"the actor serving this request is down or restarting ({type(exc).__name__}: "
            f"{_first_line(exc)})"
        )
    if type(exc) is Exception:
        # What ``.remote()`` raises when the actor cannot be found (dead, or its node is being
        # removed): Ray has no class for it.
        return unavailable(f"the request could not be submitted: {_first_line(exc)}")
    return BrokerError(f"unexpected failure: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def submit(
    method: Any, *args: Any, unavailable: type[BrokerError] = PartitionUnavailable, **kwargs: Any
) -> Any:
    """``method.remote(*args, **kwargs)`` that raises typed errors only.

    Raises:
        BrokerError: ``unavailable`` (retriable) when the actor cannot be reached, else the
            classified failure.
    """
    try:
        return method.remote(*args, **kwargs)
    except Exception as exc:  # Ray raises plain Exception here; classify() sorts it out
        raise classify(exc, unavailable) from None


def resolve(
    refs: Any, timeout_s: float | None = None, unavailable: type[BrokerError] = PartitionUnavailable
) -> Any:
    """``ray.get`` that raises ``BrokerError`` subclasses only.

    Raises:
        BrokerError: the actor's own typed error, ``unavailable`` when the actor died or the
            reply was lost, ``BrokerTimeoutError`` after ``timeout_s``.
    """
    try:
        return ray.get(refs, timeout=timeout_s)
    except Exception as exc:
        raise classify(exc, unavailable) from None


def call(
    method: Any,
    *args: Any,
    timeout_s: float | None = None,
    unavailable: type[BrokerError] = PartitionUnavailable,
) -> Any:
    """Submit and wait: ``resolve(submit(method, *args), timeout_s)``."""
    return resolve(submit(method, *args, unavailable=unavailable), timeout_s, unavailable)


def retrying(
    attempt: Callable[[], T],
    deadline_s: float,
    backoff_s: float,
    on_retry: Callable[[BrokerError], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``attempt`` until it succeeds, raises a non-retriable error, or ``deadline_s`` (a
    ``clock()`` value) passes; ``on_retry(error)`` runs before each back-off (refresh metadata,
    look an actor up again). Back-off doubles up to one second.

    Raises:
        BrokerError: the non-retriable error, or the last retriable one after the deadline.
    """
    delay = backoff_s
    while True:
        try:
            return attempt()
        except BrokerError as exc:
            if not exc.retriable or clock() + delay > deadline_s:
                raise
            if on_retry is not None:
                on_retry(exc)
        sleep(delay)
        delay = min(max(delay * 2, 0.01), 1.0)


async def await_ref(
    ref: Any, timeout_s: float | None = None, unavailable: type[BrokerError] = PartitionUnavailable
) -> Any:
    """Await an ObjectRef inside an async actor, with typed errors and an optional timeout."""
    import asyncio

    try:
        if timeout_s is None:
            return await ref
        return await asyncio.wait_for(ref, timeout_s)
    except asyncio.TimeoutError:
        raise BrokerTimeoutError(f"no answer within {timeout_s} s") from None
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise classify(exc, unavailable) from None
