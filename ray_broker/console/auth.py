"""Who a request acts as, and the console's login sessions.

- ``Authorization: Basic`` (the broker's users and passwords; SCRAM runs between the console
  and the Controller) or ``Authorization: Bearer <session token>`` (``Broker.session_token()``)
  for the API;
- the ``rb_session`` cookie for the console: set by the login form, ``HttpOnly`` and
  ``SameSite=Strict``, naming a server-side session that holds the user's connection and a
  CSRF token. Every state-changing console form carries that token; an API call on the cookie
  that changes something must send it as ``X-CSRF-Token``.
- with security off and neither, the anonymous connection.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray_broker.console.expiring_cache import ExpiringCache
from ray_broker.console.gateway import Account, Gateway
from ray_broker.errors import AuthenticationFailed, InvalidRequest

COOKIE = "rb_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
MAX_CONSOLE_SESSIONS = 10_000
CONSOLE_IDLE_S = 30 * 60.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class ConsoleSession:
    account: Account
    csrf_token: str
    username: str


class ConsoleSessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions: ExpiringCache[str, ConsoleSession] = ExpiringCache(
            MAX_CONSOLE_SESSIONS, CONSOLE_IDLE_S, clock
        )

    def open(self, account: Account, username: str) -> str:
        """A new session id (the cookie's value)."""
        session_id = secrets.token_urlsafe(32)
        self._sessions.put(session_id, ConsoleSession(account, secrets.token_urlsafe(32), username))
        return session_id

    def get(self, session_id: str | None) -> ConsoleSession | None:
        return self._sessions.get(session_id) if session_id else None

    def close(self, session_id: str | None) -> ConsoleSession | None:
        return self._sessions.pop(session_id) if session_id else None


def credentials(header: str) -> tuple[str, str]:
    """``Basic base64(user:password)`` → (user, password).

    Raises:
        AuthenticationFailed: not Basic credentials.
    """
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise AuthenticationFailed("Authorization is 'Basic <base64 user:password>'")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise AuthenticationFailed(
            "the Basic credentials are not base64 of user:password"
        ) from None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        raise AuthenticationFailed("the Basic credentials are not user:password")
    return user, password


def account_for(
    gateway: Gateway,
    sessions: ConsoleSessions,
    method: str,
    authorization: str | None,
    cookie: str | None,
    csrf_header: str | None,
) -> Account:
    """The account a request acts as.

    Raises:
        AuthenticationFailed: bad or missing credentials on a secured broker.
        InvalidRequest (403): a state-changing call on the console cookie without its CSRF
            token.
    """
    if authorization:
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() == "bearer" and rest.strip():
            return gateway.from_token(rest.strip())
        return gateway.login(*credentials(authorization))
    session = sessions.get(cookie)
    if session is not None:
        if method not in SAFE_METHODS:
            check_csrf(session, csrf_header)
        return session.account
    return gateway.anonymous()


def check_csrf(session: ConsoleSession, token: Any) -> None:
    """Raises InvalidRequest (403): ``token`` is not this session's CSRF token."""
    if not isinstance(token, str) or not hmac.compare_digest(token, session.csrf_token):
        raise InvalidRequest("missing or wrong CSRF token: reload the page", status=403)
