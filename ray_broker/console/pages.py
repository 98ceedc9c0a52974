"""The web console: server-rendered pages (Jinja2, autoescaped) with live parts that a small
script of our own (``static/console.js``) refreshes by fetching their fragment every few
seconds. No JavaScript build step, no third-party script.

Every state-changing form posts the session's CSRF token (``auth.check_csrf``); the login
cookie is ``HttpOnly`` and ``SameSite=Strict``. Numbers on the overview come from the
monitor's last sample, restricted to what the broker lists for the user; detail pages ask the
broker live, as that user.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ray_broker.console.auth import COOKIE, CSRF_FIELD, ConsoleSession, check_csrf
from ray_broker.console.browse import MAX_PAGE_RECORDS, browse
from ray_broker.console.charts import chart, rate_text
from ray_broker.console.http_errors import status_of
from ray_broker.console.monitor import Monitor
from ray_broker.console.state import console_state
from ray_broker.errors import AuthenticationFailed, BrokerError, InvalidRequest
from ray_broker.views import bytes_text

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
TEMPLATES.env.filters["rate"] = rate_text
TEMPLATES.env.filters["when"] = lambda ms: (
    datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms and ms > 0 else "—"
)
REFRESH_MS = 2_000

router = APIRouter(prefix="/console", include_in_schema=False)


def wants_page(request: Request) -> bool:
    return request.url.path.startswith("/console")


def login_url(request: Request) -> str:
    return f"/console/login?next={quote(request.url.path)}"


def _shown_text(raw: object) -> str:
    shown = bytes_text(raw)
    return "null" if shown is None else shown


TEMPLATES.env.filters["shown"] = _shown_text


# --- sessions ---------------------------------------------------------------------------------


def console_session(request: Request) -> ConsoleSession:
    """The page's session: the login cookie's, or (security off) a new anonymous one.

    Raises:
        AuthenticationFailed: secured and not logged in (pages redirect to the login form).
    """
    state = console_state(request)
    found = state.sessions.get(request.cookies.get(COOKIE))
    if found is not None:
        return found
    account = state.gateway.anonymous()  # raises on a secured broker
    session_id = state.sessions.open(account, "")
    request.state.new_session_id = session_id
    return state.sessions.get(session_id)  # type: ignore[return-value]


Session = Annotated[ConsoleSession, Depends(console_session)]


def _set_cookie(response: Response, session_id: str, request: Request) -> None:
    response.set_cookie(
        COOKIE,
        session_id,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def render(request: Request, session: ConsoleSession, template: str, **context: Any) -> Response:
    state = console_state(request)
    response = TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "session": session,
            "csrf_field": CSRF_FIELD,
            "principal": session.account.principal,
            "secured": state.gateway.secured,
            "refresh_ms": REFRESH_MS,
            "monitor_error": state.monitor.last_error,
            **context,
        },
    )
    new_session = getattr(request.state, "new_session_id", None)
    if new_session:
        _set_cookie(response, new_session, request)
    return response


def error_page(request: Request, exc: BrokerError) -> Response:
    return TEMPLATES.TemplateResponse(
        request,
        "error.html",
        {"error": type(exc).__name__, "message": str(exc), "session": None, "secured": False},
        status_code=status_of(exc),
    )


def back(url: str, **notice: Any) -> RedirectResponse:
    query = "&".join(f"{k}={quote(str(v))}" for k, v in notice.items())
    return RedirectResponse(f"{url}?{query}" if query else url, status_code=303)


# --- login ------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path of this console: never an open redirect elsewhere."""
    if not target or not target.startswith("/console") or "//" in target or "\\" in target:
        return "/console"
    return target


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:  # noqa: A002
    return TEMPLATES.TemplateResponse(
        request,
        "login.html",
        {
            "next": _safe_next(next),
            "session": None,
            "secured": console_state(request).gateway.secured,
        },
    )


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=255)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form(max_length=2048)] = "/console",  # noqa: A002
) -> Response:
    state = console_state(request)
    try:
        account = state.gateway.login(username, password)
        account.admin().list_topics()  # proves the session works before it is kept
    except AuthenticationFailed as exc:
        return TEMPLATES.TemplateResponse(
            request,
            "login.html",
            {"next": _safe_next(next), "failed": str(exc), "session": None, "secured": True},
            status_code=401,
        )
    session_id = state.sessions.open(account, username)
    response = RedirectResponse(_safe_next(next), status_code=303)
    _set_cookie(response, session_id, request)
    return response


@router.post("/logout")
def logout(request: Request, session: Session, csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(session, csrf_token)
    state = console_state(request)
    state.sessions.close(request.cookies.get(COOKIE))
    if state.gateway.secured:
        state.gateway.forget(session.account)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# --- overview ---------------------------------------------------------------------------------


def overview_context(monitor: Monitor, admin: Any) -> dict[str, Any]:
    """The overview of what ``admin``'s user may see, from the monitor's last sample (three
    listing calls to the broker, which decides what the user may see; the figures are
    already in memory)."""
    snapshot = monitor.snapshot
    visible = set(admin.list_topics())
    history = monitor.history
    topics = []
    for name in sorted(visible):
        described = snapshot.topics.get(name)
        topics.append(
            {
                "name": name,
                "partitions": len(described.partitions) if described else None,
                "records": sum(max(p.high_watermark, 0) for p in described.partitions)
                if described
                else None,
                "in_rate": history.rate(f"in:{name}"),
                "out_rate": history.rate(f"out:{name}"),
                "under_replicated": sum(p.under_replicated for p in described.partitions)
                if described
                else 0,
                "offline": sum(p.offline for p in described.partitions) if described else 0,
            }
        )
    groups = []
    for listing in admin.list_groups():
        described = snapshot.groups.get(listing.group_id)
        groups.append(
            {
                "group_id": listing.group_id,
                "state": listing.state,
                "members": listing.members,
                "lag": sum(p.lag or 0 for p in described.partitions) if described else None,
            }
        )
    series_in = history.summed_rate_series("in", visible)
    series_out = history.summed_rate_series("out", visible)
    return {
        "topics": topics,
        "groups": groups,
        "share_groups": admin.list_share_groups(),
        "throughput": chart({"in": series_in, "out": series_out}),
        "in_rate": series_in[-1] if series_in else 0.0,
        "out_rate": series_out[-1] if series_out else 0.0,
        "under_replicated": sum(t["under_replicated"] for t in topics),
        "offline": sum(t["offline"] for t in topics),
        "total_lag": sum(g["lag"] or 0 for g in groups),
        "sampled_at": snapshot.taken_at_ms,
    }


@router.get("", response_class=HTMLResponse)
def overview(request: Request, session: Session, created: str | None = None) -> Response:
    return render(
        request,
        session,
        "overview.html",
        created=created,
        **overview_context(console_state(request).monitor, session.account.admin()),
    )


@router.get("/fragments/overview", response_class=HTMLResponse)
def overview_fragment(request: Request, session: Session) -> Response:
    context = overview_context(console_state(request).monitor, session.account.admin())
    return render(request, session, "_overview.html", **context)


@router.post("/topics")
def create_topic(
    request: Request,
    session: Session,
    name: Annotated[str, Form(max_length=249)],
    partitions: Annotated[int, Form(ge=1, le=10_000)] = 1,
    replication_factor: Annotated[int | None, Form(ge=1, le=100)] = None,
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(session, csrf_token)
    session.account.admin().create_topic(name, partitions, replication_factor)
    return back(f"/console/topics/{quote(name)}", created=name)


# --- topic ------------------------------------------------------------------------------------


def topic_context(request: Request, session: ConsoleSession, name: str) -> dict[str, Any]:
    described = session.account.admin().describe_topic(name)
    history = console_state(request).monitor.history
    return {
        "topic": described,
        "throughput": chart(
            {"in": history.rate_series(f"in:{name}"), "out": history.rate_series(f"out:{name}")}
        ),
    }


@router.get("/topics/{name}", response_class=HTMLResponse)
def topic_page(
    request: Request,
    session: Session,
    name: str,
    partition: Annotated[str, Query(max_length=10)] = "",
    offset: Annotated[str, Query(max_length=20)] = "",
    since: Annotated[str, Query(max_length=40)] = "",
    filter: Annotated[str, Query(max_length=4096)] = "",  # noqa: A002
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_RECORDS)] = 50,
    produced: str | None = None,
    created: str | None = None,
) -> Response:
    context = topic_context(request, session, name)
    browse_error = None
    records: list[Any] = []
    asked = {"partition": partition, "offset": offset, "since": since, "filter": filter}
    try:
        records = browse(
            session.account,
            name,
            partition=_optional_int(partition, "partition"),
            offset=_optional_int(offset, "offset"),
            timestamp_ms=_since_ms(since),
            filter_text=filter or None,
            limit=limit,
            described=context["topic"],
        )
    except BrokerError as exc:  # shown beside the form: the page itself is fine
        browse_error = f"{type(exc).__name__}: {exc}"
    return render(
        request,
        session,
        "topic.html",
        records=records,
        asked=asked,
        limit=limit,
        browse_error=browse_error,
        produced=produced,
        created=created,
        **context,
    )


@router.get("/fragments/topics/{name}", response_class=HTMLResponse)
def topic_fragment(request: Request, session: Session, name: str) -> Response:
    return render(request, session, "_topic.html", **topic_context(request, session, name))


def _optional_int(text: str, what: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit():
        raise InvalidRequest(f"{what} is a number, got {text!r}", status=422)
    return int(text)


def _since_ms(text: str) -> int | None:
    """``2026-12-02T10:00`` (the browser's datetime-local) or epoch ms."""
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        return int(text)
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise InvalidRequest(
            f"'since' is a date and time or epoch ms, got {text!r}", status=422
        ) from None


@router.post("/topics/{name}/produce")
def produce(
    request: Request,
    session: Session,
    name: str,
    value: Annotated[str, Form(max_length=1_000_000)] = "",
    key: Annotated[str, Form(max_length=10_000)] = "",
    partition: Annotated[str, Form(max_length=10)] = "",
    headers: Annotated[str, Form(max_length=10_000)] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """One record from the form: key and value as UTF-8 text, headers as ``name=value``
    lines."""
    check_csrf(session, csrf_token)
    parsed_headers = []
    for line in headers.splitlines():
        if line.strip():
            header, sep, text = line.partition("=")
            if not sep or not header.strip():
                raise InvalidRequest(f"a header line is name=value, got {line!r}", status=422)
            parsed_headers.append((header.strip(), text.encode()))
    future = session.account.producer().send(
        name,
        value=value.encode(),
        key=key.encode() if key else None,
        headers=parsed_headers or None,
        partition=_optional_int(partition, "partition"),
    )
    metadata = future.result(timeout=60)
    return back(
        f"/console/topics/{quote(name)}", produced=f"{metadata.partition}:{metadata.offset}"
    )


# --- groups -----------------------------------------------------------------------------------


def group_context(request: Request, session: ConsoleSession, group_id: str) -> dict[str, Any]:
    described = session.account.admin().describe_group(group_id)
    history = console_state(request).monitor.history
    return {
        "group": described,
        "total_lag": sum(p.lag or 0 for p in described.partitions),
        "lag_chart": chart({"lag": history.series(f"lag:{group_id}")}),
    }


@router.get("/groups/{group_id}", response_class=HTMLResponse)
def group_page(
    request: Request, session: Session, group_id: str, moved: str | None = None
) -> Response:
    return render(
        request, session, "group.html", moved=moved, **group_context(request, session, group_id)
    )


@router.get("/fragments/groups/{group_id}", response_class=HTMLResponse)
def group_fragment(request: Request, session: Session, group_id: str) -> Response:
    return render(request, session, "_group.html", **group_context(request, session, group_id))


@router.post("/groups/{group_id}/reset")
def reset_group(
    request: Request,
    session: Session,
    group_id: str,
    topic: Annotated[str, Form(max_length=249)],
    to: Annotated[str, Form(pattern="^(earliest|latest|offset|datetime)$")],
    value: Annotated[str, Form(max_length=40)] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(session, csrf_token)
    target = _since_ms(value) if to == "datetime" else _optional_int(value, "offset")
    moved = session.account.admin().reset_offsets(group_id, topic, to, target)
    return back(f"/console/groups/{quote(group_id)}", moved=len(moved))


# --- share groups, dead letters, nodes --------------------------------------------------------


def share_context(session: ConsoleSession, group_id: str) -> dict[str, Any]:
    return {"share": session.account.admin().describe_share_group(group_id)}


@router.get("/share-groups/{group_id}", response_class=HTMLResponse)
def share_group_page(request: Request, session: Session, group_id: str) -> Response:
    return render(request, session, "share_group.html", **share_context(session, group_id))


@router.get("/fragments/share-groups/{group_id}", response_class=HTMLResponse)
def share_group_fragment(request: Request, session: Session, group_id: str) -> Response:
    return render(request, session, "_share_group.html", **share_context(session, group_id))


@router.get("/dead-letters/{topic}", response_class=HTMLResponse)
def dead_letters_page(
    request: Request, session: Session, topic: str, redriven: str | None = None
) -> Response:
    letters = session.account.admin().list_dead_letters(topic, 100)
    return render(
        request, session, "dead_letters.html", topic=topic, letters=letters, redriven=redriven
    )


@router.post("/dead-letters/{topic}/redrive")
def redrive(
    request: Request,
    session: Session,
    topic: str,
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(session, csrf_token)
    count = session.account.admin().redrive_dead_letters(topic)
    return back(f"/console/dead-letters/{quote(topic)}", redriven=count)


def nodes_context(request: Request, session: ConsoleSession) -> dict[str, Any]:
    # The cluster's layout, and every topic's health, are for users allowed describe on the
    # cluster: raises Unauthorized (an error page) for a tenant's users.
    session.account.admin().describe_cluster()
    snapshot = console_state(request).monitor.snapshot
    return {
        "nodes": [{**n, "leaders": snapshot.leaders_on(n["node_id"])} for n in snapshot.nodes],
        "under_replicated": snapshot.under_replicated,
        "offline": snapshot.offline,
        "sampled_at": snapshot.taken_at_ms,
    }


@router.get("/nodes", response_class=HTMLResponse)
def nodes_page(request: Request, session: Session) -> Response:
    return render(request, session, "nodes.html", **nodes_context(request, session))


@router.get("/fragments/nodes", response_class=HTMLResponse)
def nodes_fragment(request: Request, session: Session) -> Response:
    return render(request, session, "_nodes.html", **nodes_context(request, session))
