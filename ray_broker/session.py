"""A client's session on a secured broker: SCRAM login, then a short-lived token that every
call carries (see ``actors/security/access_guard.py``), renewed by logging in again before it
expires.

The password stays in this process's memory only (Kafka clients keep their JAAS password the
same way, to re-authenticate); what crosses to other processes — a Ray Data read task, a push
dispatcher — is the current token, never the password (``__reduce__``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ray_broker._ray import call
from ray_broker.actors.security.access_guard import fixed_session
from ray_broker.actors.security.scram import DEFAULT_MECHANISM, ScramClient
from ray_broker.errors import AuthenticationFailed, BrokerNotRunning

LOGIN_TIMEOUT_S = 30.0
RENEW_AT_FRACTION = 2 / 3  # of the token's lifetime


class UserSession:
    """Callable: the current token, logging in again when two thirds of its life are gone."""

    def __init__(
        self,
        controller: Callable[[], Any],
        username: str,
        password: str,
        mechanism: str = DEFAULT_MECHANISM,
    ) -> None:
        if not isinstance(username, str) or not isinstance(password, str):
            raise AuthenticationFailed("username and password are strings")
        self._controller = controller
        self.username = username
        self._password = password
        self.mechanism = mechanism
        self._lock = threading.Lock()
        self._token = ""
        self._renew_at = 0.0
        self.login()

    def login(self) -> None:
        """Run SCRAM against the Controller and keep the token it grants.

        Raises:
            AuthenticationFailed: wrong credentials, a locked-out user, a broker that could not
                prove it knows the credential, or a broker without security.
            BrokerNotRunning: the Controller did not answer.
        """
        client = ScramClient(self.username, self._password, self.mechanism)
        controller = self._controller()
        server_first = call(
            controller.login_first,
            self.mechanism,
            client.first(),
            timeout_s=LOGIN_TIMEOUT_S,
            unavailable=BrokerNotRunning,
        )
        answer = call(
            controller.login_final,
            client.final(server_first),
            timeout_s=LOGIN_TIMEOUT_S,
            unavailable=BrokerNotRunning,
        )
        client.verify(answer["server_final"])
        self._token = answer["token"]
        self._renew_at = time.monotonic() + answer["lifetime_ms"] / 1000 * RENEW_AT_FRACTION

    def __call__(self) -> str:
        if time.monotonic() >= self._renew_at:
            with self._lock:
                if time.monotonic() >= self._renew_at:
                    self.login()
        return self._token

    def __repr__(self) -> str:
        return f"UserSession(username={self.username!r}, mechanism={self.mechanism!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (fixed_session, (self(),))


def token_session(token: str) -> Callable[[], str]:
    """A session on a token obtained elsewhere (``Broker.session_token()``), for workers that
    should not hold the password; it is not renewed."""
    if not isinstance(token, str) or not token:
        raise AuthenticationFailed("a session token is a non-empty string")
    return fixed_session(token)
