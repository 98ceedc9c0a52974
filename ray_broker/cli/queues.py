"""``ray-broker share-group …``, ``dlq …`` and ``delayed``: the queue half of the broker."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from ray_broker.cli.groups import emit_moves, reset_target
from ray_broker.cli.root import (
    app,
    console,
    dlq_app,
    emit,
    open_broker,
    share_app,
    target_of,
)
from ray_broker.views import bytes_text, dead_letter_view

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
    target, value = reset_target(to_earliest, to_latest, to_offset, with_datetime=False)
    with open_broker(ctx) as broker:
        moved = broker.admin().reset_share_group(group_id, topic, target, value)
    emit_moves(ctx, moved)


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
        rows = [dead_letter_view(d, bytes_text) for d in letters]
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
            (bytes_text(d.value) or "")[:60],
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
