"""Session tokens: what ``connect(username=, password=)`` gets after SCRAM and every call then
carries, checked by every actor it reaches.

A token is ``rbt1.<payload>.<mac>``: the payload (principal, tenant, the user's credential
generation, expiry, key id, a random session id) in URL-safe base64 JSON, the MAC an
HMAC-SHA256 over it with the broker's session key. Verifying needs no round trip to the
Controller — each actor holds the keys — which is what lets a partition check every produce
and fetch for the price of a dict lookup (verified tokens are cached until they expire).

Keys rotate on demand (``admin.rotate_session_key()``): the newest key signs, the previous one
still verifies until the tokens it signed have expired, so rotation logs nobody out early.
Revocation is by user: deleting a user or changing its password bumps its generation, and a
token of an older generation is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ray_broker.errors import AuthenticationFailed

PREFIX = "rbt1"
MAX_TOKEN_CHARS = 2048
_CACHE_MAX = 10_000


@dataclass(frozen=True)
class SessionClaims:
    """Who a verified token speaks for."""

    principal: str  # "User:alice", "User:acme/bob"
    user: str
    tenant: str | None
    generation: int
    expires_ms: int
    session_id: str


class TokenSigner:
    """Issues and verifies tokens with ``keys`` (key id → secret bytes); ``current`` signs."""

    def __init__(
        self,
        keys: dict[str, bytes],
        current: str,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        if current not in keys:
            raise ValueError(f"signing key {current!r} is not among the keys")
        self._keys = dict(keys)
        self._current = current
        self._clock_ms = clock_ms
        self._verified: dict[str, SessionClaims] = {}

    def issue(self, user: str, tenant: str | None, generation: int, lifetime_ms: int) -> str:
        payload = {
            "u": user,
            "t": tenant,
            "g": generation,
            "e": self._clock_ms() + lifetime_ms,
            "k": self._current,
            "s": secrets.token_urlsafe(9),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        signed = f"{PREFIX}.{body}"
        return f"{signed}.{_b64(self._mac(self._current, signed))}"

    def verify(self, token: object) -> SessionClaims:
        """Raises AuthenticationFailed: not a token, forged (bad MAC or unknown key), expired."""
        claims = self._verified.get(token) if isinstance(token, str) else None
        if claims is None:
            claims = self._check(token)
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
            self._verified[token] = claims  # type: ignore[index]
        if claims.expires_ms <= self._clock_ms():
            self._verified.pop(token, None)  # type: ignore[arg-type]
            raise AuthenticationFailed("the session token has expired; connect again")
        return claims

    def _check(self, token: object) -> SessionClaims:
        if not isinstance(token, str) or not token:
            raise AuthenticationFailed(
                "this broker is secured: calls need a session token "
                "(rb.connect(username=..., password=...))"
            )
        parts = token.split(".")
        if len(token) > MAX_TOKEN_CHARS or len(parts) != 3 or parts[0] != PREFIX:
            raise AuthenticationFailed("the session token is malformed")
        try:
            payload = json.loads(_unb64(parts[1]))
            key_id = payload["k"]
            mac = _unb64(parts[2])
        except (ValueError, KeyError, TypeError):
            raise AuthenticationFailed("the session token is malformed") from None
        if key_id not in self._keys or not hmac.compare_digest(
            mac, self._mac(key_id, f"{parts[0]}.{parts[1]}")
        ):
            raise AuthenticationFailed("the session token's signature is not the broker's")
        user = payload["u"]
        return SessionClaims(
            principal=f"User:{user}",
            user=user,
            tenant=payload["t"],
            generation=int(payload["g"]),
            expires_ms=int(payload["e"]),
            session_id=str(payload["s"]),
        )

    def _mac(self, key_id: str, signed: str) -> bytes:
        return hmac.new(self._keys[key_id], signed.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
