"""``ray-broker demo|start|stop|status|console|validate-config``: running the broker."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ray_broker.cli.root import (
    Target,
    app,
    console,
    emit,
    fail,
    options_of,
    password_from_env_or_prompt,
    progress_bar,
    running_broker,
    target_of,
)
from ray_broker.config import DEFAULT_NAMESPACE
from ray_broker.errors import BrokerError

# --- demo ---------------------------------------------------------------------------------------


@app.command()
def demo(
    ctx: typer.Context,
    records: Annotated[
        int, typer.Option(help="How many records to produce and consume.")
    ] = 1_000_000,
    partitions: Annotated[int, typer.Option()] = 4,
    value_bytes: Annotated[int, typer.Option()] = 100,
) -> None:
    """Start an embedded broker, produce records, consume them back, and report what happened.
    With --data-dir the data stays there; by default a fresh temporary directory is removed."""
    from ray_broker.demo import run_demo

    data_dir = ctx.find_root().obj.data_dir

    with tempfile.TemporaryDirectory(prefix="ray-broker-demo-") as tmp:
        try:
            report = run_demo(
                data_dir or Path(tmp), records, partitions, value_bytes, progress_bar, console
            )
        except BrokerError as exc:
            console.print(f"[bold red]{type(exc).__name__}:[/] {exc}")
            raise typer.Exit(1) from None
    table = Table(title="ray-broker demo")
    table.add_column("step")
    table.add_column("records", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("records/s", justify="right")
    for step, count, seconds in report.steps:
        rate = "" if count is None else f"{count / seconds:,.0f}"
        table.add_row(step, "" if count is None else f"{count:,}", f"{seconds:.2f}", rate)
    console.print(table)
    for line in report.notes:
        console.print(f"• {line}")
    if not report.ok:
        raise typer.Exit(1)


# --- the service ----------------------------------------------------------------------------------


@app.command()
def start(
    ctx: typer.Context,
    superuser: Annotated[
        str | None,
        typer.Option(
            "--superuser",
            help="Secure the broker (SCRAM users, ACLs) with this first superuser; the "
            "password comes from $RAY_BROKER_PASSWORD or a prompt.",
        ),
    ] = None,
    kafka_listener: Annotated[
        str | None,
        typer.Option(
            "--kafka-listener",
            help="Also serve the Kafka wire protocol on HOST:PORT (e.g. 127.0.0.1:9092; "
            "comma-separated for several): Kafka clients and tools connect there.",
        ),
    ] = None,
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            help="Also serve the HTTP API and web console on HOST:PORT (e.g. 127.0.0.1:8080).",
        ),
    ] = None,
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard/--no-dashboard",
            help="Start the local Ray with its dashboard and job server (`ray job submit`), on "
            "127.0.0.1. --no-dashboard saves its idle CPU; Ray jobs then run only as scripts "
            "on this machine.",
        ),
    ] = True,
) -> None:
    """Start the broker service: attach to Ray (--address, RAY_ADDRESS) or start a local Ray on
    127.0.0.1 with token authentication and Ray's job server, then the broker's actors.
    Running it again changes nothing, but for listeners it adds."""
    from ray_broker import service

    options = options_of(ctx)
    # `start` names a broker to start, never one to choose among those running.
    target = Target(
        options.address,
        options.data_dir,
        options.namespace or DEFAULT_NAMESPACE,
        options.output,
        options.user,
    )
    credentials = target.credentials()
    if superuser is not None:
        credentials = {
            "username": superuser,
            "password": password_from_env_or_prompt(superuser),
        }
    try:
        started = service.start(
            target.address,
            target.namespace,
            target.data_dir,
            secure=superuser is not None,
            kafka_listeners=kafka_listener,
            http=http,
            dashboard=dashboard,
            **credentials,
        )
    except BrokerError as exc:
        raise fail(exc) from None
    verb = "already running" if started["already_running"] else "started"

    def show() -> None:
        console.print(
            f"ray-broker {verb}: namespace [bold]{started['namespace']}[/] at "
            f"{started['address']}, data in {started['data_dir']}"
        )
        for listener in started["kafka_listeners"]:
            console.print(f"Kafka listener on {listener['host']}:{listener['port']}")
        for url in started["consoles"]:
            console.print(f"web console at {url} (API docs at {url.removesuffix('/console')}/docs)")
        _print_job_api(started["job_api"])

    emit(ctx, started, show)


@app.command("console")
def web_console(
    ctx: typer.Context,
    http: Annotated[
        str, typer.Option("--http", help="HOST:PORT to serve the HTTP API and console on.")
    ] = "127.0.0.1:8080",
) -> None:
    """Serve the HTTP API and web console beside the running broker (started with `ray-broker
    start`) and print its address; it keeps running until `ray-broker stop`."""
    from ray_broker.console import start_console

    with running_broker(ctx) as broker:
        try:
            served = start_console(broker, http)
        except BrokerError as exc:
            raise fail(exc) from None
    emit(ctx, served, lambda: console.print(f"web console at {served['url']}"))


@app.command()
def stop(ctx: typer.Context) -> None:
    """Stop the broker's actors (their data stays), and the local Ray `start` started."""
    from ray_broker import service

    target = target_of(ctx)
    try:
        stopped = service.stop(target.address, target.namespace, **target.credentials())
    except BrokerError as exc:
        raise fail(exc) from None

    def show() -> None:
        console.print(
            f"ray-broker stopped: namespace [bold]{target.namespace}[/] at {stopped['address']}"
            + (", and the Ray it ran on" if stopped["stopped_ray"] else "")
        )
        if stopped["still_running_there"]:
            console.print(
                "Ray keeps running for the brokers in namespaces "
                + ", ".join(stopped["still_running_there"])
            )

    emit(ctx, stopped, show)


def _print_job_api(url: str | None) -> None:
    if url is None:
        console.print("no Ray job API (Ray runs without its dashboard)")
        return
    console.print(
        f"Ray job API at {url}: RAY_AUTH_MODE=token ray job submit --address {url} "
        "--working-dir . -- python job.py"
    )


@app.command()
def status(ctx: typer.Context) -> None:
    """Nodes, partitions (leader, ISR, offsets), unhealthy partitions, disk and group lag."""
    from ray_broker.status import collect

    with running_broker(ctx) as broker:
        report = collect(broker)
    emit(ctx, report, lambda: _render_status(report))


def _render_status(report: dict[str, Any]) -> None:
    console.print(
        f"namespace [bold]{report['namespace']}[/] at {report['address']}, "
        f"data in {report['data_dir']}"
    )
    _print_job_api(report["job_api"])
    nodes = Table(title="nodes")
    for column in ("node", "address", "CPUs", "leaders", "disk"):
        nodes.add_column(column, justify="left" if column in ("node", "address") else "right")
    for n in report["nodes"]:
        disk = "?" if n["disk_bytes"] is None else f"{n['disk_bytes'] / 2**20:,.1f} MiB"
        nodes.add_row(n["node_id"][:12], n["address"], f"{n['cpus']:g}", str(n["leaders"]), disk)
    console.print(nodes)
    partitions = Table(title="partitions")
    for column in ("topic", "partition", "leader", "ISR", "high watermark", "log end", "health"):
        partitions.add_column(column, justify="right" if "offset" in column else "left")
    for topic in report["topics"]:
        for p in topic["partitions"]:
            health = (
                "offline" if p["offline"] else "under-replicated" if p["under_replicated"] else "ok"
            )
            partitions.add_row(
                topic["name"],
                str(p["partition"]),
                f"{p['leader']} ({p['leader_node_id'][:8]})",
                ",".join(p["isr"]),
                f"{p['high_watermark']:,}",
                f"{p['log_end_offset']:,}",
                health,
            )
    console.print(partitions)
    console.print(
        f"under-replicated partitions: {report['under_replicated_partitions']}   "
        f"offline partitions: {report['offline_partitions']}"
    )
    if report["groups"]:
        groups = Table(title="consumer groups")
        for column in ("group", "state", "members", "lag"):
            groups.add_column(column)
        for g in report["groups"]:
            groups.add_row(g["group_id"], g["state"], str(g["members"]), f"{g['lag']:,}")
        console.print(groups)


@app.command("validate-config")
def validate_config(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A Ray cluster-launcher YAML, e.g. cluster.yaml.")],
) -> None:
    """Check a cluster YAML against the installed Ray's schema, as `ray up` will."""
    from ray_broker.cluster_config import validate_cluster_config

    try:
        prepared = validate_cluster_config(file)
    except BrokerError as exc:
        raise fail(exc) from None
    summary = {
        "valid": str(file),
        "cluster_name": prepared.get("cluster_name"),
        "provider": prepared.get("provider", {}).get("type"),
        "node_types": sorted(prepared.get("available_node_types", {})),
    }
    emit(ctx, summary, lambda: console.print(f"{file}: valid for ray up ({summary['provider']})"))
