"""The Controller's security state: users (SCRAM credentials, never passwords), ACLs, quotas,
session keys, logins in progress — durable in a compacted metadata log
(``__internal/security``), the session keys in ``__internal/session.keys`` (mode 0600).

Plain and clock-injected: the Controller does the I/O around it, tests drive it directly.

Security, once switched on for a data directory, stays on: the flag is stored with the users,
so a later ``connect()`` without ``security.enabled`` cannot open the broker again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray_broker.actors.metadata_store import MetadataStore
from ray_broker.actors.security.access_guard import SecurityPolicy
from ray_broker.actors.security.acl import acl_matches, checked_acl, checked_user_name, tenant_of
from ray_broker.actors.security.quotas import checked_quota_values, entity_key
from ray_broker.actors.security.scram import ScramCredential, ScramServer, checked_credentials
from ray_broker.actors.security.session_tokens import TokenSigner
from ray_broker.errors import AuthenticationFailed, InvalidAcl
from ray_broker.structs import Acl, QuotaEntity, UserDescription

LOGIN_EXCHANGE_TIMEOUT_S = 30.0
MAX_PENDING_LOGINS = 10_000
FREE_FAILURES = 5  # failed logins per user before back-off starts
MAX_LOCKOUT_S = 60.0


@dataclass
class _Exchange:
    server: ScramServer
    user: str
    started: float


class LoginThrottle:
    """Per user name (known or not — the answer must not tell them apart): after
    ``FREE_FAILURES`` failed logins, each attempt must wait 2^(failures − 5) s, ≤ 60 s; a
    success clears the count."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # user → (failures, last failure)

    def check(self, user: str) -> None:
        """Raises AuthenticationFailed (with ``retry_after_ms``) while ``user`` is locked out."""
        failures, last = self._failures.get(user, (0, 0.0))
        if failures < FREE_FAILURES:
            return
        wait = min(2.0 ** (failures - FREE_FAILURES), MAX_LOCKOUT_S) - (self._clock() - last)
        if wait > 0:
            raise AuthenticationFailed(
                f"too many failed logins for this user; retry in {wait:.1f} s",
                retry_after_ms=int(wait * 1000) + 1,
            )

    def failed(self, user: str) -> None:
        failures, _ = self._failures.get(user, (0, 0.0))
        if len(self._failures) > 100_000:
            self._failures.clear()
        self._failures[user] = (failures + 1, self._clock())

    def succeeded(self, user: str) -> None:
        self._failures.pop(user, None)


class SecurityRegistry:
    """Users, ACLs, quotas and session keys of one broker."""

    def __init__(
        self,
        store: MetadataStore,
        keys_path: Path,
        enable: bool,
        superusers: Iterable[str] = (),
        session_lifetime_ms: int = 900_000,
        quota_window_ms: int = 1000,
        quota_windows: int = 11,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._store = store
        self._keys_path = keys_path
        self._clock = clock
        self._wall_ms = wall_ms
        self.session_lifetime_ms = session_lifetime_ms
        self._quota_window = (quota_window_ms, quota_windows)
        self._configured_superusers = frozenset(f"User:{u}" for u in superusers)
        self._exchanges: dict[str, _Exchange] = {}
        self.throttle = LoginThrottle(clock)
        docs = store.load()
        self.enabled = bool(docs.get("security", {}).get("enabled")) or enable
        if enable and not docs.get("security", {}).get("enabled"):
            store.put("security", {"enabled": True})
        self.users: dict[str, dict[str, Any]] = {
            k[5:]: v for k, v in docs.items() if k.startswith("user/")
        }
        self.acls: list[Acl] = [Acl(**v) for k, v in docs.items() if k.startswith("acl/")]
        self.quotas: dict[str, dict[str, float]] = {
            k[6:]: v for k, v in docs.items() if k.startswith("quota/")
        }
        self._keys, self._current_key = self._load_keys() if self.enabled else ({}, "")
        # Versions outlive a Controller restart: actors keep the newest snapshot they saw.
        self.version = wall_ms()

    def _bump(self) -> None:
        self.version = max(self.version + 1, self._wall_ms())

    # --- session keys -----------------------------------------------------------------------

    def _load_keys(self) -> tuple[dict[str, bytes], str]:
        if self._keys_path.exists():
            doc = json.loads(self._keys_path.read_text())
            return {k: bytes.fromhex(v) for k, v in doc["keys"].items()}, doc["current"]
        return self._write_keys({}, None)

    def _write_keys(self, keys: dict[str, bytes], old_current: str | None) -> tuple[dict, str]:
        current = secrets.token_hex(4)
        kept = {old_current: keys[old_current]} if old_current in keys else {}
        keys = {**kept, current: secrets.token_bytes(32)}
        self._keys_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._keys_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"current": current, "keys": {k: v.hex() for k, v in keys.items()}}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self._keys_path)
        return keys, current

    def rotate_key(self) -> None:
        """A new signing key; the previous one still verifies the tokens it signed."""
        self._keys, self._current_key = self._write_keys(self._keys, self._current_key)
        self._bump()

    # --- users ------------------------------------------------------------------------------

    def create_user(
        self, name: str, credentials: dict[str, dict[str, Any]], *, superuser: bool = False
    ) -> None:
        """Create ``name`` or replace its credentials (which ends its sessions).
        ``credentials`` come from ``scram.credentials_for`` on the client.

        Raises:
            InvalidAcl: a bad name or malformed credentials; a tenant's user as superuser.
        """
        checked_user_name(name)
        checked_credentials(credentials)
        if superuser and tenant_of(name) is not None:
            raise InvalidAcl("a tenant's user cannot be a superuser")
        old = self.users.get(name)
        doc = {
            "credentials": dict(credentials),
            "generation": (old["generation"] + 1) if old else 1,
            "superuser": superuser or bool(old and old.get("superuser")),
        }
        self._store.put(f"user/{name}", doc)
        self.users[name] = doc
        self._bump()

    def delete_user(self, name: str) -> None:
        """Raises InvalidAcl: no such user."""
        if name not in self.users:
            raise InvalidAcl(f"no user {name!r}")
        self._store.put(f"user/{name}", None)
        del self.users[name]
        self._bump()

    def list_users(self, tenant: str | None = None) -> list[UserDescription]:
        return [
            UserDescription(
                name, tenant_of(name), bool(doc.get("superuser")), tuple(sorted(doc["credentials"]))
            )
            for name, doc in sorted(self.users.items())
            if tenant is None or tenant_of(name) == tenant
        ]

    # --- login ------------------------------------------------------------------------------

    def login_first(self, mechanism: str, client_first: str) -> str:
        """Start a SCRAM exchange; returns ``"<exchange id> <server-first>"``'s parts.

        Raises:
            AuthenticationFailed: security off, a malformed message, an unknown mechanism, or
                the user is locked out after failed attempts.
        """
        if not self.enabled:
            raise AuthenticationFailed("this broker is not secured: connect without a password")
        user = ScramServer.username_of(client_first)
        self.throttle.check(user)
        server = ScramServer(mechanism)
        doc = self.users.get(user)
        stored = doc and doc["credentials"].get(mechanism)
        credential = ScramCredential.from_json(stored) if stored else None
        decoy = _decoy_salt(self._keys, user)
        server_first = server.first(client_first, credential, decoy)
        self._expire_exchanges()
        if len(self._exchanges) >= MAX_PENDING_LOGINS:
            raise AuthenticationFailed(
                "too many logins in progress; retry shortly", retry_after_ms=1000
            )
        self._exchanges[server.nonce] = _Exchange(server, user, self._clock())
        return server_first

    def login_final(self, client_final: str) -> dict[str, Any]:
        """Finish the exchange whose nonce ``client_final`` carries: the server's proof, a
        session token and its expiry. An exchange is used once: a replayed final message
        finds nothing.

        Raises:
            AuthenticationFailed: wrong password, unknown user, replay, or a stale exchange.
        """
        nonce = _nonce_of(client_final)
        exchange = self._exchanges.pop(nonce, None)
        if exchange is None or self._clock() - exchange.started > LOGIN_EXCHANGE_TIMEOUT_S:
            raise AuthenticationFailed("no login in progress for this message (replayed or stale)")
        self.throttle.check(exchange.user)
        try:
            server_final = exchange.server.final(client_final)
        except AuthenticationFailed:
            self.throttle.failed(exchange.user)
            raise
        self.throttle.succeeded(exchange.user)
        doc = self.users[exchange.user]
        signer = TokenSigner(self._keys, self._current_key, self._wall_ms)
        token = signer.issue(
            exchange.user, tenant_of(exchange.user), doc["generation"], self.session_lifetime_ms
        )
        return {
            "server_final": server_final,
            "token": token,
            "lifetime_ms": self.session_lifetime_ms,
        }

    def _expire_exchanges(self) -> None:
        cutoff = self._clock() - LOGIN_EXCHANGE_TIMEOUT_S
        for nonce in [n for n, e in self._exchanges.items() if e.started < cutoff]:
            del self._exchanges[nonce]

    # --- ACLs -------------------------------------------------------------------------------

    def create_acls(self, acls: Iterable[object]) -> list[Acl]:
        """Raises InvalidAcl: any malformed ACL (then none is created)."""
        checked = [checked_acl(acl) for acl in acls]
        for acl in checked:
            if acl not in self.acls:
                self._store.put(f"acl/{_acl_key(acl)}", acl.__dict__)
                self.acls.append(acl)
        self._bump()
        return checked

    def describe_acls(
        self, principal: str | None, resource_type: str | None, name: str | None
    ) -> list[Acl]:
        return [a for a in self.acls if acl_matches(a, principal, resource_type, name)]

    def delete_acls(
        self, principal: str | None, resource_type: str | None, name: str | None
    ) -> list[Acl]:
        gone = self.describe_acls(principal, resource_type, name)
        for acl in gone:
            self._store.put(f"acl/{_acl_key(acl)}", None)
            self.acls.remove(acl)
        self._bump()
        return gone

    # --- quotas -----------------------------------------------------------------------------

    def alter_quotas(self, entity: QuotaEntity, values: dict[str, Any]) -> dict[str, float]:
        """Set (a number) or remove (None) quotas of ``entity``; returns what it has now.

        Raises:
            InvalidAcl: a malformed entity, an unknown kind, an absurd rate.
        """
        key = entity_key(entity)
        current = dict(self.quotas.get(key, {}))
        for kind, rate in checked_quota_values(values).items():
            if rate is None:
                current.pop(kind, None)
            else:
                current[kind] = rate
        if current:
            self.quotas[key] = current
        else:
            self.quotas.pop(key, None)
        self._store.put(f"quota/{key}", current or None)
        self._bump()
        return current

    def describe_quotas(self) -> dict[str, dict[str, float]]:
        return {k: dict(v) for k, v in sorted(self.quotas.items())}

    # --- the snapshot every actor checks against -------------------------------------------

    def policy(self) -> SecurityPolicy:
        return SecurityPolicy(
            version=self.version,
            enabled=self.enabled,
            keys=dict(self._keys),
            current_key=self._current_key,
            users={name: doc["generation"] for name, doc in self.users.items()},
            superusers=self._configured_superusers
            | {f"User:{n}" for n, d in self.users.items() if d.get("superuser")},
            acls=tuple(self.acls),
            quotas={k: dict(v) for k, v in self.quotas.items()},
            quota_window_ms=self._quota_window[0],
            quota_windows=self._quota_window[1],
        )


def _acl_key(acl: Acl) -> str:
    return json.dumps(list(acl.__dict__.values()), separators=(",", ":"))


def _nonce_of(client_final: object) -> str:
    if not isinstance(client_final, str) or len(client_final) > 4096:
        raise AuthenticationFailed("SCRAM: malformed final message")
    for part in client_final.split(","):
        if part.startswith("r="):
            return part[2:]
    raise AuthenticationFailed("SCRAM: the final message carries no nonce")


def _decoy_salt(keys: dict[str, bytes], user: str) -> bytes:
    secret = next(iter(keys.values()), b"ray-broker")
    return hmac.new(secret, b"decoy-salt:" + user.encode(), hashlib.sha256).digest()
