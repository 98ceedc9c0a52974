"""SASL for Kafka clients, against the broker's users (``actors/security/registry.py``).

SCRAM-SHA-256/512 is relayed: the client's messages go to the Controller's login exchange as
they are, so the listener never sees a password and the broker's proof reaches the client.
PLAIN hands the listener the password; it runs the SCRAM exchange on the client's behalf and
drops the password when it ends. Either way the connection then carries the broker's session
token, which every partition and coordinator call presents: ACLs and quotas apply to a Kafka
client exactly as to a Python one. The session ends with the token; the connection is closed
then (Kafka's KIP-368 answer: ``session_lifetime_ms`` tells clients to authenticate again).
"""

from __future__ import annotations

import time
from typing import Any

from ray_broker.actors.security.scram import MECHANISMS, ScramClient, ScramServer
from ray_broker.errors import AuthenticationFailed, BrokerError
from ray_broker.kafka.context import Connection
from ray_broker.kafka.error_codes import ErrorCode
from ray_broker.kafka.protocol import Request

PLAIN = "PLAIN"
SUPPORTED = [PLAIN, *MECHANISMS]
LOGIN_TIMEOUT_S = 30.0


class SaslFailed(Exception):
    """The answer is sent, then the connection closed (as Kafka does after a failed login)."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer.get("error_message") or "SASL failed")
        self.answer = answer


async def sasl_handshake(conn: Connection, request: Request) -> dict[str, Any]:
    mechanism = request.body.mechanism
    if not conn.listener.security_enabled:
        return {"error_code": ErrorCode.UNSUPPORTED_SASL_MECHANISM, "mechanisms": []}
    if mechanism not in SUPPORTED:
        return {"error_code": ErrorCode.UNSUPPORTED_SASL_MECHANISM, "mechanisms": SUPPORTED}
    conn.sasl_mechanism = mechanism
    conn.sasl_exchange = None
    return {"error_code": ErrorCode.NONE, "mechanisms": SUPPORTED}


async def sasl_authenticate(conn: Connection, request: Request) -> dict[str, Any]:
    mechanism = conn.sasl_mechanism
    if mechanism is None:
        raise SaslFailed(_refusal(ErrorCode.ILLEGAL_SASL_STATE, "SaslHandshake comes first"))
    message = bytes(request.body.auth_bytes or b"")
    try:
        if mechanism == PLAIN:
            return await _plain(conn, message)
        return await _scram(conn, mechanism, message)
    except BrokerError as exc:  # AuthenticationFailed, or the Controller did not answer
        conn.sasl_mechanism = conn.sasl_exchange = None
        raise SaslFailed(_refusal(ErrorCode.SASL_AUTHENTICATION_FAILED, str(exc))) from None


def _refusal(code: ErrorCode, message: str) -> dict[str, Any]:
    return {
        "error_code": code,
        "error_message": message[:500],
        "auth_bytes": b"",
        "session_lifetime_ms": 0,
    }


async def _scram(conn: Connection, mechanism: str, message: bytes) -> dict[str, Any]:
    link = conn.listener.link
    text = message.decode("utf-8", "replace")
    if conn.sasl_exchange is None:
        username = ScramServer.username_of(text)
        server_first = await link.call(
            link.controller.login_first, mechanism, text, timeout_s=LOGIN_TIMEOUT_S
        )
        conn.sasl_exchange = username
        return _answer(server_first.encode(), 0)
    username, conn.sasl_exchange = conn.sasl_exchange, None
    granted = await link.call(link.controller.login_final, text, timeout_s=LOGIN_TIMEOUT_S)
    _grant(conn, username, granted)
    return _answer(granted["server_final"].encode(), granted["lifetime_ms"])


async def _plain(conn: Connection, message: bytes) -> dict[str, Any]:
    parts = message.split(b"\0")
    if len(parts) != 3 or not parts[1]:
        raise AuthenticationFailed("PLAIN: expected authzid NUL username NUL password")
    authzid, username, password = (p.decode("utf-8", "replace") for p in parts)
    if authzid and authzid != username:
        raise AuthenticationFailed("PLAIN: acting for another user is not supported")
    link = conn.listener.link
    client = ScramClient(username, password, "SCRAM-SHA-256")
    server_first = await link.call(
        link.controller.login_first, client.mechanism, client.first(), timeout_s=LOGIN_TIMEOUT_S
    )
    granted = await link.call(
        link.controller.login_final, client.final(server_first), timeout_s=LOGIN_TIMEOUT_S
    )
    client.verify(granted["server_final"])
    _grant(conn, username, granted)
    return _answer(b"", granted["lifetime_ms"])


def _grant(conn: Connection, username: str, granted: dict[str, Any]) -> None:
    conn.session = granted["token"]
    conn.principal = username
    conn.session_ends = time.monotonic() + granted["lifetime_ms"] / 1000
    conn.sasl_mechanism = None


def _answer(auth_bytes: bytes, lifetime_ms: int) -> dict[str, Any]:
    return {
        "error_code": ErrorCode.NONE,
        "error_message": None,
        "auth_bytes": auth_bytes,
        "session_lifetime_ms": lifetime_ms,
    }
