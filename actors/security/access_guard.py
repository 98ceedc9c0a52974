"""What every actor runs at the top of every call it serves: who is calling, may they, and how
long must their answer wait (quotas).

The Controller owns the rules (users, ACLs, quotas, session keys) and hands each actor a
``SecurityPolicy`` snapshot — pushed on every change, pulled by an actor that (re)starts
without one. The ``AccessGuard`` decides from the snapshot alone, so checking a produce or a
fetch costs two dict lookups (verified tokens and authorization answers are cached) and no
round trip.

Calls carry their session as the keyword argument ``session``: the client's ``SessionHandle``
adds it to every call of a handle it wraps; actors calling each other pass the broker's
internal token (the Controller's, from the data directory), which stands for the internal
principal, a superuser.

With security off (the default) the guard lets everything through without looking.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray_broker.actors.security.acl import INTERNAL_PRINCIPAL, Authorizer
from ray_broker.actors.security.quotas import WINDOW_S, WINDOWS, QuotaBook, RateMeter
from ray_broker.actors.security.session_tokens import SessionClaims, TokenSigner
from ray_broker.errors import AuthenticationFailed, QuotaExceeded, Unauthorized
from ray_broker.structs import Acl

INTERNAL_CLAIMS = SessionClaims(INTERNAL_PRINCIPAL, "__broker", None, 0, 2**62, "internal")
ANONYMOUS_CLAIMS = SessionClaims("User:ANONYMOUS", "ANONYMOUS", None, 0, 2**62, "anonymous")


@dataclass(frozen=True)
class SecurityPolicy:
    """Everything an actor needs to check calls, as of ``version``."""

    version: int
    enabled: bool
    keys: dict[str, bytes] = field(default_factory=dict)
    current_key: str = ""
    users: dict[str, int] = field(default_factory=dict)  # name → credential generation
    superusers: frozenset[str] = frozenset()
    acls: tuple[Acl, ...] = ()
    quotas: dict[str, dict[str, float]] = field(default_factory=dict)
    quota_window_ms: int = int(WINDOW_S * 1000)
    quota_windows: int = WINDOWS


DISABLED = SecurityPolicy(version=0, enabled=False)


class AccessGuard:
    """Checks sessions, ACLs and quotas against the current ``SecurityPolicy``."""

    def __init__(
        self,
        internal_token: str,
        policy: SecurityPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._internal = internal_token.encode()
        self._clock = clock
        self.policy: SecurityPolicy | None = None
        self._signer: TokenSigner | None = None
        self._authorizer = Authorizer()
        self._book = QuotaBook()
        self._meter = RateMeter(clock=clock)
        if policy is not None:
            self.apply(policy)

    @property
    def enabled(self) -> bool:
        return self.policy is not None and self.policy.enabled

    def apply(self, policy: SecurityPolicy) -> bool:
        """Take ``policy`` if it is newer than the one held; True if taken."""
        if self.policy is not None and policy.version <= self.policy.version:
            return False
        window = (policy.quota_window_ms, policy.quota_windows)
        if self.policy is None or window != (
            self.policy.quota_window_ms,
            self.policy.quota_windows,
        ):
            self._meter = RateMeter(
                policy.quota_window_ms / 1000, policy.quota_windows, self._clock
            )
        self.policy = policy
        self._signer = (
            TokenSigner(policy.keys, policy.current_key) if policy.enabled and policy.keys else None
        )
        self._authorizer = Authorizer(policy.acls, policy.superusers)
        self._book = QuotaBook(policy.quotas)
        self._meter.forget(self._book.quotas)
        return True

    def authenticate(self, session: object) -> SessionClaims:
        """Who ``session`` speaks for.

        Raises:
            AuthenticationFailed: security is on and the session is missing, forged, expired,
                or of a deleted user or an older password.
        """
        if not self.enabled:
            return ANONYMOUS_CLAIMS
        if isinstance(session, str) and hmac.compare_digest(session.encode(), self._internal):
            return INTERNAL_CLAIMS
        if self._signer is None:
            raise AuthenticationFailed("the broker has no session keys yet")
        claims = self._signer.verify(session)
        assert self.policy is not None
        if self.policy.users.get(claims.user) != claims.generation:
            raise AuthenticationFailed(
                "the session's user was deleted or its password changed; connect again"
            )
        return claims

    def check(
        self, session: object, operation: str, resource_type: str, name: str
    ) -> SessionClaims:
        """``authenticate`` and authorize in one step.

        Raises:
            AuthenticationFailed: see ``authenticate``.
            Unauthorized: the principal may not ``operation`` the resource.
        """
        claims = self.authenticate(session)
        if self.enabled and not self._authorizer.allowed(
            claims.principal, operation, resource_type, name
        ):
            raise Unauthorized(
                f"{claims.principal} may not {operation} {resource_type} {name!r}",
                principal=claims.principal,
                operation=operation,
                resource=f"{resource_type}:{name}",
            )
        return claims

    def check_internal(self, session: object, what: str) -> None:
        """For calls only the broker's own actors make.

        Raises:
            Unauthorized: security is on and the caller is not the broker itself.
        """
        if self.enabled and self.authenticate(session) is not INTERNAL_CLAIMS:
            raise Unauthorized(
                f"{what} is the broker's own call",
                operation="cluster_action",
                resource="cluster:cluster",
            )

    def accept(self, policy: SecurityPolicy, session: object) -> bool:
        """A policy the Controller pushes; True if it was newer than the one held.

        Raises:
            Unauthorized: the session is not the broker's internal token (security on or off:
                nobody else may change an actor's rules).
        """
        if not (isinstance(session, str) and hmac.compare_digest(session.encode(), self._internal)):
            raise Unauthorized(
                "security policies are the Controller's to push",
                operation="cluster_action",
                resource="cluster:cluster",
            )
        return self.apply(policy)

    def permits(self, claims: SessionClaims, operation: str, resource_type: str, name: str) -> bool:
        """For listings: show only what the caller may describe."""
        return not self.enabled or self._authorizer.allowed(
            claims.principal, operation, resource_type, name
        )

    def is_superuser(self, claims: SessionClaims) -> bool:
        return not self.enabled or self._authorizer.is_superuser(claims.principal)

    def throttle_ms(self, claims: SessionClaims, client_id: str, kind: str, amount: float) -> int:
        """Count ``amount`` against the caller's ``kind`` quota (and one request against its
        request-rate quota); how long to hold the answer back."""
        if not self._book.quotas or claims is INTERNAL_CLAIMS:
            return 0
        user = None if claims is ANONYMOUS_CLAIMS else claims.user
        delay = 0
        for quota_kind, used in ((kind, amount), ("request_rate", 1.0)):
            limit = self._book.limit(quota_kind, user, claims.tenant, client_id)
            if limit is not None:
                key, rate = limit
                delay = max(delay, self._meter.record(f"{quota_kind}:{key}", used, rate))
        return delay

    def admit_mutation(self, claims: SessionClaims, partitions: int) -> None:
        """Topic and partition creations and deletions against the caller's
        ``controller_mutation_rate`` (partitions a second).

        Raises:
            QuotaExceeded: over the quota (retriable after ``throttle_ms``); nothing was done.
        """
        if not self._book.quotas or claims is INTERNAL_CLAIMS:
            return
        user = None if claims is ANONYMOUS_CLAIMS else claims.user
        limit = self._book.limit("controller_mutation_rate", user, claims.tenant, "")
        if limit is None:
            return
        key, rate = limit
        wait_ms = self._meter.admit(f"controller_mutation_rate:{key}", float(partitions), rate)
        if wait_ms:
            raise QuotaExceeded(
                f"{claims.principal} is over its controller_mutation_rate quota of {rate:g} "
                f"partitions/s; retry in {wait_ms} ms",
                throttle_ms=wait_ms,
            )


class SessionHandle:
    """An actor handle whose every ``.remote()`` call carries ``session`` (a callable giving
    the current token); the rest of the handle's surface passes through."""

    __slots__ = ("_handle", "_session")

    def __init__(self, handle: Any, session: Callable[[], str]) -> None:
        self._handle = handle
        self._session = session

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._handle, name)
        if name.startswith("__") or not hasattr(attribute, "remote"):
            return attribute
        return _SessionMethod(attribute, self._session)

    def __eq__(self, other: object) -> bool:
        other = other._handle if isinstance(other, SessionHandle) else other
        return self._handle == other

    def __hash__(self) -> int:
        return hash(self._handle)

    def __reduce__(self) -> tuple[Any, ...]:
        # Across processes (Ray Data read tasks) the token travels as it is now.
        return (SessionHandle, (self._handle, _FixedToken(self._session())))

    @property
    def unwrapped(self) -> Any:
        return self._handle

    @property
    def session(self) -> Callable[[], str]:
        """The current token's source (the data plane sends it in its Hello)."""
        return self._session


class _SessionMethod:
    __slots__ = ("_method", "_session")

    def __init__(self, method: Any, session: Callable[[], str]) -> None:
        self._method = method
        self._session = session

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._method.remote(*args, session=self._session(), **kwargs)

    def options(self, **options: Any) -> _SessionMethod:
        return _SessionMethod(self._method.options(**options), self._session)


@dataclass(frozen=True)
class _FixedToken:
    token: str

    def __call__(self) -> str:
        return self.token


def with_session(handle: Any, session: Callable[[], str] | None) -> Any:
    """``handle`` carrying ``session``; the bare handle when there is no session (security
    off costs nothing)."""
    if session is None or handle is None or isinstance(handle, SessionHandle):
        return handle
    return SessionHandle(handle, session)


def fixed_session(token: str) -> Callable[[], str]:
    """A session that is always ``token`` (the broker's internal one, or a user token handed
    to a worker)."""
    return _FixedToken(token)
