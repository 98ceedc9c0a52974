"""Users, ACLs and quotas (administrators)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from ray_broker.console.api.common import (
    ClusterPath,
    JsonBody,
    OfCluster,
    User,
)
from ray_broker.console.state import json_ready
from ray_broker.errors import InvalidRequest
from ray_broker.structs import Acl, QuotaEntity

router = APIRouter()

# --- users, ACLs, quotas (administrators) -----------------------------------------------------


class CreateUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)
    superuser: bool = False


class AclBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principal: str = Field(min_length=1, max_length=300)
    resource_type: str = Field(min_length=1, max_length=40)
    resource_name: str = Field(min_length=1, max_length=300)
    operation: str = Field(min_length=1, max_length=40)
    permission: str = "allow"
    pattern_type: str = "literal"


class QuotaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str | None = None
    client_id: str | None = None
    tenant: str | None = None
    values: dict[str, float | None] = Field(min_length=1, max_length=10)


@router.get(ClusterPath + "/users", dependencies=OfCluster)
def list_users(user: User) -> dict[str, Any]:
    return {"kind": "UserList", "data": json_ready(user.admin().list_users())}


@router.post(ClusterPath + "/users", dependencies=OfCluster + JsonBody, status_code=201)
def create_user(body: CreateUser, user: User) -> dict[str, Any]:
    user.admin().create_user(body.name, body.password, superuser=body.superuser)
    return {"name": body.name, "superuser": body.superuser}


@router.delete(ClusterPath + "/users/{name}", dependencies=OfCluster, status_code=204)
def delete_user(name: str, user: User) -> Response:
    user.admin().delete_user(name)
    return Response(status_code=204)


def acl_json(acl: Acl) -> dict[str, Any]:
    return {
        "principal": acl.principal,
        "resource_type": acl.resource_type,
        "resource_name": acl.name,
        "operation": acl.operation,
        "permission": acl.permission,
        "pattern_type": acl.pattern,
    }


@router.get(ClusterPath + "/acls", dependencies=OfCluster)
def list_acls(
    user: User,
    principal: str | None = None,
    resource_type: str | None = None,
    resource_name: str | None = None,
) -> dict[str, Any]:
    found = user.admin().describe_acls(principal, resource_type, resource_name)
    return {"kind": "KafkaAclList", "data": [acl_json(a) for a in found]}


@router.post(ClusterPath + "/acls", dependencies=OfCluster + JsonBody, status_code=201)
def create_acl(body: AclBody, user: User) -> dict[str, Any]:
    acl = Acl(
        body.principal,
        body.resource_type,
        body.resource_name,
        body.operation,
        body.permission,
        body.pattern_type,
    )
    return {"data": [acl_json(a) for a in user.admin().create_acls([acl])]}


@router.delete(ClusterPath + "/acls", dependencies=OfCluster)
def delete_acls(
    user: User,
    principal: str | None = None,
    resource_type: str | None = None,
    resource_name: str | None = None,
) -> dict[str, Any]:
    if principal is None and resource_type is None and resource_name is None:
        raise InvalidRequest(
            "name at least one of principal, resource_type, resource_name", status=422
        )
    deleted = user.admin().delete_acls(principal, resource_type, resource_name)
    return {"data": [acl_json(a) for a in deleted]}


@router.get(ClusterPath + "/quotas", dependencies=OfCluster)
def list_quotas(user: User) -> dict[str, Any]:
    return {"kind": "QuotaList", "data": user.admin().describe_quotas()}


@router.post(ClusterPath + "/quotas", dependencies=OfCluster + JsonBody)
def alter_quotas(body: QuotaBody, user: User) -> dict[str, Any]:
    entity = QuotaEntity(
        **{
            k: v
            for k, v in (
                ("user", body.user),
                ("client_id", body.client_id),
                ("tenant", body.tenant),
            )
            if v is not None
        }
    )
    return {"values": user.admin().alter_quotas(entity, body.values)}
