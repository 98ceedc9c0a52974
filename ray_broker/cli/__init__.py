"""``ray-broker``: the demo, topic administration, and produce/consume from the shell.

Without ``--address`` (or ``RAY_ADDRESS``) every command runs an embedded single-node Ray for
its own duration, with data under ``--data-dir``; with an address it talks to the broker that
lives in that Ray cluster. These options (and ``--namespace``) are defined once, on the root
command, and may be written anywhere on the line: ``ray-broker topic list --namespace x``
works as ``ray-broker --namespace x topic list`` does.
"""

from __future__ import annotations

# Each module registers its commands on the root app when imported.
from ray_broker.cli import groups, operations, queues, records, topics  # noqa: F401
from ray_broker.cli.root import app, hoist_global_options
from ray_broker.cli.security import acl_app, quota_app, user_app

app.add_typer(user_app, name="user")
app.add_typer(acl_app, name="acl")
app.add_typer(quota_app, name="quota")

__all__ = ["app", "hoist_global_options"]
