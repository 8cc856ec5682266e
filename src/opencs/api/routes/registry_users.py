"""The caller's registry login (Container Registry 2016-06-07: CreateUserInfo `PUT /users`,
UpdateUserInfo `POST /users`, body `{"User": {"Password": "…"}}`): sets the password `docker login`
takes with the caller's login name (opencs.services.registry_logins). Both set it, first time or
again; the reply names the login, never the password."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Request
from pydantic import Field

from opencs.api.body import json_object, validate
from opencs.api.deps import services
from opencs.api.errors import request_id_of
from opencs.api.schemas import _Body
from opencs.errors import Forbidden
from opencs.services.accounts import Principal
from opencs.services.passwords import MAX_LENGTH, MIN_LENGTH, PATTERN

router = APIRouter()


class UserInfo(_Body):
    Password: Annotated[str, Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH,  # noqa: N815 - Alibaba's names
                                   description="8-32 printable characters, at least two kinds "
                                               "(lower case, upper case, digits, others)",
                                   json_schema_extra={"pattern": PATTERN})]


class UserInfoBody(_Body):
    User: UserInfo  # noqa: N815


async def _set(request: Request) -> dict[str, Any]:
    who = (request.scope.get("state") or {}).get("principal")
    if not isinstance(who, Principal):
        raise Forbidden("setting a registry password needs a signed call", code="Forbidden.RAM")
    password = validate(UserInfoBody, await json_object(request)).User.Password
    login = await to_thread.run_sync(lambda: services(request).registry_logins.set_password(who, password))
    return {"data": {"loginName": login}, "request_id": request_id_of(request)}


@router.put("/users")
async def create_user_info(request: Request) -> dict[str, Any]:
    """Set the caller's registry password (CreateUserInfo); `docker login -u <loginName>` takes it."""
    return await _set(request)


@router.post("/users")
async def update_user_info(request: Request) -> dict[str, Any]:
    """Change the caller's registry password (UpdateUserInfo)."""
    return await _set(request)
