"""The console's connection to one broker, acting for whoever asks.

With security off everyone shares one anonymous connection. With it on, a user's first request
logs in with SCRAM against the Controller (the password never leaves this process) and gets an
``Account``: a ``Broker`` whose every call carries that user's session, so the broker's actors
— not the console — decide what the user may see and do. Accounts are cached by a keyed digest
of the credentials (a wrong password never matches a cached right one) and dropped when idle.

The overview's numbers come from the ``monitor`` connection, which acts as the broker itself
(the internal token in the data directory: the console runs on the head node); each user sees
only the topics and groups the broker lists for that user.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_broker.console.expiring_cache import ExpiringCache
from ray_broker.errors import AuthenticationFailed

MAX_ACCOUNTS = 256
ACCOUNT_IDLE_S = 15 * 60.0
# The producer the API and the console's produce form send with: acks=all as a durable
# hand-off should, and a short linger so a batched JSON body becomes few partition calls.
PRODUCER_OPTIONS: dict[str, Any] = {"acks": "all", "linger_ms": 5}


@dataclass
class Account:
    """One user's connection: its ``Broker`` and, made on first use, a producer."""

    principal: str
    broker: Any
    key: bytes = b""  # its place in the gateway's cache
    _producer: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admin(self) -> Any:
        return self.broker.admin()

    def producer(self) -> Any:
        with self._lock:
            if self._producer is None:
                self._producer = self.broker.producer(**PRODUCER_OPTIONS)
            return self._producer

    def close(self) -> None:
        self.broker.close()


class Gateway:
    """Hands out the ``Account`` a request acts as."""

    def __init__(
        self,
        namespace: str,
        settings: dict[str, Any],
        info: dict[str, Any],
        controller: Any,
        coordinator: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.namespace = namespace
        self.secured = bool(info.get("security_enabled"))
        self._settings = dict(settings)
        self._info = info
        self._controller = controller
        self._coordinator = coordinator
        self._digest_key = secrets.token_bytes(32)
        self._making = threading.Lock()
        self._accounts: ExpiringCache[bytes, Account] = ExpiringCache(
            MAX_ACCOUNTS, ACCOUNT_IDLE_S, clock, on_evict=Account.close
        )
        self._anonymous = None if self.secured else self._account("User:ANONYMOUS", None)
        self.monitor = self._account("User:__broker", self._internal_session())

    @classmethod
    def attach(cls, namespace: str, settings: dict[str, Any]) -> Gateway:
        """The gateway of the broker running in ``namespace`` (Ray is connected already).

        Raises:
            BrokerNotRunning: no broker runs in ``namespace``.
        """
        import ray

        from ray_broker._ray import call
        from ray_broker.config import CONTROLLER_NAME, GROUP_COORDINATOR_NAME
        from ray_broker.errors import BrokerNotRunning

        try:
            controller = ray.get_actor(CONTROLLER_NAME, namespace=namespace)
            coordinator = ray.get_actor(GROUP_COORDINATOR_NAME, namespace=namespace)
        except ValueError:
            raise BrokerNotRunning(f"no broker runs in namespace {namespace!r}") from None
        info = call(controller.ready, timeout_s=120, unavailable=BrokerNotRunning)
        settings = {**settings, "log.dirs": info["data_dir"]}
        return cls(namespace, settings, info, controller, coordinator)

    def anonymous(self) -> Account:
        """Raises AuthenticationFailed: the broker is secured."""
        if self._anonymous is None:
            raise AuthenticationFailed("this broker is secured: log in")
        return self._anonymous

    def login(self, username: str, password: str) -> Account:
        """The account of ``username``, logging in on first use.

        With security off there are no users: the anonymous account, whatever the credentials
        (as Kafka's REST Proxy ignores them without authentication).

        Raises:
            AuthenticationFailed: wrong credentials.
            BrokerNotRunning: the Controller did not answer.
        """
        if not self.secured:
            return self.anonymous()
        key = hmac.new(
            self._digest_key, f"{username}\0{password}".encode(), hashlib.sha256
        ).digest()

        def log_in() -> Account:
            from ray_broker.session import UserSession

            session = UserSession(self._controller_handle, username, password)
            return self._account(f"User:{username}", session, key)

        return self._cached(key, log_in)

    def _cached(self, key: bytes, make: Callable[[], Account]) -> Account:
        """One account per key even when a user's first requests arrive together (a second
        account would replace the first and close it under the other request)."""
        account = self._accounts.get(key)
        if account is None:
            with self._making:
                account = self._accounts.get(key)
                if account is None:
                    account = make()
                    self._accounts.put(key, account)
        return account

    def from_token(self, token: str) -> Account:
        """An account acting on a session token another client obtained (``Authorization:
        Bearer``); the broker checks the token on every call.

        Raises:
            AuthenticationFailed: a malformed, forged or expired token.
        """
        if not self.secured:
            return self.anonymous()
        from ray_broker.session import token_session

        key = b"token:" + hashlib.sha256(token.encode()).digest()

        def adopt() -> Account:
            account = self._account("", token_session(token), key)
            account.principal = account.broker.whoami()  # refuses a forged or expired token
            return account

        return self._cached(key, adopt)

    def forget(self, account: Account) -> None:
        """Log a console user out: their cached connection goes."""
        if account.key:
            self._accounts.pop(account.key)

    def close(self) -> None:
        self._accounts.clear()
        for account in (self._anonymous, self.monitor):
            if account is not None:
                account.close()

    def _controller_handle(self) -> Any:
        return self._controller

    def _internal_session(self) -> Callable[[], str] | None:
        if not self.secured:
            return None
        from ray_broker.actors.data_dir import internal_token
        from ray_broker.actors.security.access_guard import fixed_session

        return fixed_session(internal_token(Path(self._info["data_dir"])))

    def _account(
        self, principal: str, session: Callable[[], str] | None, key: bytes = b""
    ) -> Account:
        from ray_broker.broker import Broker

        broker = Broker(
            self._controller,
            self._coordinator,
            self.namespace,
            self._info,
            owns_ray=False,
            settings=self._settings,
            session=session,
        )
        return Account(principal, broker, key)
