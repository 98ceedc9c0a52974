"""Attaching to Ray, or starting an embedded single-node Ray bound to 127.0.0.1.

Two environment settings decide whether a connection works on these machines, and both are
read by Ray at a particular moment, which is why this module is careful about *when* it
touches them:

* ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps a loopback address on 127.0.0.1 (otherwise Ray
  rewrites it to the machine's other interface). Ray reads it when ``ray`` is imported; if the
  application imported Ray first, the constant is set where Ray looks it up at run time.
* Token authentication. Ray caches its auth mode when it is imported, so setting
  ``RAY_AUTH_MODE`` afterwards breaks a connection Ray alone would make (the GCS answers
  ``InvalidAuthToken``). Ray already handles ``ray.init()`` (new cluster: token on),
  ``address="auto"`` and jobs (``ray job submit`` hands the driver the cluster's mode). What it
  leaves open is an explicit address (``"127.0.0.1:6379"``, ``RAY_ADDRESS``) to a token cluster:
  there this module enables token mode if a token is available, and only in one of two safe
  ways — in the environment before Ray's first import, or, once Ray is imported, through Ray's
  own helper that refreshes its cached config (what Ray itself runs for ``address="auto"``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LOOPBACK = "127.0.0.1"
AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"
_TOKEN_FILE = Path.home() / ".ray" / "auth_token"


def is_loopback(address: str | None) -> bool:
    """Whether Ray must stay on 127.0.0.1 for ``address`` (None, "auto" and "local" are this
    machine's own clusters)."""
    return (
        address is None
        or address in ("auto", "local")
        or address.startswith((LOOPBACK, "localhost", "ray://127.0.0.1", "ray://localhost"))
    )


def token_available() -> bool:
    """Whether this process could present a Ray auth token (where Ray looks for one)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).expanduser().is_file() if path else _TOKEN_FILE.is_file()


def _needs_token_mode(address: str | None) -> bool:
    """An explicit cluster address, no auth mode chosen, and a token to present: the one case
    Ray's own connection logic leaves to the caller."""
    return (
        address not in (None, "auto", "local")
        and AUTH_MODE_VARIABLE not in os.environ
        and token_available()
    )


def _prepare_environment_before_import(address: str | None) -> bool:
    """Ray is not imported yet: settings in the environment reach it at import."""
    loopback = is_loopback(address)
    if loopback:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if _needs_token_mode(address):
        os.environ[AUTH_MODE_VARIABLE] = "token"
    return loopback


def _prepare_imported_ray(address: str | None, loopback: bool) -> None:
    """Ray was imported already (by the application, or just now): settings go where Ray
    reads them at run time, never into an environment it has already read."""
    from ray._private import ray_constants

    if loopback:
        ray_constants.ENABLE_RAY_CLUSTER = False
    if _needs_token_mode(address):
        try:
            from ray._private.authentication.authentication_token_setup import (
                maybe_enable_token_auth_if_token_available,
            )
        except ImportError:  # a Ray without token authentication: nothing to enable
            return
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def ensure_ray(address: str | None = None, namespace: str | None = None) -> bool:
    """Make sure this process is connected to Ray; returns True if it started Ray itself.

    Connected already (a Ray task or actor, or an application that called ``ray.init()``):
    nothing changes. Otherwise ``address`` (or ``RAY_ADDRESS``, which ``ray job submit`` sets
    for a job's driver) attaches to a running cluster; without either, an embedded local Ray
    starts on 127.0.0.1 with no dashboard.

    Raises:
        BrokerNotRunning: no Ray cluster answers at ``address``.
    """
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if "ray" in sys.modules:
        loopback = is_loopback(address)
    else:
        loopback = _prepare_environment_before_import(address)
    import ray

    _prepare_imported_ray(address, loopback)
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


def dashboard_url() -> str | None:
    """The connected cluster's dashboard (and job API) address as ``http://host:port``, or None
    when the cluster runs without one."""
    from ray._private.worker import get_dashboard_url

    try:
        url = get_dashboard_url()
    except Exception:  # not connected, or a Ray that cannot say: report none
        return None
    if not url:
        return None
    return url if "://" in url else f"http://{url}"
