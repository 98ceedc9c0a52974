"""The console's Ray actor: uvicorn serving ``app.create_app`` from a thread of its own.

A plain (threaded) actor rather than an async one: the request handlers block on broker calls
and run on FastAPI's thread pool, and uvicorn gets an event loop that nothing else uses. The
actor binds in ``__init__``, so the console Ray restarts after its process died serves again
on the same port without being asked.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


class ConsoleServer:
    def __init__(self, namespace: str, settings: dict[str, Any], host: str, port: int) -> None:
        import uvicorn

        from ray_broker.actors.priority import serve_at_normal_priority
        from ray_broker.console.app import allowed_hosts, build_state, create_app
        from ray_broker.gc_pause import freeze_loaded_heap

        serve_at_normal_priority()
        self._host = host
        self._state = build_state(namespace, settings)
        config = uvicorn.Config(
            create_app(self._state, allowed_hosts(host)),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=30,
            limit_concurrency=1_000,
        )
        self._server = uvicorn.Server(config)
        freeze_loaded_heap()  # the app is built: see ray_broker/gc_pause.py
        self._thread = threading.Thread(target=self._server.run, name="console-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the console could not listen on {host}:{port}")
            time.sleep(0.02)
        self._port = self._server.servers[0].sockets[0].getsockname()[1]

    def describe(self) -> dict[str, Any]:
        # No stop method: a console stops with its broker (``Broker.shutdown`` kills the
        # actor), never by a call any Ray driver could make without the broker's session.
        return {
            "host": self._host,
            "port": self._port,
            "url": f"http://{self._host}:{self._port}/console",
            "secured": self._state.gateway.secured,
            "serving": self._thread.is_alive(),
        }
