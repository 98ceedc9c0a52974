"""``ray-broker produce|consume|tail|trace``: records from and to the shell."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ray_broker.cli.root import (
    app,
    console,
    emit,
    fail,
    open_broker,
    progress_bar,
    target_of,
)
from ray_broker.errors import BrokerError
from ray_broker.views import bytes_text, record_view

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
    with open_broker(ctx) as broker, progress_bar() as progress:
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
                out.write(json.dumps(record_view(record, bytes_text)).encode() + b"\n")
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
                        document = log_view.parsed(record.value) or record_view(record, bytes_text)
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


# --- tracing ---------------------------------------------------------------------------------


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
