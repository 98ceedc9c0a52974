"""Starting and stopping the console beside a broker: a named, detached Ray actor on the head
node (``ray_broker.console:HOST:PORT``), restarted by Ray if its process dies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray_broker.edge_actors import (
    CONSOLE_PREFIX,
    describe_named,
    free_port,
    start_named,
    stop_named,
)
from ray_broker.errors import InvalidConfig

if TYPE_CHECKING:
    from ray_broker.broker import Broker

NAME_PREFIX = CONSOLE_PREFIX
START_TIMEOUT_S = 120.0
DEFAULT_ADDRESS = "127.0.0.1:8080"


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port); port 0 picks a free one.

    Raises:
        InvalidConfig: not host:port.
    """
    host, _, port = str(address).strip().rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65_535:
        raise InvalidConfig(f"the console address is HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def start_console(broker: Broker, address: str = DEFAULT_ADDRESS) -> dict[str, Any]:
    """Start (or find) the console on ``address``; returns host, port and URL.

    Raises:
        InvalidConfig: a malformed address.
        BrokerNotRunning: the console could not start (the address is taken, for instance).
    """
    from ray_broker.console.server import ConsoleServer

    host, port = parse_address(address)
    bound_port = port or free_port(host)  # resolved once: a restarted console binds it again
    return start_named(
        ConsoleServer,
        f"{NAME_PREFIX}{host}:{port}",
        broker.namespace,
        (broker.namespace, dict(broker._settings), host, bound_port),
        max_concurrency=4,
        ready="describe",
        what=f"the console on {host}:{port}",
        timeout_s=START_TIMEOUT_S,
    )


def console_url(namespace: str) -> list[str]:
    """The URLs of the consoles serving ``namespace``."""

    return [found["url"] for found in describe_named(namespace, NAME_PREFIX)]


def stop_consoles(namespace: str) -> int:
    """Stop every console of the namespace; how many there were."""

    return stop_named(namespace, NAME_PREFIX)
