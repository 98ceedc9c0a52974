"""``GuardedActor``: what an actor mixes in to check every call with an ``AccessGuard``.

It holds the guard, pulls the Controller's ``SecurityPolicy`` before the first call it checks
(a fresh or restarted actor must never serve with no rules — it would not know whether
security is on), and takes the policies the Controller pushes (``apply_policy``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ray_broker._ray import await_ref, submit
from ray_broker.actors.security.access_guard import AccessGuard, SecurityPolicy
from ray_broker.actors.security.session_tokens import SessionClaims
from ray_broker.errors import BrokerNotRunning

POLICY_PULL_TIMEOUT_S = 30.0


class GuardedActor:
    """Mixin for async actors; call ``_init_guard`` in ``__init__``."""

    _guard: AccessGuard
    _policy_lock: asyncio.Lock | None

    def _init_guard(self, internal_token: str, controller: Callable[[], Any]) -> None:
        """``controller()`` gives the Controller's handle (looked up when needed)."""
        self._guard = AccessGuard(internal_token)
        self._guard_token = internal_token
        self._guard_controller = controller
        self._policy_lock = None

    async def _access(
        self, session: object, operation: str, resource_type: str, name: str
    ) -> SessionClaims:
        """Raises AuthenticationFailed, Unauthorized (see ``AccessGuard.check``)."""
        if self._guard.policy is None:
            await self._pull_policy()
        return self._guard.check(session, operation, resource_type, name)

    async def _who(self, session: object) -> SessionClaims:
        """Authenticate only (listings filter by what the caller may describe)."""
        if self._guard.policy is None:
            await self._pull_policy()
        return self._guard.authenticate(session)

    async def _internal(self, session: object, what: str) -> None:
        """Raises Unauthorized: security is on and the caller is not the broker itself."""
        if self._guard.policy is None:
            await self._pull_policy()
        self._guard.check_internal(session, what)

    async def _pull_policy(self) -> None:
        if self._policy_lock is None:
            self._policy_lock = asyncio.Lock()
        async with self._policy_lock:
            if self._guard.policy is not None:
                return
            handle = self._guard_controller()
            policy = await await_ref(
                submit(
                    handle.security_policy, session=self._guard_token, unavailable=BrokerNotRunning
                ),
                POLICY_PULL_TIMEOUT_S,
                BrokerNotRunning,
            )
            self._guard.apply(policy)

    async def apply_policy(self, policy: SecurityPolicy, *, session: str = "") -> bool:
        """The Controller's newest rules (an older snapshot than the one held is ignored).

        Raises:
            Unauthorized: the caller is not the broker itself.
        """
        return self._guard.accept(policy, session)
