"""Calls from a partition actor to the broker's named actors (the group and transaction
coordinators), with the broker's internal token.

A handle is looked up once — ``ray.get_actor`` is a GCS round trip that blocks the actor's event
loop — and again after a call fails in a way that may mean the actor was replaced.
"""

from __future__ import annotations

from typing import Any

from ray_broker._ray import await_ref, submit
from ray_broker.errors import BrokerError, BrokerNotRunning


class NamedActors:
    def __init__(self, namespace: str, token: str) -> None:
        self.namespace = namespace
        self.token = token
        self._handles: dict[str, Any] = {}

    async def call(
        self,
        name: str,
        method: str,
        *args: Any,
        timeout_s: float,
        missing: type[BrokerError] = BrokerNotRunning,
    ) -> Any:
        """``name.method(*args)``'s answer within ``timeout_s``.

        Raises:
            ``missing``: no actor of that name runs in the broker's namespace.
            BrokerError: the call failed (mapped by ``ray_broker._ray``); a retriable failure
                forgets the handle, so the next call looks the actor up again.
        """
        handle = self._handle(name, missing)
        try:
            return await await_ref(
                submit(getattr(handle, method), *args, session=self.token), timeout_s
            )
        except BrokerError as exc:
            if exc.retriable:
                self._handles.pop(name, None)
            raise

    def _handle(self, name: str, missing: type[BrokerError]) -> Any:
        import ray

        handle = self._handles.get(name)
        if handle is None:
            try:
                handle = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                raise missing(f"{name} is not running in namespace {self.namespace!r}") from None
            self._handles[name] = handle
        return handle
