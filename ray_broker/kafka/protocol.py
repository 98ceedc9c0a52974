"""Frames, headers and the API versions this listener speaks.

Requests are decoded and responses encoded by kafka-python 3's ``kafka.protocol`` classes,
generated from Kafka's own JSON schemas (flexible versions and tagged fields included), so no
field layout is written by hand here. What is ours: which APIs and versions we advertise, and
the frame checks a broker makes before decoding anything.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from kafka.protocol import admin, consumer, metadata, producer, sasl

# Kafka's socket.request.max.bytes default: a frame announcing more closes the connection.
MAX_REQUEST_BYTES = 100 * 1024 * 1024
REQUEST_PREFIX = struct.Struct(">hhi")  # api key, api version, correlation id

# api key -> (request class, lowest, highest version advertised). Low minimums on purpose:
# librdkafka disables a feature when the advertised range misses the version it wants.
_SUPPORTED: list[tuple[Any, int, int]] = [
    (producer.ProduceRequest, 3, 8),
    (consumer.FetchRequest, 4, 11),
    (consumer.ListOffsetsRequest, 1, 5),
    (metadata.MetadataRequest, 1, 8),
    (consumer.OffsetCommitRequest, 2, 7),
    (consumer.OffsetFetchRequest, 1, 5),
    (metadata.FindCoordinatorRequest, 0, 2),
    (consumer.JoinGroupRequest, 0, 5),
    (consumer.HeartbeatRequest, 0, 3),
    (consumer.LeaveGroupRequest, 0, 1),
    (consumer.SyncGroupRequest, 0, 3),
    (admin.DescribeGroupsRequest, 0, 4),
    (admin.ListGroupsRequest, 0, 2),
    (sasl.SaslHandshakeRequest, 1, 1),
    (metadata.ApiVersionsRequest, 0, 3),
    (admin.CreateTopicsRequest, 2, 4),
    (admin.DeleteTopicsRequest, 1, 3),
    (producer.InitProducerIdRequest, 0, 1),
    (producer.AddPartitionsToTxnRequest, 0, 1),
    (producer.AddOffsetsToTxnRequest, 0, 1),
    (producer.EndTxnRequest, 0, 1),
    (producer.TxnOffsetCommitRequest, 0, 2),
    (admin.DescribeConfigsRequest, 1, 2),
    (sasl.SaslAuthenticateRequest, 0, 1),
]


@dataclass(frozen=True)
class Api:
    request: Any
    response: Any
    min_version: int
    max_version: int

    @property
    def name(self) -> str:
        """Kafka's name of the API ("Produce")."""
        return self.request.__name__.removesuffix("Request")


def _response_class(request: Any) -> Any:
    module = __import__(request.__module__, fromlist=["_"])
    return getattr(module, request.__name__.replace("Request", "Response"))


APIS: dict[int, Api] = {
    request.API_KEY: Api(request, _response_class(request), low, high)
    for request, low, high in _SUPPORTED
}


class UnsupportedRequest(Exception):
    """An API key or version this listener does not speak (the connection is closed, as
    Kafka does, except for ApiVersions, which is answered with the supported list)."""


@dataclass(frozen=True)
class Request:
    api: Api
    version: int
    correlation_id: int
    client_id: str
    body: Any


def peek(frame: bytes | memoryview) -> tuple[int, int, int]:
    """(api key, api version, correlation id) of a request frame without its length prefix.

    Raises:
        UnsupportedRequest: a frame too short to hold a request header.
    """
    if len(frame) < REQUEST_PREFIX.size:
        raise UnsupportedRequest(f"a {len(frame)}-byte frame holds no request header")
    return REQUEST_PREFIX.unpack_from(frame)


def decode_request(frame: bytes | memoryview) -> Request:
    """Raises UnsupportedRequest for an unknown API or version and for bytes that do not
    decode as that request."""
    api_key, version, correlation_id = peek(frame)
    api = APIS.get(api_key)
    if api is None:
        raise UnsupportedRequest(f"API key {api_key} is not supported")
    if not api.min_version <= version <= api.max_version:
        raise UnsupportedRequest(
            f"{api.name} v{version} is not supported ({api.min_version}-{api.max_version})"
        )
    try:
        body = api.request.decode(frame, version=version, header=True)
    except Exception as exc:  # the codec's errors are plain exceptions of many kinds
        raise UnsupportedRequest(f"{api.name} v{version} does not decode: {exc}") from None
    client_id = getattr(body.header, "client_id", None) or ""
    return Request(api, version, correlation_id, client_id, body)


def build(container: Any, fields: dict[str, Any], version: int) -> Any:
    """A protocol object from nested dicts (the generated classes take their own nested
    classes only)."""
    values = {}
    for name, value in fields.items():
        field = container._struct.fields[name]
        if field.is_struct_array() and value is not None:
            value = [
                build(field.data_class, item, version) if isinstance(item, dict) else item
                for item in value
            ]
        elif field.is_struct() and isinstance(value, dict):
            value = build(field.data_class, value, version)
        values[name] = value
    return container(version=version, **values)


def encode_response(api: Api, version: int, correlation_id: int, fields: dict[str, Any]) -> bytes:
    """The framed response (length prefix, header, body)."""
    response = build(api.response, fields, version)
    response.with_header(correlation_id=correlation_id)
    return bytes(response.encode(header=True, framed=True))


def api_versions_list() -> list[dict[str, int]]:
    return [
        {"api_key": key, "min_version": api.min_version, "max_version": api.max_version}
        for key, api in sorted(APIS.items())
    ]
