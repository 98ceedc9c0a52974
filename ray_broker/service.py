"""The broker as a long-running service: ``ray-broker start | stop | status``.

``start`` attaches to a Ray cluster (``--address``, ``RAY_ADDRESS``; ``--address auto`` finds the
one ``ray start`` made on this machine) or, if none is named, starts a single-node Ray head
bound to 127.0.0.1 as a background process; then it starts the broker's detached actors. It
leaves a small record (``~/.ray_broker/service.json``: address, namespace, data directory,
whether it started Ray) so that later commands on this machine find the broker without flags,
the way ``ray status`` finds the cluster ``ray start`` made. Jobs on the cluster need no record:
``rb.connect()`` inside a Ray job, or ``rb.connect(address="auto")``, finds the broker by its
namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ray_broker.config import CONTROLLER_NAME, DEFAULT_NAMESPACE
from ray_broker.errors import BrokerNotRunning

SERVICE_RECORD = Path.home() / ".ray_broker" / "service.json"
LOCAL_RAY_START_TIMEOUT_S = 120
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServiceRecord:
    """What ``start`` left for later commands."""

    address: str
    namespace: str
    data_dir: str
    started_ray: bool

    def save(self, path: Path = SERVICE_RECORD) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path = SERVICE_RECORD) -> ServiceRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):  # none, or unreadable: as if none
            return None


def running_address() -> str | None:
    """The address of the Ray cluster the broker service runs on, if ``start`` ran on this
    machine; None means commands run their own embedded Ray."""
    record = ServiceRecord.load()
    return None if record is None else record.address


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def local_ray_temp_dir(address: str) -> Path:
    """The temp dir of a Ray ``start`` made: every one of its daemons names it on its command
    line, which is how ``stop`` finds them without touching other Ray clusters on the machine.
    Short, because Ray's Unix sockets live under it (108-byte path limit)."""
    return Path(tempfile.gettempdir()) / f"rb-{address.rsplit(':', 1)[-1]}"


def start_local_ray(extra_env: dict[str, str] | None = None) -> str:
    """Start a single-node Ray head on 127.0.0.1 in the background; returns its address.
    ``extra_env`` adds to its environment (Ray's TLS and token settings, for instance).

    Raises:
        BrokerNotRunning: ``ray start`` failed (its output is in the message).
    """
    ray_cli = shutil.which("ray")
    if ray_cli is None:
        raise BrokerNotRunning("the `ray` command is not on PATH; install ray")
    address = f"{LOOPBACK}:{_free_loopback_port()}"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **(extra_env or {})}
    env.setdefault("RAY_worker_niceness", "0")  # broker actors serve: see actors/priority.py
    result = subprocess.run(
        [
            ray_cli,
            "start",
            "--head",
            f"--node-ip-address={LOOPBACK}",
            f"--port={address.rsplit(':', 1)[-1]}",
            f"--temp-dir={local_ray_temp_dir(address)}",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=LOCAL_RAY_START_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise BrokerNotRunning(f"`ray start --head` failed: {result.stderr.strip()[-500:]}")
    return address


def stop_local_ray(address: str) -> None:
    """Stop the Ray ``start_local_ray`` started (only its processes; ``ray stop`` would stop
    every Ray cluster of this user)."""
    import psutil

    marker = str(local_ray_temp_dir(address)) + os.sep
    mine = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if any(marker in arg for arg in process.info["cmdline"] or ()):
                mine.append(process)
    for process in mine:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _gone, alive = psutil.wait_procs(mine, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    shutil.rmtree(local_ray_temp_dir(address), ignore_errors=True)


def broker_is_running(namespace: str) -> bool:
    """Whether this (connected) Ray cluster has the namespace's Controller."""
    import ray

    try:
        ray.get_actor(CONTROLLER_NAME, namespace=namespace)
    except ValueError:
        return False
    return True


def require_broker(address: str, namespace: str) -> None:
    """Raises BrokerNotRunning (with the command that starts one) unless this connected Ray
    cluster has the namespace's broker."""
    if not broker_is_running(namespace):
        raise BrokerNotRunning(
            f"no broker runs in namespace {namespace!r} at {address} (start: ray-broker start)"
        )


def start(
    address: str | None,
    namespace: str = DEFAULT_NAMESPACE,
    data_dir: Path | None = None,
    *,
    secure: bool = False,
    username: str | None = None,
    password: str | None = None,
    kafka_listeners: str | None = None,
    http: str | None = None,
) -> dict[str, Any]:
    """Start the broker service (idempotent); returns what runs and whether it already did.
    ``secure`` switches security on for a new broker, ``username`` becoming its first
    superuser (see ``connect``); ``kafka_listeners`` ("HOST:PORT,...") start Kafka
    listeners beside it; ``http`` ("HOST:PORT") the HTTP API and web console.

    Raises:
        BrokerNotRunning: Ray could not be started or reached; InvalidConfig, DataDirInUse;
        AuthenticationFailed.
    """
    import ray_broker as rb
    from ray_broker.runtime import ensure_ray

    started_ray = False
    record = ServiceRecord.load()
    address = address or os.environ.get("RAY_ADDRESS") or running_address()
    if address is None:
        address = start_local_ray()
        started_ray = True
    try:
        ensure_ray(address, namespace)
    except BrokerNotRunning:
        if record is None or record.address != address:
            raise
        # The record names a cluster that is gone (the machine rebooted, `ray stop` ran):
        # forget it and start afresh, as a first `start` would.
        SERVICE_RECORD.unlink(missing_ok=True)
        address = start_local_ray()
        started_ray = True
        ensure_ray(address, namespace)
    already = broker_is_running(namespace)
    config: dict[str, Any] = {"security.enabled": True} if secure else {}
    if kafka_listeners:
        config["kafka.listeners"] = kafka_listeners
    with rb.connect(
        address,
        data_dir=None if already else data_dir,
        namespace=namespace,
        config=config or None,
        username=username,
        password=password,
    ) as broker:
        data_dir_used = str(broker.data_dir)
        listeners = broker.kafka_listeners()
        if http:
            from ray_broker.console import start_console

            start_console(broker, http)
        from ray_broker.console import console_url

        consoles = console_url(namespace)
    previous = ServiceRecord.load()
    started_ray = started_ray or bool(
        previous and previous.started_ray and previous.address == address
    )
    ServiceRecord(address, namespace, data_dir_used, started_ray).save()
    return {
        "already_running": already,
        "address": address,
        "namespace": namespace,
        "data_dir": data_dir_used,
        "started_ray": started_ray,
        "kafka_listeners": listeners,
        "consoles": consoles,
    }


def stop(
    address: str | None,
    namespace: str = DEFAULT_NAMESPACE,
    username: str | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    """Stop the broker's actors (data is kept) and the local Ray ``start`` started, if any.

    Raises:
        BrokerNotRunning: no broker runs in ``namespace``.
    """
    import ray_broker as rb
    from ray_broker.runtime import ensure_ray

    record = ServiceRecord.load()
    address = address or os.environ.get("RAY_ADDRESS") or running_address()
    if address is None:
        raise BrokerNotRunning("no broker service runs on this machine (start: ray-broker start)")
    try:
        ensure_ray(address, namespace)
    except BrokerNotRunning:
        if record is not None and record.address == address:
            SERVICE_RECORD.unlink(missing_ok=True)  # its cluster is gone: nothing to stop
        raise
    require_broker(address, namespace)
    rb.connect(address, namespace=namespace, username=username, password=password).shutdown()
    stopped_ray = False
    if record is not None and record.namespace == namespace:
        SERVICE_RECORD.unlink(missing_ok=True)
        if record.started_ray and record.address == address:
            import ray

            ray.shutdown()
            stop_local_ray(address)
            stopped_ray = True
    return {"stopped": namespace, "address": address, "stopped_ray": stopped_ray}
