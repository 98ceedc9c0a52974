"""The one place the client turns Ray's results and failures into ray-broker's.

Every client ``ray.get`` goes through ``resolve`` so users see a typed ``BrokerError`` raised in
their own process (the actor's own error, unwrapped), never a ``RayTaskError`` traceback from
inside an actor.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.exceptions import (
    ActorUnschedulableError,
    GetTimeoutError,
    RayActorError,
    RayTaskError,
)

from ray_broker.errors import BrokerError, BrokerTimeoutError, PartitionUnavailable


def unwrap(
    exc: BaseException, unavailable: type[BrokerError] = PartitionUnavailable
) -> BrokerError:
    """The ray-broker error that ``exc`` (raised by Ray) stands for."""
    # First: Ray raises an actor's error as a class deriving from both RayTaskError and the
    # error's own class; the user gets the plain error, without Ray's wrapper.
    if isinstance(exc, RayTaskError):
        cause = exc.cause
        if isinstance(cause, BrokerError):
            return cause
        if isinstance(cause, (RayActorError, ActorUnschedulableError)):
            # An actor the callee relied on (a partition the Controller asked) is restarting.
            return PartitionUnavailable(f"{cause}")
        return BrokerError(f"unexpected broker failure: {type(cause).__name__}: {cause}")
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, (RayActorError, ActorUnschedulableError)):
        return unavailable(f"the actor serving this request is down or restarting ({exc})")
    if isinstance(exc, GetTimeoutError):
        return BrokerTimeoutError(f"the broker did not answer in time ({exc})")
    return BrokerError(f"unexpected failure: {type(exc).__name__}: {exc}")


def resolve(
    refs: Any, timeout_s: float | None = None, unavailable: type[BrokerError] = PartitionUnavailable
) -> Any:
    """``ray.get`` that raises ``BrokerError`` subclasses only.

    Raises:
        BrokerError: the actor's own typed error, ``PartitionUnavailable`` (or ``unavailable``)
            when the actor died, ``BrokerTimeoutError`` after ``timeout_s``.
    """
    try:
        return ray.get(refs, timeout=timeout_s)
    except (RayTaskError, RayActorError, ActorUnschedulableError, GetTimeoutError) as exc:
        raise unwrap(exc, unavailable) from None
