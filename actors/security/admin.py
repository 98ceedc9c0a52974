"""The Controller's security API: logins, users, ACLs, quotas, session keys — and handing every
actor the new ``SecurityPolicy`` after each change, before the change is acknowledged, so a
grant or a revocation is in force everywhere once the admin call returns.

Kafka's permissions for these calls: managing users, ACLs and session keys needs ``alter`` on
the cluster, reading them ``describe``; quotas need ``alter_configs`` / ``describe_configs``
on the cluster.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from ray_broker.actors.security.access_guard import SecurityPolicy
from ray_broker.actors.security.acl import CLUSTER
from ray_broker.actors.security.guarded import GuardedActor
from ray_broker.actors.security.registry import SecurityRegistry
from ray_broker.config import (
    DELAY_SCHEDULER_NAME,
    GROUP_COORDINATOR_NAME,
    TRANSACTION_COORDINATOR_NAME,
)
from ray_broker.errors import AuthenticationFailed
from ray_broker.structs import Acl, QuotaEntity, UserDescription

logger = logging.getLogger(__name__)

POLICY_PUSH_TIMEOUT_S = 10.0


class SecurityAdmin(GuardedActor):
    """The security call group of the Controller actor, which provides ``security`` (the
    registry), ``namespace``, ``_token`` and ``_policy_targets``.

    A call group rather than an actor of its own: every other actor pulls its rules from the
    Controller at start, and the Controller already knows every partition replica to push a
    change to; a separate actor would cost another process and a hop on every login."""

    security: SecurityRegistry
    namespace: str
    _token: str

    def _policy_targets(self) -> list[Any]:
        """The actors besides the named coordinators that check calls (the Controller's
        partition replicas)."""
        return []

    # --- login (the only calls without a session) -----------------------------------------

    async def login_first(self, mechanism: str, client_first: str) -> str:
        """SCRAM's first round.

        Raises:
            AuthenticationFailed: security off, a malformed message, a locked-out user.
        """
        return self.security.login_first(mechanism, client_first)

    async def login_final(self, client_final: str) -> dict[str, Any]:
        """SCRAM's second round: the broker's proof and a session token.

        Raises:
            AuthenticationFailed: wrong password or unknown user (indistinguishable), a replayed
                or stale exchange, too many failures.
        """
        return self.security.login_final(client_final)

    async def bootstrap_superuser(self, name: str, credentials: dict[str, Any]) -> bool:
        """Create the first superuser of a secured broker that has no users yet; False (and
        nothing changes) when it has users already.

        Raises:
            AuthenticationFailed: security is off.
            InvalidAcl: a bad name or credentials.
        """
        if not self.security.enabled:
            raise AuthenticationFailed("security is off: there is nothing to bootstrap")
        if self.security.users:
            return False
        self.security.create_user(name, credentials, superuser=True)
        await self._push_policy()
        return True

    async def security_policy(self, *, session: str = "") -> SecurityPolicy:
        """The current rules, for an actor that (re)started without them.

        Raises:
            Unauthorized: the caller is not one of the broker's actors.
        """
        await self._internal(session, "security_policy")
        return self.security.policy()

    # --- users --------------------------------------------------------------------------

    async def create_user(
        self, name: str, credentials: dict[str, Any], superuser: bool = False, *, session: str = ""
    ) -> None:
        """Raises Unauthorized, InvalidAcl."""
        await self._access(session, "alter", CLUSTER, CLUSTER)
        self.security.create_user(name, credentials, superuser=superuser)
        await self._push_policy()

    async def delete_user(self, name: str, *, session: str = "") -> None:
        """Its sessions end at once. Raises Unauthorized, InvalidAcl (no such user)."""
        await self._access(session, "alter", CLUSTER, CLUSTER)
        self.security.delete_user(name)
        await self._push_policy()

    async def list_users(self, *, session: str = "") -> list[UserDescription]:
        """Raises Unauthorized."""
        await self._access(session, "describe", CLUSTER, CLUSTER)
        return self.security.list_users()

    async def rotate_session_key(self, *, session: str = "") -> None:
        """Raises Unauthorized."""
        await self._access(session, "alter", CLUSTER, CLUSTER)
        self.security.rotate_key()
        await self._push_policy()

    async def whoami(self, *, session: str = "") -> str:
        """The caller's principal (``User:ANONYMOUS`` with security off)."""
        return (await self._who(session)).principal

    # --- ACLs -----------------------------------------------------------------------------

    async def create_acls(self, acls: list[Acl], *, session: str = "") -> list[Acl]:
        """Raises Unauthorized, InvalidAcl (then nothing is created)."""
        await self._access(session, "alter", CLUSTER, CLUSTER)
        created = self.security.create_acls(acls)
        await self._push_policy()
        return created

    async def describe_acls(
        self,
        principal: str | None = None,
        resource_type: str | None = None,
        name: str | None = None,
        *,
        session: str = "",
    ) -> list[Acl]:
        """Raises Unauthorized."""
        await self._access(session, "describe", CLUSTER, CLUSTER)
        return self.security.describe_acls(principal, resource_type, name)

    async def delete_acls(
        self,
        principal: str | None = None,
        resource_type: str | None = None,
        name: str | None = None,
        *,
        session: str = "",
    ) -> list[Acl]:
        """Every ACL matching the filter (None matches anything) goes. Raises Unauthorized."""
        await self._access(session, "alter", CLUSTER, CLUSTER)
        deleted = self.security.delete_acls(principal, resource_type, name)
        await self._push_policy()
        return deleted

    # --- quotas ---------------------------------------------------------------------------

    async def alter_quotas(
        self, entity: QuotaEntity, values: dict[str, Any], *, session: str = ""
    ) -> dict[str, float]:
        """Raises Unauthorized, InvalidAcl."""
        await self._access(session, "alter_configs", CLUSTER, CLUSTER)
        now = self.security.alter_quotas(entity, values)
        await self._push_policy()
        return now

    async def describe_quotas(self, *, session: str = "") -> dict[str, dict[str, float]]:
        """Raises Unauthorized."""
        await self._access(session, "describe_configs", CLUSTER, CLUSTER)
        return self.security.describe_quotas()

    # --- distribution ---------------------------------------------------------------------

    async def _push_policy(self) -> None:
        """Every actor that checks calls gets the new rules (an unreachable one pulls them
        when it starts again)."""
        policy = self.security.policy()
        self._guard.apply(policy)
        handles = list(self._policy_targets())
        for name in (GROUP_COORDINATOR_NAME, TRANSACTION_COORDINATOR_NAME, DELAY_SCHEDULER_NAME):
            try:
                handles.append(ray.get_actor(name, namespace=self.namespace))
            except ValueError:
                continue
        refs = []
        for handle in handles:
            try:
                refs.append(handle.apply_policy.remote(policy, session=self._token))
            except Exception as exc:  # a dead actor pulls the rules when it restarts
                logger.info("policy push skipped an actor: %s", exc)
        if refs:
            done, pending = await asyncio.wait(
                [asyncio.ensure_future(ref) for ref in refs], timeout=POLICY_PUSH_TIMEOUT_S
            )
            for task in done:
                if task.exception() is not None:
                    logger.info("policy push failed for an actor: %s", task.exception())
            if pending:
                logger.warning(
                    "%d actors did not take the new security policy in time", len(pending)
                )
