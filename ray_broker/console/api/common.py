"""What every resource of the HTTP API shares: JSON bodies, the cluster path, the acting user."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from pydantic import BaseModel, ValidationError

from ray_broker.console.browse import MAX_PAGE_RECORDS
from ray_broker.console.gateway import Account
from ray_broker.console.state import acting, console_state
from ray_broker.errors import InvalidRequest

MAX_LIST_PAGE = 1_000
PRODUCE_TIMEOUT_S = 60.0

User = Annotated[Account, Depends(acting)]


def require_json(request: Request) -> None:
    """Bodies are JSON only: a cross-site HTML form cannot send ``application/json``, so this
    is also what keeps the API safe from CSRF with Basic credentials a browser remembers.

    Raises:
        InvalidRequest (415): another content type.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise InvalidRequest(
            f"the body must be application/json, got {kind or 'no content type'}", status=415
        )


JsonBody = [Depends(require_json)]


async def raw_json(request: Request) -> bytes:
    """The body's bytes, for the produce endpoints to validate in one pass
    (``model_validate_json``: a third of the CPU of FastAPI's parse-then-validate on a
    thousand-record batch), on the handler's thread rather than the event loop."""
    require_json(request)
    return await request.body()


M = TypeVar("M", bound=BaseModel)


def parsed(model: type[M], body: bytes) -> M:
    """Raises InvalidRequest: malformed JSON (400) or a body ``model`` refuses (422)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_body(exc.errors()) from None


def invalid_body(problems: Sequence[Any]) -> InvalidRequest:
    """What a body that does not validate is answered with (here and for FastAPI's own
    validation of the other endpoints)."""
    malformed = any(p.get("type") == "json_invalid" for p in problems)
    text = "; ".join(
        f"{'.'.join(str(x) for x in p.get('loc', ()))}: {p.get('msg', '')}" for p in problems[:10]
    )
    return InvalidRequest(
        ("malformed JSON: " if malformed else "") + text, status=400 if malformed else 422
    )


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body read by ``raw_json`` (the schema is inlined, its
    definitions under ``$defs`` as JSON Schema 2020-12 allows)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        },
        "x-body-schemas": {model.__name__: schema, **schema.pop("$defs", {})},
    }


RawBody = Annotated[bytes, Depends(raw_json)]


def cluster(request: Request, cluster_id: str) -> None:
    """Raises InvalidRequest (404): not this broker's cluster id."""
    if cluster_id != console_state(request).cluster_id:
        raise InvalidRequest(f"no cluster {cluster_id!r} here", status=404)


ClusterPath = "/clusters/{cluster_id}"
OfCluster = [Depends(cluster)]


def page(names: list[str], limit: int, start_after: str | None) -> tuple[list[str], str | None]:
    """A page of sorted ``names`` after ``start_after``; the next page's cursor, if any."""
    rest = [n for n in names if start_after is None or n > start_after]
    chunk = rest[:limit]
    return chunk, (chunk[-1] if len(rest) > limit else None)


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_RECORDS)]
