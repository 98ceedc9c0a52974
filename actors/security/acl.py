"""Kafka-style authorization: ACLs, superusers and the tenant floor, decided in one plain class.

Rules, as in Kafka's ``AclAuthorizer``:

* a superuser (and the broker's own internal principal) may do anything;
* otherwise a matching **deny** wins over any allow; without a matching allow, the answer is no
  (Kafka's ``allow.everyone.if.no.acl.found=false``);
* an ACL matches a resource by literal name (``"*"`` is every name) or by prefix, and a
  principal by name or ``User:*``; operation ``all`` matches every operation;
* ``describe`` is allowed by an allow of read, write, delete or alter, and
  ``describe_configs`` by alter_configs; ``idempotent_write`` by write (Kafka 3's rule).

Tenants sit *under* the ACLs: a user of tenant ``acme`` (principal ``User:acme/bob``) is
refused everything outside the resources named ``acme.…`` and every cluster operation,
whatever an ACL says — so a mistaken wildcard grant cannot open one tenant to another.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ray_broker.errors import InvalidAcl
from ray_broker.structs import Acl

RESOURCE_TYPES = ("topic", "group", "share_group", "transactional_id", "cluster")
OPERATIONS = (
    "read",
    "write",
    "create",
    "delete",
    "alter",
    "describe",
    "describe_configs",
    "alter_configs",
    "idempotent_write",
    "all",
)
PERMISSIONS = ("allow", "deny")
PATTERNS = ("literal", "prefixed")
CLUSTER = "cluster"
INTERNAL_PRINCIPAL = "User:__broker"
TENANT_SEPARATOR = "/"
_IMPLIED_BY = {
    "describe": ("read", "write", "delete", "alter"),
    "describe_configs": ("alter_configs",),
    "idempotent_write": ("write",),
}
_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
MAX_NAME_CHARS = 249


def checked_acl(acl: object) -> Acl:
    """``acl`` normalised (lower-case enums, ``-`` → ``_``).

    Raises:
        InvalidAcl: not an Acl, an unknown field value, a principal that is not
            ``User:<name>``, an empty name, a cluster ACL not named ``cluster``, or a tenant
            principal's ACL on a resource outside its tenant.
    """
    if not isinstance(acl, Acl):
        raise InvalidAcl(f"expected ray_broker.Acl, got {type(acl).__name__}")
    fields = {}
    for field, allowed in (
        ("resource_type", RESOURCE_TYPES),
        ("operation", OPERATIONS),
        ("permission", PERMISSIONS),
        ("pattern", PATTERNS),
    ):
        value = getattr(acl, field)
        normal = value.lower().replace("-", "_") if isinstance(value, str) else value
        if normal not in allowed:
            raise InvalidAcl(f"ACL {field} must be one of {', '.join(allowed)}, not {value!r}")
        fields[field] = normal
    principal = acl.principal
    user = principal[5:] if isinstance(principal, str) and principal.startswith("User:") else ""
    if not (user == "*" or checked_user_name(user, raise_error=False)):
        raise InvalidAcl(f"ACL principal must be 'User:<name>' or 'User:*', not {principal!r}")
    name = acl.name
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise InvalidAcl(f"ACL resource name must be 1..{MAX_NAME_CHARS} characters: {name!r}")
    if fields["resource_type"] == CLUSTER and name != CLUSTER:
        raise InvalidAcl("a cluster ACL is named 'cluster'")
    tenant = tenant_of(user)
    if tenant is not None and not _inside_tenant(tenant, fields["resource_type"], name):
        raise InvalidAcl(
            f"{principal} belongs to tenant {tenant!r}: its ACLs may only name resources "
            f"starting with {tenant + '.'!r}"
        )
    return Acl(
        principal,
        fields["resource_type"],
        name,
        fields["operation"],
        fields["permission"],
        fields["pattern"],
    )


def checked_user_name(name: object, *, raise_error: bool = True) -> bool:
    """A user name is ``[A-Za-z0-9._-]{1,200}``, optionally ``tenant/user``.

    Raises:
        InvalidAcl: (with ``raise_error``) anything else.
    """
    parts = name.split(TENANT_SEPARATOR) if isinstance(name, str) else []
    good = 1 <= len(parts) <= 2 and all(_NAME.fullmatch(p) for p in parts)
    if good and not name.startswith("__"):  # type: ignore[union-attr]
        return True
    if raise_error:
        raise InvalidAcl(
            f"a user name is letters, digits, '.', '_', '-' (≤ 200), optionally prefixed by "
            f"'tenant/', and does not start with '__': {name!r}"
        )
    return False


def tenant_of(user: str) -> str | None:
    """``"acme/bob"`` → ``"acme"``; a user without a tenant → None."""
    tenant, sep, _ = user.partition(TENANT_SEPARATOR)
    return tenant if sep else None


def _inside_tenant(tenant: str, resource_type: str, name: str) -> bool:
    return resource_type != CLUSTER and name.startswith(tenant + ".")


def acl_matches(
    acl: Acl,
    principal: str | None = None,
    resource_type: str | None = None,
    name: str | None = None,
) -> bool:
    """A filter for describe/delete: None matches anything (Kafka's ``AclBindingFilter``)."""
    return (
        (principal is None or acl.principal == principal)
        and (resource_type is None or acl.resource_type == resource_type)
        and (name is None or acl.name == name)
    )


class Authorizer:
    """Decides ``allowed(principal, operation, resource_type, name)`` from ACLs and superusers;
    answers are cached until the rules change (the hot path asks the same question per call)."""

    def __init__(self, acls: Iterable[Acl] = (), superusers: Iterable[str] = ()) -> None:
        self._acls = tuple(acls)
        self._superusers = frozenset(superusers) | {INTERNAL_PRINCIPAL}
        self._by_type: dict[str, list[Acl]] = {}
        for acl in self._acls:
            self._by_type.setdefault(acl.resource_type, []).append(acl)
        self._answers: dict[tuple[str, str, str, str], bool] = {}

    @property
    def acls(self) -> tuple[Acl, ...]:
        return self._acls

    def is_superuser(self, principal: str) -> bool:
        return principal in self._superusers

    def allowed(self, principal: str, operation: str, resource_type: str, name: str) -> bool:
        question = (principal, operation, resource_type, name)
        answer = self._answers.get(question)
        if answer is None:
            answer = self._decide(principal, operation, resource_type, name)
            if len(self._answers) > 100_000:
                self._answers.clear()
            self._answers[question] = answer
        return answer

    def _decide(self, principal: str, operation: str, resource_type: str, name: str) -> bool:
        if principal in self._superusers:
            return True
        tenant = tenant_of(principal[5:])
        if tenant is not None and not _inside_tenant(tenant, resource_type, name):
            return False
        matching = [
            acl
            for acl in self._by_type.get(resource_type, ())
            if acl.principal in (principal, "User:*") and _name_matches(acl, name)
        ]
        if any(a.permission == "deny" and a.operation in (operation, "all") for a in matching):
            return False
        granting = (operation, "all", *_IMPLIED_BY.get(operation, ()))
        return any(a.permission == "allow" and a.operation in granting for a in matching)


def _name_matches(acl: Acl, name: str) -> bool:
    if acl.pattern == "prefixed":
        return name.startswith(acl.name)
    return acl.name in (name, "*")
