"""What every request handler of the console application reaches: the gateway, the login
sessions and the monitor (``app.state.console``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from ray_broker.console.auth import COOKIE, CSRF_HEADER, ConsoleSessions, account_for
from ray_broker.console.gateway import Account, Gateway
from ray_broker.console.monitor import Monitor


@dataclass
class ConsoleState:
    gateway: Gateway
    sessions: ConsoleSessions
    monitor: Monitor
    cluster_id: str

    def close(self) -> None:
        self.monitor.stop()
        self.gateway.close()


def console_state(request: Request) -> ConsoleState:
    return request.app.state.console


def acting(request: Request) -> Account:
    """FastAPI dependency: the account this request acts as (see ``auth.account_for``)."""
    state = console_state(request)
    return account_for(
        state.gateway,
        state.sessions,
        request.method,
        request.headers.get("authorization"),
        request.cookies.get(COOKIE),
        request.headers.get(CSRF_HEADER),
    )


def json_ready(value: Any) -> Any:
    """Dataclasses, tuples and sets as plain JSON values."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_ready(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_ready(v) for v in value]
    return value
