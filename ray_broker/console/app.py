"""The console's FastAPI application: the API under ``/v3``, the pages under ``/console``,
OpenAPI docs at ``/docs``.

Every answer to bad input is a 4xx with a JSON body naming the typed error (``http_errors``);
an unexpected failure is a 500 with the error's name and no traceback. Bodies are bounded
(``MAX_BODY_BYTES``) before they are read. Pages get a Content-Security-Policy that allows
only the console's own script and styles, so markup that slipped through escaping still
could not run.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ray_broker.console import api, pages
from ray_broker.console.auth import ConsoleSessions
from ray_broker.console.gateway import Gateway
from ray_broker.console.http_errors import error_body, headers_of, status_of
from ray_broker.console.monitor import Monitor, ray_nodes, take_snapshot
from ray_broker.console.state import ConsoleState
from ray_broker.errors import BrokerError, InvalidRequest

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
CONSOLE_HOSTS_VARIABLE = "RAY_BROKER_CONSOLE_HOSTS"
STATIC_DIR = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class BodyLimit:
    """Refuses a body over ``limit`` bytes with 413 — by its Content-Length before reading,
    or while streaming one sent without."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _send_error(
                send, InvalidRequest(f"the body is over {self.limit} bytes", status=413)
            )
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _send_error(
                send, InvalidRequest(f"the body is over {self.limit} bytes", status=413)
            )


class _TooLarge(Exception):
    pass


async def _send_error(send: Send, exc: BrokerError) -> None:
    response = JSONResponse(error_body(exc), status_code=status_of(exc))
    await response({"type": "http"}, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def allowed_hosts(bound_host: str) -> list[str]:
    """The ``Host`` headers the console answers: the address it is bound to and loopback's
    names, plus ``$RAY_BROKER_CONSOLE_HOSTS`` (comma-separated names it is reached by). A page
    asked for under any other name is a DNS-rebinding attempt from a browser. Bound to every
    interface (``0.0.0.0``), the operator chose exposure: any name is answered."""
    if bound_host in ("0.0.0.0", "::", ""):
        return ["*"]
    extra = os.environ.get(CONSOLE_HOSTS_VARIABLE, "")
    return sorted(
        {bound_host, "127.0.0.1", "localhost", "::1", "[::1]"}
        | {name.strip() for name in extra.split(",") if name.strip()}
    )


def create_app(state: ConsoleState, hosts: list[str] | None = None) -> FastAPI:
    """The console and HTTP API; ``hosts``: the Host headers answered (None: any)."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(
        lifespan=lifespan,
        title="ray-broker",
        summary="Topics, records, groups, share groups, dead letters, users, ACLs and quotas",
        version="3",
        # Served below, behind the same login as the API: a secured broker does not describe
        # its API to strangers.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.console = state
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodyLimit)
    if hosts is not None and "*" not in hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(BrokerError)
    async def broker_error(request: Request, exc: BrokerError) -> Any:
        if pages.wants_page(request) and status_of(exc) == 401:
            return RedirectResponse(pages.login_url(request), status_code=303)
        if pages.wants_page(request):
            return pages.error_page(request, exc)
        return JSONResponse(error_body(exc), status_of(exc), headers=headers_of(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Any:
        error = api.invalid_body(exc.errors())
        if pages.wants_page(request):
            return pages.error_page(request, error)
        return JSONResponse(error_body(error), status_of(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        error = InvalidRequest(str(exc.detail), status=exc.status_code)
        return JSONResponse(error_body(error), exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Any:
        logger.exception("console: %s %s failed", request.method, request.url.path)
        body = {
            "error_code": 50000,
            "error": type(exc).__name__,
            "message": "the console failed unexpectedly; the broker keeps serving",
            "retriable": True,
        }
        return JSONResponse(body, 500)

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, plus the body models of the endpoints that read raw JSON."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for path in schema["paths"].values():
                for operation in path.values():
                    components.update(operation.pop("x-body-schemas", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_json(_user: api.User) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(_user: api.User) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/console", status_code=307)

    return app


def build_state(
    namespace: str, settings: dict[str, Any], monitor_interval_s: float | None = None
) -> ConsoleState:
    """Attach to the broker of ``namespace`` and start the monitor.

    Raises:
        BrokerNotRunning: no broker runs there.
    """
    from ray_broker.kafka.deploy import cluster_id

    gateway = Gateway.attach(namespace, settings)
    monitor = Monitor(
        lambda: take_snapshot(gateway.monitor.admin(), ray_nodes),
        **({} if monitor_interval_s is None else {"interval_s": monitor_interval_s}),
    )
    monitor.start()
    return ConsoleState(gateway, ConsoleSessions(), monitor, cluster_id(namespace))
