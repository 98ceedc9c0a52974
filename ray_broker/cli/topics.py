"""``ray-broker topic create|list|describe|delete``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from ray_broker.cli.root import (
    console,
    emit,
    open_broker,
    parse_config_pairs,
    target_of,
    topic_app,
)
from ray_broker.views import partition_view

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
        view = {
            **asdict(described),
            "partitions": [partition_view(p) for p in described.partitions],
        }
        emit(ctx, view)
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
