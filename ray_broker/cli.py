"""``ray-broker``: the demo, topic administration, and produce/consume from the shell.

Without ``--address`` (or ``RAY_ADDRESS``) every command runs an embedded single-node Ray for
its own duration, with data under ``--data-dir``; with an address it talks to the broker that
lives in that Ray cluster. These options (and ``--namespace``) are defined once, on the root
command, and may be written anywhere on the line: ``ray-broker topic list --namespace x``
works as ``ray-broker --namespace x topic list`` does.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ray_broker.cli_root import (
    Target,
    app,
    console,
    dlq_app,
    emit,
    fail,
    group_app,
    open_broker,
    options_of,
    parse_config_pairs,
    password_from_env_or_prompt,
    running_broker,
    share_app,
    target_of,
    topic_app,
)
from ray_broker.cli_security import acl_app, quota_app, user_app
from ray_broker.config import DEFAULT_NAMESPACE
from ray_broker.errors import BrokerError

# --- topics -------------------------------------------------------------------------------------


@topic_app.command("create")
def topic_create(
    ctx: typer.Context,
    name: str,
    partitions: Annotated[int, typer.Option("--partitions", "-p")] = 1,
    replication_factor: Annotated[int, typer.Option("--replication-factor", "-r")] = 1,
    config: Annotated[list[str], typer.Option("--config", "-c", help="key=value")] = [],  # noqa: B006
) -> None:
    """Create a topic."""
    with open_broker(ctx) as broker:
        described = broker.admin().create_topic(
            name, partitions, replication_factor, parse_config_pairs(config)
        )
    emit(
        ctx,
        {"created": name, "partitions": len(described.partitions)},
        lambda: console.print(
            f"Created topic [bold]{name}[/] with {len(described.partitions)} partitions"
        ),
    )


@topic_app.command("list")
def topic_list(
    ctx: typer.Context,
) -> None:
    """List topics."""
    with open_broker(ctx) as broker:
        names = broker.admin().list_topics()
    emit(ctx, names, lambda: [console.print(name) for name in names])


@topic_app.command("describe")
def topic_describe(
    ctx: typer.Context,
    name: str,
) -> None:
    """Show a topic's partitions, offsets and settings."""
    with open_broker(ctx) as broker:
        described = broker.admin().describe_topic(name)
    if target_of(ctx).json:
        emit(ctx, asdict(described))
        return
    table = Table(title=f"topic {name} ({described.topic_id})")
    for column in ("partition", "leader epoch", "log start", "high watermark", "log end", "node"):
        table.add_column(column, justify="right")
    for p in described.partitions:
        table.add_row(
            str(p.partition),
            str(p.leader_epoch),
            f"{p.log_start_offset:,}",
            f"{p.high_watermark:,}",
            f"{p.log_end_offset:,}",
            p.leader_node_id[:12],
        )
    console.print(table)
    settings = Table(title="config", show_header=False)
    for key, value in sorted(described.config.items()):
        settings.add_row(key, str(value))
    console.print(settings)


@topic_app.command("delete")
def topic_delete(
    ctx: typer.Context,
    name: str,
) -> None:
    """Delete a topic and its data."""
    with open_broker(ctx) as broker:
        broker.admin().delete_topic(name)
    emit(ctx, {"deleted": name}, lambda: console.print(f"Deleted topic [bold]{name}[/]"))


# --- consumer groups ------------------------------------------------------------------------------


@group_app.command("list")
def group_list(
    ctx: typer.Context,
) -> None:
    """List consumer groups with their state and member count."""
    with open_broker(ctx) as broker:
        groups = broker.admin().list_groups()
    if target_of(ctx).json:
        emit(ctx, [asdict(g) for g in groups])
        return
    table = Table(title="consumer groups")
    for column in ("group", "state", "members"):
        table.add_column(column)
    for g in groups:
        table.add_row(g.group_id, g.state, str(g.members))
    console.print(table)


@group_app.command("describe")
def group_describe(
    ctx: typer.Context,
    group_id: str,
) -> None:
    """Show a group's members, committed offsets and lag per partition."""
    with open_broker(ctx) as broker:
        described = broker.admin().describe_group(group_id)
    if target_of(ctx).json:
        emit(ctx, asdict(described))
        return
    title = (
        f"group {group_id}: {described.state}, generation {described.generation}, "
        f"strategy {described.strategy or '-'}"
    )
    table = Table(title=title)
    for column in ("topic", "partition", "committed", "log end", "lag", "member"):
        table.add_column(
            column,
            justify="right" if column in ("partition", "committed", "log end", "lag") else "left",
        )
    for p in described.partitions:
        table.add_row(
            p.topic,
            str(p.partition),
            "-" if p.committed_offset is None else f"{p.committed_offset:,}",
            f"{p.log_end_offset:,}",
            "-" if p.lag is None else f"{p.lag:,}",
            p.member_id or "-",
        )
    console.print(table)
    total = sum(p.lag or 0 for p in described.partitions)
    console.print(f"members: {len(described.members)}   total lag: {total:,}")


@group_app.command("reset-offsets")
def group_reset_offsets(
    ctx: typer.Context,
    group_id: str,
    topic: Annotated[str, typer.Option("--topic", "-t")],
    to_earliest: Annotated[bool, typer.Option("--to-earliest")] = False,
    to_latest: Annotated[bool, typer.Option("--to-latest")] = False,
    to_offset: Annotated[int | None, typer.Option("--to-offset")] = None,
    to_datetime: Annotated[
        str | None, typer.Option("--to-datetime", help="ISO 8601, e.g. 2026-11-30T06:00:00")
    ] = None,
) -> None:
    """Move an inactive group's committed offsets on a topic."""
    target, value = _reset_target(to_earliest, to_latest, to_offset, to_datetime)
    with open_broker(ctx) as broker:
        moved = broker.admin().reset_offsets(group_id, topic, target, value)
    _emit_moves(ctx, moved)


def _reset_target(
    to_earliest: bool,
    to_latest: bool,
    to_offset: int | None,
    to_datetime: str | None = None,
    *,
    with_datetime: bool = True,
) -> tuple[str, int | None]:
    """(to, value) for the Admin reset calls from the --to-* options (exactly one given)."""
    from datetime import datetime

    names = ["--to-earliest", "--to-latest", "--to-offset"]
    chosen = [to_earliest, to_latest, to_offset is not None]
    if with_datetime:
        names.append("--to-datetime")
        chosen.append(to_datetime is not None)
    if sum(chosen) != 1:
        raise typer.BadParameter(f"give exactly one of {', '.join(names)}")
    if to_earliest:
        return "earliest", None
    if to_latest:
        return "latest", None
    if to_offset is not None:
        return "offset", to_offset
    try:
        moment = datetime.fromisoformat(str(to_datetime))
    except ValueError as exc:
        raise typer.BadParameter(f"--to-datetime: {exc}") from None
    return "datetime", int(moment.timestamp() * 1000)


def _emit_moves(ctx: typer.Context, moved: dict[Any, int]) -> None:
    """Print where a reset moved each partition (JSON rows with --output json)."""
    rows = [
        {"topic": tp.topic, "partition": tp.partition, "offset": offset}
        for tp, offset in sorted(moved.items())
    ]
    emit(
        ctx,
        rows,
        lambda: [console.print(f"{r['topic']}-{r['partition']} -> {r['offset']:,}") for r in rows],
    )


@group_app.command("delete")
def group_delete(
    ctx: typer.Context,
    group_id: str,
) -> None:
    """Delete an inactive group and its committed offsets."""
    with open_broker(ctx) as broker:
        broker.admin().delete_group(group_id)
    emit(ctx, {"deleted": group_id}, lambda: console.print(f"Deleted group [bold]{group_id}[/]"))


# --- share groups, dead letters, delayed records ----------------------------------------------


@share_app.command("list")
def share_group_list(ctx: typer.Context) -> None:
    """List share groups."""
    with open_broker(ctx) as broker:
        groups = broker.admin().list_share_groups()
    emit(ctx, groups, lambda: [console.print(g, highlight=False) for g in groups])


@share_app.command("describe")
def share_group_describe(ctx: typer.Context, group_id: str) -> None:
    """Show a share group's members and, per partition, records in flight, available,
    dead-lettered, and the lag."""
    with open_broker(ctx) as broker:
        described = broker.admin().describe_share_group(group_id)
    if target_of(ctx).json:
        emit(ctx, asdict(described))
        return
    table = Table(title=f"share group {group_id}")
    columns = ("topic", "partition", "start", "high watermark", "in flight", "available")
    for column in (*columns, "dead letters", "lag"):
        table.add_column(column, justify="left" if column == "topic" else "right")
    for p in described.partitions:
        table.add_row(
            p.topic,
            str(p.partition),
            f"{p.start_offset:,}",
            f"{p.high_watermark:,}",
            f"{p.in_flight:,}",
            f"{p.available:,}",
            f"{p.dead_lettered + p.dead_lettering:,}",
            f"{p.lag:,}",
        )
    console.print(table)
    console.print(
        f"members: {len(described.members)}   dead-letter topics: "
        f"{', '.join(described.dead_letter_topics) or '-'}",
        highlight=False,
    )


@share_app.command("reset")
def share_group_reset(
    ctx: typer.Context,
    group_id: str,
    topic: Annotated[str, typer.Option("--topic", "-t")],
    to_earliest: Annotated[bool, typer.Option("--to-earliest")] = False,
    to_latest: Annotated[bool, typer.Option("--to-latest")] = False,
    to_offset: Annotated[int | None, typer.Option("--to-offset")] = None,
) -> None:
    """Start a share group over on a topic (no record may be locked by a member)."""
    target, value = _reset_target(to_earliest, to_latest, to_offset, with_datetime=False)
    with open_broker(ctx) as broker:
        moved = broker.admin().reset_share_group(group_id, topic, target, value)
    _emit_moves(ctx, moved)


@share_app.command("delete")
def share_group_delete(ctx: typer.Context, group_id: str) -> None:
    """Forget a share group's state (stop its members first)."""
    with open_broker(ctx) as broker:
        broker.admin().delete_share_group(group_id)
    emit(ctx, {"deleted": group_id}, lambda: console.print(f"Deleted share group {group_id}"))


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    topic: str,
    max_records: Annotated[int, typer.Option("--max-records", "-n")] = 100,
) -> None:
    """Show the records of a dead-letter topic with where they came from and why."""
    with open_broker(ctx) as broker:
        letters = broker.admin().list_dead_letters(topic, max_records)
    if target_of(ctx).json:
        rows = [{**asdict(d), "key": _text(d.key), "value": _text(d.value)} for d in letters]
        emit(ctx, rows)
        return
    table = Table(title=f"dead letters in {topic}")
    for column in ("offset", "from", "deliveries", "reason", "error", "value"):
        table.add_column(column)
    for d in letters:
        table.add_row(
            str(d.offset),
            f"{d.original_topic}-{d.original_partition}@{d.original_offset}",
            str(d.delivery_count),
            d.reason,
            d.error[:60],
            (_text(d.value) or "")[:60],
        )
    console.print(table)


@dlq_app.command("redrive")
def dlq_redrive(
    ctx: typer.Context,
    topic: str,
    max_records: Annotated[int | None, typer.Option("--max-records", "-n")] = None,
) -> None:
    """Send a dead-letter topic's records back to their original topics (exactly once)."""
    with open_broker(ctx) as broker:
        moved = broker.admin().redrive_dead_letters(topic, max_records)
    emit(ctx, {"redriven": moved}, lambda: console.print(f"Re-drove {moved:,} record(s)"))


@app.command()
def delayed(ctx: typer.Context) -> None:
    """Show the delay scheduler: pending delayed records, next due time, lateness."""
    with open_broker(ctx) as broker:
        found = broker.admin().describe_delayed()
    emit(ctx, found, lambda: console.print_json(data=found))


@app.command()
def trace(
    ctx: typer.Context,
    topic: Annotated[str | None, typer.Argument(help="The record's topic.")] = None,
    partition: Annotated[int | None, typer.Argument(help="Its partition.")] = None,
    offset: Annotated[int | None, typer.Argument(help="Its offset.")] = None,
    trace_id: Annotated[
        str | None, typer.Option("--id", help="Find records by their trace.id header instead.")
    ] = None,
) -> None:
    """Print a traced record's trail: produced, appended, committed, delivered, answered."""
    by_place = None not in (topic, partition, offset)
    if by_place == (trace_id is not None):
        raise typer.BadParameter("give TOPIC PARTITION OFFSET or --id, not both or neither")
    with open_broker(ctx) as broker:
        admin = broker.admin()
        if trace_id is not None:
            events = admin.trace_by_id(trace_id)
            what = f"trace id {trace_id!r}"
        else:
            assert topic is not None and partition is not None and offset is not None
            events = admin.trace(topic, partition, offset)
            what = f"{topic}/{partition}/{offset}"
    rows = [asdict(e) for e in events]
    if not events:
        emit(
            ctx,
            {"traced": False, "record": what},
            lambda: console.print(
                f"Not traced: no trail for {what}. Records are traced when their topic has "
                "message.trace=true or they were sent with trace=True (and the record exists)."
            ),
        )
        return
    emit(ctx, rows, lambda: console.print(_trail_table(events)))


def _trail_table(events: list[Any]) -> Table:
    table = Table("time", "record", "event", "details")
    for event in events:
        when = datetime.fromtimestamp(event.time_ms / 1000).isoformat(timespec="milliseconds")
        details = ", ".join(f"{k}={v}" for k, v in event.details.items() if v is not None)
        place = f"{event.topic}/{event.partition}/{event.offset}"
        table.add_row(when, place, event.event, details)
    return table


# --- produce / consume --------------------------------------------------------------------------


@app.command()
def produce(
    ctx: typer.Context,
    topic: str,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Default: stdin.")] = None,
    key_separator: Annotated[
        str | None, typer.Option(help="Split each line into key and value at this string.")
    ] = None,
    partition: Annotated[int | None, typer.Option("--partition", "-p")] = None,
) -> None:
    """Send each line of a file (or stdin) as one record."""
    source = file.open("rb") if file else sys.stdin.buffer
    total = file.stat().st_size if file else None
    sent = 0
    with open_broker(ctx) as broker, _progress() as progress:
        task = progress.add_task("producing", total=total)
        producer = broker.producer()
        for line in source:
            value = line.rstrip(b"\r\n")
            key = None
            if key_separator is not None:
                key, _, value = value.partition(key_separator.encode())
            producer.send(topic, value=value, key=key, partition=partition)
            sent += 1
            progress.advance(task, len(line))
        producer.flush()
    emit(
        ctx,
        {"produced": sent, "topic": topic},
        lambda: console.print(f"Produced {sent:,} records to [bold]{topic}[/]"),
    )


@app.command()
def consume(
    ctx: typer.Context,
    topic: str,
    from_beginning: Annotated[bool, typer.Option("--from-beginning")] = False,
    offset: Annotated[
        int | None, typer.Option(help="Start at this offset (with --partition).")
    ] = None,
    partition: Annotated[int | None, typer.Option("--partition", "-p")] = None,
    max_messages: Annotated[int | None, typer.Option("--max-messages", "-n")] = None,
    timeout_ms: Annotated[
        int, typer.Option(help="Stop after this long without a record; -1 waits forever.")
    ] = 5_000,
    print_key: Annotated[bool, typer.Option("--print-key")] = False,
    group: Annotated[
        str | None, typer.Option("--group", "-g", help="Consume as a member of this group.")
    ] = None,
    filter_text: Annotated[
        str | None,
        typer.Option(
            "--filter",
            "-f",
            help="Only records matching this filter, evaluated by the broker, e.g. "
            "\"headers.type = 'order' AND key LIKE 'vip%'\".",
        ),
    ] = None,
) -> None:
    """Print records of a topic, one per line."""
    from ray_broker.structs import TopicPartition

    reset = "earliest" if from_beginning else "latest"
    count = 0
    out = sys.stdout.buffer
    with open_broker(ctx) as broker:
        consumer = broker.consumer(
            auto_offset_reset=reset,
            consumer_timeout_ms=timeout_ms,
            group_id=group,
            filter=filter_text,
        )
        if partition is not None:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            if offset is not None:
                consumer.seek(tp, offset)
        elif offset is not None:
            raise typer.BadParameter("--offset needs --partition")
        else:
            consumer.subscribe([topic])
        as_json = target_of(ctx).json
        for record in consumer:
            if as_json:
                out.write(json.dumps(_record_json(record)).encode() + b"\n")
            else:
                if print_key:
                    out.write((record.key or b"") + b"\t")
                out.write((record.value or b"") + b"\n")
            count += 1
            if max_messages is not None and count >= max_messages:
                break
        out.flush()
    Console(stderr=True).print(f"Consumed {count:,} records", style="dim", highlight=False)


@app.command()
def tail(
    ctx: typer.Context,
    topic: str,
    group: Annotated[
        str | None,
        typer.Option("--group", "-g", help="Follow as a member of this group (commits)."),
    ] = None,
    filter_text: Annotated[
        str | None,
        typer.Option("--filter", "-f", help="Only records matching this broker-side filter."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Start this long ago (10m, 2h, 1d) instead of at the end."),
    ] = None,
    max_messages: Annotated[int | None, typer.Option("--max-messages", "-n")] = None,
    timeout_ms: Annotated[
        int, typer.Option(help="Stop after this long without a record; -1 follows forever.")
    ] = -1,
) -> None:
    """Follow a log topic (written by ray_broker.logging) live: one coloured line per record,
    or --output json; --since reads history first (by time, offsets_for_times)."""
    from ray_broker import log_view
    from ray_broker.structs import TopicPartition

    as_json = target_of(ctx).json
    if since is not None and group is not None:
        raise typer.BadParameter("--since reads by time; a --group starts at its committed offsets")
    start_ms = None
    try:
        if since is not None:
            start_ms = int(time.time() * 1000) - log_view.since_ms(since)
    except BrokerError as exc:
        raise fail(exc) from None
    out = Console(highlight=False, soft_wrap=True)
    shown = 0
    idle_since = time.monotonic()
    with open_broker(ctx) as broker:
        try:
            consumer = broker.consumer(
                group_id=group,
                filter=filter_text,
                auto_offset_reset="latest",
                enable_auto_commit=group is not None,
            )
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            if group is not None:
                consumer.subscribe([topic])
            else:
                consumer.assign(partitions)
                consumer.seek_to_end(*partitions)
            if start_ms is not None:
                found = consumer.offsets_for_times({tp: start_ms for tp in partitions})
                for tp, hit in found.items():
                    if hit is not None:
                        consumer.seek(tp, hit.offset)
            Console(stderr=True).print(f"following {topic} (Ctrl-C stops)", style="dim")
            while max_messages is None or shown < max_messages:
                batch = consumer.poll(timeout_ms=200)
                records = sorted(
                    (r for part in batch.values() for r in part), key=lambda r: r.timestamp
                )
                for record in records[: None if max_messages is None else max_messages - shown]:
                    if as_json:
                        document = log_view.parsed(record.value) or _record_json(record)
                        document = {
                            **document,
                            "partition": record.partition,
                            "offset": record.offset,
                        }
                        print(json.dumps(document, ensure_ascii=False), flush=False)
                    else:
                        out.print(log_view.line(record.value))
                    shown += 1
                sys.stdout.flush()
                if records:
                    idle_since = time.monotonic()
                elif timeout_ms >= 0 and (time.monotonic() - idle_since) * 1000 >= timeout_ms:
                    break
        except KeyboardInterrupt:
            pass
        except BrokerError as exc:
            raise fail(exc) from None


def _text(value: bytes | None) -> str | None:
    """Bytes as UTF-8 where they decode, else as hex."""
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.hex()


def _record_json(record: Any) -> dict[str, Any]:
    """A record as JSON: bytes as UTF-8 where they decode, else as hex."""
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": _text(record.key),
        "value": _text(record.value),
    }


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


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
                data_dir or Path(tmp), records, partitions, value_bytes, _progress, console
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


# --- security -------------------------------------------------------------------------------------

app.add_typer(user_app, name="user")
app.add_typer(acl_app, name="acl")
app.add_typer(quota_app, name="quota")


if __name__ == "__main__":
    app()
