"""``ray-broker group list|describe|reset-offsets|delete``: consumer groups and their lag."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from ray_broker.cli.root import (
    console,
    emit,
    group_app,
    open_broker,
    target_of,
)

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
    target, value = reset_target(to_earliest, to_latest, to_offset, to_datetime)
    with open_broker(ctx) as broker:
        moved = broker.admin().reset_offsets(group_id, topic, target, value)
    emit_moves(ctx, moved)


def reset_target(
    to_earliest: bool,
    to_latest: bool,
    to_offset: int | None,
    to_datetime: str | None = None,
    *,
    with_datetime: bool = True,
) -> tuple[str, int | None]:
    """(to, value) for the Admin reset calls from the --to-* options (exactly one given)."""

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


def emit_moves(ctx: typer.Context, moved: dict[Any, int]) -> None:
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
