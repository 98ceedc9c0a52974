"""FindCoordinator and the classic group protocol (``classic_groups.py``), with committed
offsets kept durably by the broker's group coordinator."""

from __future__ import annotations

from typing import Any

from ray_broker.config import validate_group_id
from ray_broker.errors import BrokerError
from ray_broker.kafka.classic_groups import ClassicGroup
from ray_broker.kafka.context import NODE_ID, Connection
from ray_broker.kafka.error_codes import ErrorCode, error_code
from ray_broker.kafka.protocol import Request

NO_OFFSET = -1


async def find_coordinator(conn: Connection, request: Request) -> dict[str, Any]:
    """Every group and transactional id is served here (proxy mode)."""
    listener = conn.listener
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NONE,
        "error_message": None,
        "node_id": NODE_ID,
        "host": listener.host,
        "port": listener.port,
    }


async def _authorized_group(conn: Connection, group_id: str) -> ErrorCode | None:
    """May this session join the group? Asked of the group coordinator, which checks describe
    on the group (Kafka asks read; commits still need read there)."""
    try:
        validate_group_id(group_id)
    except BrokerError:
        return ErrorCode.INVALID_GROUP_ID
    if not conn.listener.security_enabled:
        return None
    link = conn.listener.link
    code = await link.outcome(link.groups.committed, group_id, [], session=conn.session)
    return None if code == ErrorCode.NONE else code


def _group(conn: Connection, group_id: str) -> ClassicGroup | None:
    return conn.listener.groups.get_or_create(group_id)


async def join_group(conn: Connection, request: Request) -> dict[str, Any]:
    body = request.body
    refusal = await _authorized_group(conn, body.group_id)
    group = _group(conn, body.group_id) if refusal is None else None
    if group is None:
        return _join_answer(refusal or ErrorCode.COORDINATOR_NOT_AVAILABLE, body.member_id)
    result = await group.join(
        body.member_id,
        getattr(body, "group_instance_id", None),
        request.client_id,
        body.session_timeout_ms,
        getattr(body, "rebalance_timeout_ms", None) or body.session_timeout_ms,
        body.protocol_type,
        [(p.name, bytes(p.metadata)) for p in body.protocols],
        require_known_member_id=request.version >= 4,
    )
    answer = _join_answer(result.error, result.member_id)
    if result.error == ErrorCode.NONE:
        answer.update(
            generation_id=result.generation,
            protocol_type=result.protocol_type,
            protocol_name=result.protocol_name,
            leader=result.leader,
            members=[
                {"member_id": m, "group_instance_id": i, "metadata": data}
                for m, i, data in result.members
            ],
        )
    return answer


def _join_answer(error: ErrorCode, member_id: str) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "error_code": error,
        "generation_id": -1,
        "protocol_name": "",
        "leader": "",
        "member_id": member_id,
        "members": [],
    }


async def sync_group(conn: Connection, request: Request) -> dict[str, Any]:
    body = request.body
    group = conn.listener.groups.get(body.group_id)
    if group is None:
        return {"throttle_time_ms": 0, "error_code": ErrorCode.UNKNOWN_MEMBER_ID, "assignment": b""}
    assignments = {a.member_id: bytes(a.assignment) for a in body.assignments or []}
    error, assignment = await group.sync(body.member_id, body.generation_id, assignments)
    return {
        "throttle_time_ms": 0,
        "error_code": error,
        "protocol_type": group.protocol_type,
        "protocol_name": group.protocol_name,
        "assignment": assignment,
    }


async def heartbeat(conn: Connection, request: Request) -> dict[str, Any]:
    body = request.body
    group = conn.listener.groups.get(body.group_id)
    error = (
        ErrorCode.UNKNOWN_MEMBER_ID
        if group is None
        else group.heartbeat(body.member_id, body.generation_id)
    )
    return {"throttle_time_ms": 0, "error_code": error}


async def leave_group(conn: Connection, request: Request) -> dict[str, Any]:
    body = request.body
    group = conn.listener.groups.get(body.group_id)
    error = ErrorCode.UNKNOWN_MEMBER_ID if group is None else group.leave(body.member_id)
    return {"throttle_time_ms": 0, "error_code": error}


async def offset_commit(conn: Connection, request: Request) -> dict[str, Any]:
    body = request.body
    wanted = [(t.name, p) for t in body.topics for p in t.partitions]
    group = conn.listener.groups.get(body.group_id)
    generation = body.generation_id_or_member_epoch
    if group is None:
        refusal = (
            ErrorCode.NONE if generation < 0 and not body.member_id else ErrorCode.UNKNOWN_MEMBER_ID
        )
    else:
        refusal = group.check_commit(body.member_id, generation)
    if refusal == ErrorCode.NONE:
        offsets = {
            (topic, p.partition_index): (p.committed_offset, p.committed_metadata or "")
            for topic, p in wanted
        }
        link = conn.listener.link
        refusal = await link.outcome(
            link.groups.commit, body.group_id, None, offsets, session=conn.session
        )
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for topic, p in wanted:
        by_topic.setdefault(topic, []).append(
            {"partition_index": p.partition_index, "error_code": refusal}
        )
    return {
        "throttle_time_ms": 0,
        "topics": [{"name": name, "partitions": parts} for name, parts in by_topic.items()],
    }


async def offset_fetch(conn: Connection, request: Request) -> dict[str, Any]:
    body = request.body
    link = conn.listener.link
    wanted = (
        None
        if body.topics is None
        else [(t.name, index) for t in body.topics for index in t.partition_indexes]
    )
    try:
        found = await link.call(link.groups.committed, body.group_id, wanted, session=conn.session)
        error = ErrorCode.NONE
    except BrokerError as exc:
        found, error = {}, error_code(exc)
    if wanted is None:
        wanted = sorted(found)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for topic, partition in wanted:
        by_topic.setdefault(topic, []).append(
            {
                "partition_index": partition,
                "committed_offset": found.get((topic, partition), NO_OFFSET),
                "committed_leader_epoch": -1,
                "metadata": "",
                "error_code": error if request.version < 2 else ErrorCode.NONE,
            }
        )
    return {
        "throttle_time_ms": 0,
        "error_code": error,
        "topics": [{"name": name, "partitions": parts} for name, parts in by_topic.items()],
    }


async def list_groups(conn: Connection, request: Request) -> dict[str, Any]:
    link = conn.listener.link
    groups = {
        group_id: (group.protocol_type or "consumer", group.state)
        for group_id, group in conn.listener.groups.groups.items()
    }
    error = ErrorCode.NONE
    try:
        for listing in await link.call(link.groups.list_groups, session=conn.session):
            groups.setdefault(listing.group_id, ("consumer", listing.state))
    except BrokerError as exc:
        error = error_code(exc)
    return {
        "throttle_time_ms": 0,
        "error_code": error,
        "groups": [
            {"group_id": g, "protocol_type": kind, "group_state": state}
            for g, (kind, state) in sorted(groups.items())
        ],
    }


async def describe_groups(conn: Connection, request: Request) -> dict[str, Any]:
    described = []
    for group_id in request.body.groups:
        refusal = await _authorized_group(conn, group_id)
        group = conn.listener.groups.get(group_id)
        entry: dict[str, Any] = {
            "error_code": refusal or ErrorCode.NONE,
            "group_id": group_id,
            "group_state": "Dead",
            "protocol_type": "",
            "protocol_data": "",
            "members": [],
        }
        if refusal is None and group is not None:
            entry.update(
                group_state=group.state,
                protocol_type=group.protocol_type or "",
                protocol_data=group.protocol_name or "",
                members=[
                    {
                        "member_id": m.member_id,
                        "group_instance_id": m.instance_id,
                        "client_id": m.client_id,
                        "client_host": "",
                        "member_metadata": m.metadata(group.protocol_name)
                        if group.protocol_name and m.supports(group.protocol_name)
                        else b"",
                        "member_assignment": m.assignment,
                    }
                    for m in group.members.values()
                ],
            )
        described.append(entry)
    return {"throttle_time_ms": 0, "groups": described}
