"""The ``ray-broker`` root command and what every subcommand shares: the root options (written
anywhere on the line), which broker a command acts on (``--address``/``--namespace``, or the one
``ray-broker start`` started here), one-line errors, ``--output json``, and the connection.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from ray_broker.config import DEFAULT_NAMESPACE
from ray_broker.errors import BrokerError

GLOBAL_OPTIONS = ("--address", "--data-dir", "--namespace", "--output", "--user")


def hoist_global_options(args: list[str]) -> list[str]:
    """Move the root command's options, wherever they were written, to the front."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            if "=" in arg:
                front.append(arg)
            else:
                front.extend(args[index : index + 2])
                index += 1
        else:
            rest.append(arg)
        index += 1
    return front + rest


class _HoistingGroup(typer.core.TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))


app = typer.Typer(
    help="A Kafka-class message broker on Ray.", no_args_is_help=True, cls=_HoistingGroup
)
topic_app = typer.Typer(help="Create, list, describe and delete topics.", no_args_is_help=True)
app.add_typer(topic_app, name="topic")
group_app = typer.Typer(
    help="List, describe, reset and delete consumer groups.", no_args_is_help=True
)
app.add_typer(group_app, name="group")
share_app = typer.Typer(
    help="List, describe, reset and delete share groups (queues).", no_args_is_help=True
)
app.add_typer(share_app, name="share-group")
dlq_app = typer.Typer(help="Read and re-drive dead-letter topics.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
console = Console()

AddressOption = Annotated[
    str | None, typer.Option("--address", envvar="RAY_ADDRESS", help="Ray cluster to attach to.")
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Broker data directory (default: $RAY_BROKER_DATA_DIR or ~/.ray_broker, then "
        "/<namespace>).",
    ),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option("--namespace", help=f"Broker's Ray namespace (default {DEFAULT_NAMESPACE})."),
]
OutputOption = Annotated[
    str, typer.Option("--output", "-o", help="table (for people) or json (for scripts).")
]
UserOption = Annotated[
    str | None,
    typer.Option(
        "--user",
        envvar="RAY_BROKER_USER",
        help="User of a secured broker; the password comes from $RAY_BROKER_PASSWORD or a prompt.",
    ),
]


@dataclass(frozen=True)
class Target:
    """Which broker the command talks to (the root command's options)."""

    address: str | None = None
    data_dir: Path | None = None
    namespace: str = DEFAULT_NAMESPACE
    output: str = "table"
    user: str | None = None

    @property
    def json(self) -> bool:
        return self.output == "json"

    def credentials(self) -> dict[str, str]:
        """``username``/``password`` for ``connect`` (none without ``--user``)."""
        if self.user is None:
            return {}
        return {"username": self.user, "password": password_from_env_or_prompt(self.user)}


def password_from_env_or_prompt(user: str) -> str:
    """Never a command-line argument: those show up in ``ps`` and shell history."""
    password = os.environ.get("RAY_BROKER_PASSWORD")
    if password is None:
        password = typer.prompt(f"password for {user}", hide_input=True)
    return password


@dataclass(frozen=True)
class RootOptions:
    """The root command's options as written (None: not given)."""

    address: str | None = None
    data_dir: Path | None = None
    namespace: str | None = None
    output: str = "table"
    user: str | None = None


@app.callback()
def _root(
    ctx: typer.Context,
    address: AddressOption = None,
    data_dir: DataDirOption = None,
    namespace: NamespaceOption = None,
    output: OutputOption = "table",
    user: UserOption = None,
) -> None:
    """A Kafka-class message broker on Ray.

    After ``ray-broker start`` the other commands find the running broker without flags."""
    if output not in ("table", "json"):
        raise typer.BadParameter(f"--output is table or json, got {output!r}")
    ctx.obj = RootOptions(address, data_dir, namespace, output, user)


def options_of(ctx: typer.Context) -> RootOptions:
    return ctx.find_root().obj or RootOptions()


def target_of(ctx: typer.Context) -> Target:
    """The broker this command acts on: ``--address``/``--namespace`` if given, else the one
    ``ray-broker start`` started on this machine; with several started and no ``--namespace``
    it asks which (or, with no terminal to ask on, says how to choose)."""
    root = ctx.find_root()
    if not hasattr(root, "resolved_target"):
        root.resolved_target = _resolve_target(options_of(ctx))  # type: ignore[attr-defined]
    return root.resolved_target  # type: ignore[attr-defined]


def _resolve_target(options: RootOptions) -> Target:
    from ray_broker.service_records import ServiceRecord

    chosen: ServiceRecord | None = None
    if options.address is None:
        records = ServiceRecord.all()
        if options.namespace is not None:
            chosen = next((r for r in records if r.namespace == options.namespace), None)
        elif len(records) == 1:
            [chosen] = records
        elif records:
            chosen = _ask_which(records, interactive=options.output == "table")
    namespace = options.namespace or (chosen.namespace if chosen else DEFAULT_NAMESPACE)
    address = options.address or (chosen.address if chosen else None)
    return Target(address, options.data_dir, namespace, options.output, options.user)


def _ask_which(records: list[Any], *, interactive: bool) -> Any:
    """Several brokers were started here and the command named none."""
    from ray_broker.errors import InvalidConfig

    listing = "; ".join(r.describe() for r in records)
    if not (interactive and sys.stdin.isatty()):
        raise fail(
            InvalidConfig(
                f"{len(records)} brokers run on this machine ({listing}): name one with --namespace"
            )
        )
    for number, record in enumerate(records, 1):
        Console(stderr=True).print(f"  {number}. {record.describe()}", highlight=False)
    choice = typer.prompt(
        "Which broker?", type=click.IntRange(1, len(records)), err=True, default=1
    )
    return records[choice - 1]


def fail(exc: BrokerError) -> typer.Exit:
    """One line on stderr, exit code 1: no traceback for an error the user can act on."""
    Console(stderr=True).print(f"[bold red]{type(exc).__name__}:[/] {exc}", highlight=False)
    return typer.Exit(1)


def emit(ctx: typer.Context, data: Any, render: Any = None) -> None:
    """Print ``data`` as JSON with ``--output json``, else call ``render()`` (or print it)."""
    if target_of(ctx).json or render is None:
        print(json.dumps(data, default=str, indent=None))
    else:
        render()


@contextmanager
def open_broker(ctx: typer.Context) -> Any:
    import ray_broker as rb

    target = target_of(ctx)
    try:
        with rb.connect(
            target.address,
            data_dir=target.data_dir,
            namespace=target.namespace,
            **target.credentials(),
        ) as broker:
            yield broker
    except BrokerError as exc:
        raise fail(exc) from None


@contextmanager
def running_broker(ctx: typer.Context) -> Any:
    """``open_broker`` for commands that need the broker service `start` started (they must not
    start an embedded one that would vanish with the command)."""
    from ray_broker import service
    from ray_broker.errors import BrokerNotRunning
    from ray_broker.runtime import ensure_ray

    target = target_of(ctx)
    if target.address is None:
        raise fail(BrokerNotRunning("no broker service runs here (start: ray-broker start)"))
    try:
        ensure_ray(target.address, target.namespace)
        service.require_broker(target.address, target.namespace)
    except BrokerError as exc:
        raise fail(exc) from None
    with open_broker(ctx) as broker:
        yield broker


def parse_config_pairs(pairs: list[str]) -> dict[str, str]:
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--config takes key=value, got {pair!r}")
        config[key.strip()] = value.strip()
    return config


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
