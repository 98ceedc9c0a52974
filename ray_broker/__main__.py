"""``python -m ray_broker``: the ``ray-broker`` command line."""

from ray_broker.cli import app

app()
