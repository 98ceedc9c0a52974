"""The broker as a long-running service: ``ray-broker start | stop | status``.

``start`` attaches to a Ray cluster (``--address``, ``RAY_ADDRESS``; ``--address auto`` finds the
one ``ray start`` made on this machine) or, if none is named, starts a single-node Ray head
bound to 127.0.0.1 as a background process — with its dashboard and job server on loopback, so
``ray job submit`` works, and with Ray's token authentication on — then it starts the broker's
detached actors. It leaves one record per namespace (``service_records``) so later commands on
this machine find the broker without flags, the way ``ray status`` finds the cluster
``ray start`` made. Jobs on the cluster need no record: ``rb.connect()`` inside a Ray job finds
the broker by its namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ray_broker.config import CONTROLLER_NAME, DEFAULT_NAMESPACE
from ray_broker.errors import BrokerNotRunning
from ray_broker.runtime import AUTH_MODE_VARIABLE, LOOPBACK, token_available
from ray_broker.service_records import ServiceRecord, others_at, shared_local_ray

LOCAL_RAY_START_TIMEOUT_S = 120
# Ray's own default ports, kept when free so Ray's docs and tools work as written
# (`ray job submit --address http://127.0.0.1:8265`); another Ray on the machine gets free ones.
DASHBOARD_PORT = 8265
DASHBOARD_AGENT_PORT = 52365
RAY_CLIENT_PORT = 10001


def _free_loopback_port(preferred: int = 0) -> int:
    """``preferred`` if nothing listens on it on 127.0.0.1, else a port the OS picks."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise AssertionError("binding port 0 on loopback cannot fail")


def _ensure_auth_token(ray_cli: str, env: dict[str, str]) -> None:
    """A token for the new cluster where Ray looks for one (``~/.ray/auth_token``), made by
    Ray itself, as ``ray.init()`` does for a new local cluster."""
    if not token_available():
        _run_ray(ray_cli, ["get-auth-token", "--generate"], env)


def _run_ray(ray_cli: str, args: list[str], env: dict[str, str]) -> None:
    """``ray ARGS`` in ``env``.

    Raises:
        BrokerNotRunning: it failed (the end of its error output is in the message).
    """
    result = subprocess.run(
        [ray_cli, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=LOCAL_RAY_START_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise BrokerNotRunning(f"`ray {' '.join(args[:2])}` failed: {result.stderr.strip()[-500:]}")


def local_ray_temp_dir(address: str) -> Path:
    """The temp dir of a Ray ``start`` made: every one of its daemons names it on its command
    line, which is how ``stop`` finds them without touching other Ray clusters on the machine.
    Short, because Ray's Unix sockets live under it (108-byte path limit)."""
    return Path(tempfile.gettempdir()) / f"rb-{address.rsplit(':', 1)[-1]}"


def start_local_ray(extra_env: dict[str, str] | None = None, *, dashboard: bool = True) -> str:
    """Start a single-node Ray head on 127.0.0.1 in the background; returns its address.

    ``dashboard`` starts Ray's dashboard and job server (``ray job submit``) on 127.0.0.1,
    on port 8265 unless another Ray holds it. Token authentication is on unless
    ``RAY_AUTH_MODE`` says otherwise (a token is generated if there is none), as for a cluster
    ``ray.init()`` starts. ``extra_env`` adds to Ray's environment (TLS and token settings).

    Raises:
        BrokerNotRunning: ``ray start`` failed (its output is in the message).
    """
    ray_cli = shutil.which("ray")
    if ray_cli is None:
        raise BrokerNotRunning("the `ray` command is not on PATH; install ray")
    address = f"{LOOPBACK}:{_free_loopback_port()}"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **(extra_env or {})}
    env.setdefault("RAY_worker_niceness", "0")  # broker actors serve: see actors/priority.py
    if AUTH_MODE_VARIABLE not in env:
        _ensure_auth_token(ray_cli, env)
        env[AUTH_MODE_VARIABLE] = "token"
    if dashboard:
        web = [
            f"--dashboard-host={LOOPBACK}",
            f"--dashboard-port={_free_loopback_port(DASHBOARD_PORT)}",
        ]
    else:
        web = ["--include-dashboard=false"]
    _run_ray(
        ray_cli,
        [
            "start",
            "--head",
            f"--node-ip-address={LOOPBACK}",
            f"--port={address.rsplit(':', 1)[-1]}",
            f"--temp-dir={local_ray_temp_dir(address)}",
            *web,
            f"--dashboard-agent-listen-port={_free_loopback_port(DASHBOARD_AGENT_PORT)}",
            f"--ray-client-server-port={_free_loopback_port(RAY_CLIENT_PORT)}",
            "--disable-usage-stats",
        ],
        env,
    )
    return address


def local_ray_processes(address: str) -> list[Any]:
    """Every process of the Ray ``start_local_ray`` started at ``address``: the daemons name its
    temp dir or its address on their command lines (the Ray client server names only the
    address), and the rest — workers, agents, the dashboard's modules — descend from them."""
    import psutil

    temp_dir = str(local_ray_temp_dir(address)) + os.sep
    client_server_flag = f"--address={address}"
    roots = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, TypeError):
            arguments = process.info["cmdline"] or ()
            if client_server_flag in arguments or any(temp_dir in arg for arg in arguments):
                roots.append(process)
    found = {p.pid: p for p in roots}
    for root in roots:
        with contextlib.suppress(psutil.Error):
            found.update((child.pid, child) for child in root.children(recursive=True))
    # This command, and the shell that ran it, may name the address on their command lines.
    for process in [psutil.Process(), *psutil.Process().parents()]:
        found.pop(process.pid, None)
    return list(found.values())


def stop_local_ray(address: str) -> None:
    """Stop the Ray ``start_local_ray`` started (only its processes; ``ray stop`` would stop
    every Ray cluster of this user)."""
    import psutil

    mine = local_ray_processes(address)
    for process in mine:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _gone, alive = psutil.wait_procs(mine, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
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


def _attach(address: str | None, namespace: str, dashboard: bool) -> tuple[str, bool]:
    """Connect this process to the Ray the broker runs on; returns its address and whether
    ``start`` owns that Ray (it did, now or for another namespace here).

    The address comes from the caller, ``RAY_ADDRESS``, this namespace's record, or a Ray that
    ``start`` started for another namespace on this machine; with none of them, a new local
    Ray. A recorded cluster that no longer answers is forgotten and replaced, as a first
    ``start`` would do.
    """
    from ray_broker.runtime import ensure_ray

    record = ServiceRecord.load(namespace)
    named = address or os.environ.get("RAY_ADDRESS")
    recorded = None if named else (record.address if record else shared_local_ray())
    target = named or recorded
    if target is not None:
        try:
            ensure_ray(target, namespace)
        except BrokerNotRunning:
            if recorded is None:
                raise
            for gone in ServiceRecord.all():
                if gone.address == recorded:
                    gone.forget()
        else:
            owned = any(r.started_ray for r in ServiceRecord.all() if r.address == target)
            return target, owned
    address = start_local_ray(dashboard=dashboard)
    ensure_ray(address, namespace)
    return address, True


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
    dashboard: bool = True,
) -> dict[str, Any]:
    """Start the broker service (idempotent); returns what runs and whether it already did.
    ``secure`` switches security on for a new broker, ``username`` becoming its first
    superuser (see ``connect``); ``kafka_listeners`` ("HOST:PORT,...") start Kafka
    listeners beside it; ``http`` ("HOST:PORT") the HTTP API and web console; ``dashboard``
    False starts a new local Ray without its dashboard and job server.

    Raises:
        BrokerNotRunning: Ray could not be started or reached; InvalidConfig, DataDirInUse;
        AuthenticationFailed.
    """
    import ray_broker as rb
    from ray_broker.runtime import dashboard_url

    address, started_ray = _attach(address, namespace, dashboard)
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
        # A service's first delayed record must be on time: start the scheduler with it.
        broker.start_delay_scheduler()
        listeners = broker.kafka_listeners()
        if http:
            from ray_broker.console import start_console

            start_console(broker, http)
        from ray_broker.console import console_url

        consoles = console_url(namespace)
    job_api = dashboard_url()
    ServiceRecord(address, namespace, data_dir_used, started_ray, job_api).save()
    return {
        "already_running": already,
        "address": address,
        "namespace": namespace,
        "data_dir": data_dir_used,
        "started_ray": started_ray,
        "job_api": job_api,
        "kafka_listeners": listeners,
        "consoles": consoles,
    }


def stop(
    address: str | None,
    namespace: str = DEFAULT_NAMESPACE,
    username: str | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    """Stop the broker's actors (data is kept) and the local Ray ``start`` started, once no
    other broker started here runs on it.

    Raises:
        BrokerNotRunning: no broker runs in ``namespace``.
    """
    import ray_broker as rb
    from ray_broker.runtime import ensure_ray

    record = ServiceRecord.load(namespace)
    address = address or os.environ.get("RAY_ADDRESS") or (record.address if record else None)
    if address is None:
        raise BrokerNotRunning(
            f"no broker service runs in namespace {namespace!r} on this machine "
            "(start: ray-broker start)"
        )
    try:
        ensure_ray(address, namespace)
    except BrokerNotRunning:
        if record is not None and record.address == address:
            record.forget()  # its cluster is gone: nothing to stop
        raise
    require_broker(address, namespace)
    rb.connect(address, namespace=namespace, username=username, password=password).shutdown()
    stopped_ray = False
    others = others_at(address, namespace)
    if record is not None and record.address == address:
        record.forget()
        if record.started_ray and not others:
            import ray

            ray.shutdown()
            stop_local_ray(address)
            stopped_ray = True
    return {
        "stopped": namespace,
        "address": address,
        "stopped_ray": stopped_ray,
        "still_running_there": [r.namespace for r in others],
    }
