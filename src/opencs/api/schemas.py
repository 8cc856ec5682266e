"""Request bodies of the cluster API (spec §5). Unknown fields are ignored (today's SDKs send
more than the 2015 spec knows); known fields are validated and named on error."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from opencs.services.instance_types import resources_for

# Bounds of every input (issue 13): the same constraints validate the request and appear in the
# OpenAPI document. No control characters in identifiers or stored text: PostgreSQL refuses NUL.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
ID_MAX = 128
TOKEN_MAX = 1024  # a trigger token or secret
PAGE_MAX = 1_000_000  # (page - 1) * size must stay far inside a 64-bit OFFSET


# printable text of a bounded length (named aliases: a type checker cannot evaluate a call in a hint)
Text32 = Annotated[str, Field(max_length=32, pattern=PRINTABLE)]
Text43 = Annotated[str, Field(max_length=43, pattern=PRINTABLE)]  # an IPv4/IPv6 CIDR
Text64 = Annotated[str, Field(max_length=64, pattern=PRINTABLE)]
TextId = Annotated[str, Field(max_length=ID_MAX, pattern=PRINTABLE)]


def _path_id(what: str, max_length: int = ID_MAX) -> Any:
    return Annotated[str, Path(min_length=1, max_length=max_length, pattern=PRINTABLE, description=what)]


ClusterId = _path_id("cluster id")
InstanceId = _path_id("instance id")
TaskId = _path_id("task id")
TriggerId = _path_id("trigger id")
NodeIp = _path_id("a node's private IP address", 45)
PageNumber = Annotated[int, Query(ge=1, le=PAGE_MAX)]
QueryText = Annotated[str | None, Query(max_length=ID_MAX, pattern=PRINTABLE)]

NAME_RE = re.compile(r"^[A-Za-z0-9\u4e00-\u9fff][A-Za-z0-9\u4e00-\u9fff-]{0,62}$")
INSTANCE_RE = re.compile(r"^i-[a-z0-9]{20}$")


def check_password(v: str) -> str:
    """Spec §2.3: 8–30 characters of letters, digits and symbols, no backslash or double quote.
    The spec's own example ("TestPwd124") has no symbol, so three of the four classes suffice."""
    if not 8 <= len(v) <= 30:
        raise ValueError("must be 8-30 characters")
    if "\\" in v or '"' in v:
        raise ValueError('must not contain a backslash or a double quote')
    classes = [any(c.islower() for c in v), any(c.isupper() for c in v), any(c.isdigit() for c in v),
               any(not c.isalnum() for c in v)]
    if sum(classes) < 3:
        raise ValueError("needs three of: lower-case letters, upper-case letters, digits, symbols")
    return v


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


MAX_SIZE = 1000  # nodes; the server's own limit (OPENCS_MAX_CLUSTER_SIZE) is usually lower
Password = Annotated[str, Field(min_length=8, max_length=30)]
DiskCategory = Literal["cloud", "cloud_efficiency", "cloud_ssd", "cloud_essd"]
IoOptimized = Annotated[str, Field(max_length=16)] | bool | None


class CreateCluster(_Body):
    # the validator below enforces the pattern with a message of its own
    name: Annotated[str, Field(min_length=1, max_length=63, json_schema_extra={"pattern": NAME_RE.pattern})]
    size: Annotated[int, Field(ge=1, le=MAX_SIZE)]
    instance_type: Text64 = "ecs.n1.small"
    cluster_type: Text32 = "swarm"
    password: Password | None = None
    network_mode: Literal["vpc", "classic"] = "vpc"
    subnet_cidr: Text43 = ""
    vpc_id: TextId = ""
    vswitch_id: TextId = ""
    region_id: Text64 = ""
    data_disk_category: DiskCategory = "cloud_efficiency"
    data_disk_size: Annotated[int, Field(ge=0, le=32768)] = 0
    ecs_image_id: TextId = ""
    io_optimized: IoOptimized = None
    need_slb: bool = True
    release_eip_flag: bool = False
    rds_instances: Annotated[list[TextId], Field(max_length=50)] = []

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("1-63 letters, Chinese characters, digits or '-', not starting with '-'")
        return v

    def stored_spec(self) -> dict[str, Any]:
        return self.model_dump(exclude={"password", "name", "size"})

    @field_validator("instance_type")
    @classmethod
    def _itype(cls, v: str) -> str:
        resources_for(v)
        return v

    @field_validator("password")
    @classmethod
    def _pw(cls, v: str | None) -> str | None:
        return None if v is None else check_password(v)

    @field_validator("subnet_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        if v:
            ipaddress.ip_network(v, strict=False)
        return v

    @field_validator("io_optimized")
    @classmethod
    def _io(cls, v: str | bool | None) -> str | None:
        # spec: "none" | "optimized"; its own example sends "true"
        if v is None:
            return None
        s = str(v).lower()
        if s not in ("none", "optimized", "true", "false"):
            raise ValueError("must be 'none' or 'optimized'")
        return "optimized" if s in ("true", "optimized") else "none"


class ScaleCluster(_Body):
    size: Annotated[int, Field(ge=1, le=MAX_SIZE)]
    password: Password | None = None
    instance_type: Text64 | None = None
    data_disk_category: Text32 | None = None
    data_disk_size: Annotated[int, Field(ge=0, le=32768)] | None = None
    ecs_image_id: TextId = ""
    io_optimized: IoOptimized = None
    release_eip_flag: bool = False

    @field_validator("password")
    @classmethod
    def _pw(cls, v: str | None) -> str | None:
        return None if v is None else check_password(v)


class AttachInstances(_Body):
    instances: Annotated[list[Annotated[str, Field(json_schema_extra={"pattern": INSTANCE_RE.pattern})]],
                         Field(min_length=1, max_length=50, json_schema_extra={"uniqueItems": True})]
    password: Password | None = None
    ecs_image_id: TextId = ""
    release_eip_flag: bool = False

    @field_validator("instances")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        for i in v:
            if not INSTANCE_RE.match(i):
                raise ValueError(f"{i!r} is not an instance id (i- and 20 lower-case letters or digits)")
        if len(set(v)) != len(v):
            raise ValueError("lists an instance twice")
        return v


class ResetNode(_Body):
    password: Password | None = None
    ecs_image_id: TextId = ""
    release_eip_flag: bool = False


class CreateInstances(_Body):
    count: Annotated[int, Field(ge=1, le=50)] = 1

    @field_validator("count", mode="before")
    @classmethod
    def _not_bool(cls, v: object) -> object:
        if isinstance(v, bool):  # pydantic would take true for 1 (and 2.0 for 2, which JSON Schema allows)
            raise ValueError("must be an integer, not a boolean")
        return v
