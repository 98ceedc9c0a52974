"""``ray-broker user|acl|quota …``: a secured broker's users, ACLs and quotas from the shell.

Passwords are read from ``$RAY_BROKER_PASSWORD`` or a hidden prompt, never from arguments.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from ray_broker.cli.root import console, emit, open_broker
from ray_broker.structs import Acl, QuotaEntity

user_app = typer.Typer(help="Create, list and delete users (SCRAM).", no_args_is_help=True)
acl_app = typer.Typer(help="Add, list and remove ACLs (Kafka's rules).", no_args_is_help=True)
quota_app = typer.Typer(help="Set and list quotas (bytes/s, requests/s).", no_args_is_help=True)


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name; 'tenant/name' for a tenant's user.")],
    superuser: Annotated[bool, typer.Option("--superuser", help="May do anything.")] = False,
) -> None:
    """Create a user, or set a new password for one (its sessions end). The new password
    comes from $RAY_BROKER_NEW_PASSWORD or a prompt ($RAY_BROKER_PASSWORD is the caller's)."""
    password = os.environ.get("RAY_BROKER_NEW_PASSWORD")
    if password is None:
        password = typer.prompt(f"new password for {name}", hide_input=True)
    with open_broker(ctx) as broker:
        broker.admin().create_user(name, password, superuser=superuser)
    emit(ctx, {"user": name}, lambda: console.print(f"User [bold]{name}[/] saved"))


@user_app.command("delete")
def user_delete(ctx: typer.Context, name: str) -> None:
    """Delete a user; its sessions end at once."""
    with open_broker(ctx) as broker:
        broker.admin().delete_user(name)
    emit(ctx, {"deleted": name}, lambda: console.print(f"Deleted user [bold]{name}[/]"))


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """List users (never their credentials)."""
    with open_broker(ctx) as broker:
        users = broker.admin().list_users()

    def render() -> None:
        table = Table(title="users")
        for column in ("name", "tenant", "superuser", "mechanisms"):
            table.add_column(column)
        for user in users:
            table.add_row(
                user.name,
                user.tenant or "",
                "yes" if user.superuser else "",
                ", ".join(user.mechanisms),
            )
        console.print(table)

    emit(ctx, [asdict(u) for u in users], render)


PrincipalOption = Annotated[str | None, typer.Option("--principal", help="User:<name> or User:*")]
TypeOption = Annotated[
    str | None,
    typer.Option("--resource-type", help="topic, group, share_group, transactional_id or cluster."),
]
NameOption = Annotated[str | None, typer.Option("--name", help="Resource name ('*': every).")]


@acl_app.command("add")
def acl_add(
    ctx: typer.Context,
    principal: Annotated[str, typer.Option("--principal", help="User:<name> or User:*")],
    resource_type: Annotated[str, typer.Option("--resource-type")],
    name: Annotated[str, typer.Option("--name")],
    operation: Annotated[
        list[str], typer.Option("--operation", help="read, write, create, delete, alter, …")
    ],
    deny: Annotated[bool, typer.Option("--deny", help="A deny rule (wins over allows).")] = False,
    prefixed: Annotated[bool, typer.Option("--prefixed", help="Match names by prefix.")] = False,
) -> None:
    """Add ACLs (one per --operation)."""
    acls = [
        Acl(
            principal,
            resource_type,
            name,
            op,
            "deny" if deny else "allow",
            "prefixed" if prefixed else "literal",
        )
        for op in operation
    ]
    with open_broker(ctx) as broker:
        created = broker.admin().create_acls(acls)
    emit(
        ctx,
        [asdict(a) for a in created],
        lambda: console.print(f"Added {len(created)} ACL(s) for [bold]{principal}[/]"),
    )


def _acl_table(acls: list[Acl], title: str) -> Table:
    table = Table(title=title)
    for column in ("principal", "permission", "operation", "resource type", "pattern", "name"):
        table.add_column(column)
    for a in acls:
        table.add_row(a.principal, a.permission, a.operation, a.resource_type, a.pattern, a.name)
    return table


@acl_app.command("list")
def acl_list(
    ctx: typer.Context,
    principal: PrincipalOption = None,
    resource_type: TypeOption = None,
    name: NameOption = None,
) -> None:
    """List ACLs matching the filters."""
    with open_broker(ctx) as broker:
        acls = broker.admin().describe_acls(principal, resource_type, name)
    emit(ctx, [asdict(a) for a in acls], lambda: console.print(_acl_table(acls, "ACLs")))


@acl_app.command("remove")
def acl_remove(
    ctx: typer.Context,
    principal: PrincipalOption = None,
    resource_type: TypeOption = None,
    name: NameOption = None,
) -> None:
    """Remove every ACL matching the filters (at least one filter)."""
    if principal is None and resource_type is None and name is None:
        raise typer.BadParameter("name at least one of --principal, --resource-type, --name")
    with open_broker(ctx) as broker:
        gone = broker.admin().delete_acls(principal, resource_type, name)
    emit(ctx, [asdict(a) for a in gone], lambda: console.print(_acl_table(gone, "removed")))


@quota_app.command("set")
def quota_set(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--for-user")] = None,
    client_id: Annotated[str | None, typer.Option("--for-client-id")] = None,
    tenant: Annotated[str | None, typer.Option("--for-tenant")] = None,
    producer_byte_rate: Annotated[float | None, typer.Option("--producer-byte-rate")] = None,
    consumer_byte_rate: Annotated[float | None, typer.Option("--consumer-byte-rate")] = None,
    request_rate: Annotated[float | None, typer.Option("--request-rate")] = None,
    controller_mutation_rate: Annotated[
        float | None, typer.Option("--controller-mutation-rate", help="partitions/s")
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the named quotas.")] = False,
) -> None:
    """Set (or --remove) quotas of a user, a client id, both, or a tenant."""
    given = {
        "producer_byte_rate": producer_byte_rate,
        "consumer_byte_rate": consumer_byte_rate,
        "request_rate": request_rate,
        "controller_mutation_rate": controller_mutation_rate,
    }
    values = {k: (None if remove else v) for k, v in given.items() if v is not None}
    with open_broker(ctx) as broker:
        now = broker.admin().alter_quotas(QuotaEntity(user, client_id, tenant), values)
    emit(ctx, now, lambda: console.print(f"Quotas now: {now or 'none'}"))


@quota_app.command("list")
def quota_list(ctx: typer.Context) -> None:
    """Every entity's quotas."""
    with open_broker(ctx) as broker:
        quotas = broker.admin().describe_quotas()

    def render() -> None:
        table = Table(title="quotas")
        for column in ("entity", "quota", "rate"):
            table.add_column(column)
        for entity, values in quotas.items():
            for kind, rate in sorted(values.items()):
                table.add_row(entity, kind, f"{rate:,.0f}")
        console.print(table)

    emit(ctx, quotas, render)
