"""The security half of ``Admin`` (Kafka AdminClient's names): users, ACLs, quotas, session
keys. Passwords are turned into SCRAM credentials here, in the caller's process; only the
salted, iterated result reaches the broker."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ray_broker.actors.security.scram import MECHANISMS, credentials_for
from ray_broker.structs import Acl, QuotaEntity, UserDescription


class AccessAdmin:
    """Mixed into ``Admin``, which provides ``_call`` (a Controller call with typed errors)."""

    _call: Any

    def create_user(
        self,
        name: str,
        password: str,
        *,
        superuser: bool = False,
        mechanisms: Iterable[str] = tuple(MECHANISMS),
    ) -> None:
        """Create a user (``"tenant/name"`` for a tenant's user), or set a new password, which
        ends the user's sessions.

        Raises:
            InvalidAcl: a bad name or password; Unauthorized: needs alter on the cluster.
        """
        self._call("create_user", name, credentials_for(password, tuple(mechanisms)), superuser)

    def delete_user(self, name: str) -> None:
        """The user's sessions end at once. Raises InvalidAcl (no such user), Unauthorized."""
        self._call("delete_user", name)

    def list_users(self) -> list[UserDescription]:
        """Raises Unauthorized: needs describe on the cluster."""
        return self._call("list_users")

    def rotate_session_key(self) -> None:
        """Sign new sessions with a new key; sessions signed by the previous key stay valid
        until they expire, older ones end. Raises Unauthorized."""
        self._call("rotate_session_key")

    def create_acls(self, acls: Iterable[Acl]) -> list[Acl]:
        """Raises InvalidAcl (then none is created), Unauthorized."""
        return self._call("create_acls", list(acls))

    def describe_acls(
        self,
        principal: str | None = None,
        resource_type: str | None = None,
        name: str | None = None,
    ) -> list[Acl]:
        """ACLs matching the filter (None matches anything). Raises Unauthorized."""
        return self._call("describe_acls", principal, resource_type, name)

    def delete_acls(
        self,
        principal: str | None = None,
        resource_type: str | None = None,
        name: str | None = None,
    ) -> list[Acl]:
        """Delete the ACLs matching the filter; returns them. Raises Unauthorized."""
        return self._call("delete_acls", principal, resource_type, name)

    def alter_quotas(
        self, entity: QuotaEntity, values: dict[str, float | None]
    ) -> dict[str, float]:
        """Set quotas (``producer_byte_rate``, ``consumer_byte_rate``: bytes/s;
        ``request_rate``: requests/s; ``controller_mutation_rate``: partitions created or
        deleted a second) of ``entity``; None removes one. Returns what the entity has now. In
        force on every actor when this returns.

        Raises:
            InvalidAcl: a malformed entity, an unknown quota, an absurd value; Unauthorized.
        """
        return self._call("alter_quotas", entity, dict(values))

    def describe_quotas(self) -> dict[str, dict[str, float]]:
        """Every entity's quotas, by entity (``"user=alice"``, ``"tenant=acme"``…).

        Raises Unauthorized."""
        return self._call("describe_quotas")
