"""Attaching to Ray, or starting an embedded single-node Ray bound to 127.0.0.1.

Ray rewrites loopback addresses to the machine's other interface unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is in the environment before Ray is imported; a second
process joining a cluster started by ``ray.init`` needs ``RAY_AUTH_MODE=token``. ``ensure_ray``
sets both for the user, so connecting "just works" on loopback.
"""

from __future__ import annotations

import os
from pathlib import Path

LOOPBACK = "127.0.0.1"
_TOKEN_FILE = Path.home() / ".ray" / "auth_token"


def _prepare_environment(address: str | None) -> bool:
    """Set Ray's environment for ``address``; True if Ray must stay on loopback."""
    loopback = (
        address is None
        or address in ("auto", "local")
        or address.startswith((LOOPBACK, "localhost", "ray://127.0.0.1", "ray://localhost"))
    )
    if loopback:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address not in (None, "local") and _TOKEN_FILE.exists():
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    return loopback


def ensure_ray(address: str | None = None, namespace: str | None = None) -> bool:
    """Make sure this process is connected to Ray; returns True if it started Ray itself.

    ``address`` (or ``RAY_ADDRESS``) attaches to a running cluster; without either, an embedded
    local Ray starts on 127.0.0.1 with no dashboard.

    Raises:
        BrokerNotRunning: no Ray cluster answers at ``address``.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    loopback = _prepare_environment(address)
    import ray

    if loopback:
        # Ray reads the environment variable once, when ``ray`` is first imported: if the
        # application imported Ray before ray_broker, the setting above came too late and Ray
        # would listen on every interface. Apply it where Ray looks it up at run time.
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False

    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, namespace=namespace, log_to_driver=False)
        except ConnectionError as exc:
            from ray_broker.errors import BrokerNotRunning

            raise BrokerNotRunning(
                f"no Ray cluster answers at {address} ({exc}); start one with "
                "`ray-broker start` (or `ray start --head`)"
            ) from None
        return False
    ray.init(
        address="local",  # a new instance: never join another Ray found on this machine
        _node_ip_address=LOOPBACK,
        include_dashboard=False,
        namespace=namespace,
        log_to_driver=False,
        configure_logging=False,
    )
    return True
