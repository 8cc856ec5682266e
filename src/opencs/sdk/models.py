"""Typed replies of both APIs.

Each model is a frozen dataclass of the fields the spec (and opencs) documents, and at the same time
the ``dict`` of the reply exactly as the server sent it: ``cluster.master_url`` and
``cluster["master_url"]`` both work, fields a newer server adds are not lost, ``json.dumps`` takes
it as it is, and code written for the SDK's earlier plain-dict replies keeps working. The
attributes are parsed once; ``to_dict()`` gives a copy of the reply.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

M = TypeVar("M", bound="Model")


def _convert(tp: Any, value: Any) -> Any:
    """``value`` (decoded JSON) as the annotated type; lenient: a wrong shape becomes the empty value."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value)
    if isinstance(tp, type) and issubclass(tp, Model):
        return tp.from_json(value) if isinstance(value, Mapping) else tp.from_json({})
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_convert(item, v) for v in value] if isinstance(value, list) else []
    if origin is dict:
        _, item = typing.get_args(tp)
        return {str(k): _convert(item, v) for k, v in value.items()} if isinstance(value, Mapping) else {}
    if tp is str:
        return "" if value is None else str(value)
    if tp is bool:
        return value.lower() in ("true", "1") if isinstance(value, str) else bool(value)
    if tp is int:
        try:
            return int(value)
        except (TypeError, ValueError):
            return 0
    return value  # Any


@dataclass(frozen=True, eq=False)
class Model(dict[str, Any]):
    """Base of every reply model (see the module docstring)."""

    #: JSON key of a field when it differs from the attribute name (Docker's ``Name``, ``Driver`` ...)
    KEYS: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_json(cls, data: Any) -> Self:
        raw = data if isinstance(data, Mapping) else {}
        hints = typing.get_type_hints(cls)
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = cls.KEYS.get(f.name, f.name)
            if f.init and key in raw:
                kw[f.name] = _convert(hints[f.name], raw[key])
        model = cls(**kw)
        dict.update(model, raw)  # the reply as sent (frozen guards the attributes, not the dict)
        return model

    @property
    def raw(self) -> dict[str, Any]:
        """The reply as the server sent it (this object, as a plain ``dict``)."""
        return dict(self)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the reply as sent."""
        return copy.deepcopy(dict(self))


def models_of(cls: type[M], data: Any) -> list[M]:
    """A JSON array as models (anything else: an empty list)."""
    return [cls.from_json(x) for x in data if isinstance(x, Mapping)] if isinstance(data, list) else []


# ---------------------------------------------------------------------- control plane


@dataclass(frozen=True, eq=False)
class Version(Model):
    version: str = ""
    api_version: str = ""


@dataclass(frozen=True, eq=False)
class Cluster(Model):
    """The Cluster object (spec §5.1)."""

    cluster_id: str = ""
    name: str = ""
    cluster_type: str = ""
    state: str = ""
    size: int = 0
    created: str = ""
    updated: str = ""
    master_url: str = ""
    routing_url: str = ""
    region_id: str = ""
    instance_type: str = ""
    network_mode: str = ""
    agent_version: str = ""


@dataclass(frozen=True, eq=False)
class PageInfo(Model):
    page_number: int = 0
    page_size: int = 0
    total_count: int = 0


@dataclass(frozen=True, eq=False)
class ClusterPage(Model):
    """``GET /api/v1/clusters``."""

    clusters: list[Cluster] = field(default_factory=list)
    page_info: PageInfo = field(default_factory=PageInfo)


@dataclass(frozen=True, eq=False)
class Accepted(Model):
    """The reply of a call that started a task (``202``): follow ``task_id`` with ``wait_task``."""

    task_id: str = ""
    request_id: str = ""
    cluster_id: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)  # attach: one entry per instance
    KEYS: ClassVar[dict[str, str]] = {"results": "list"}


@dataclass(frozen=True, eq=False)
class ClusterCerts(Model):
    """``GET /clusters/{id}/certs``: PEM text. The private key never shows in ``repr``."""

    ca: str = ""
    cert: str = ""
    key: str = field(default="", repr=False)
    serial: str = ""
    expiration: str = ""
    config: str = field(default="", repr=False)  # a Kubernetes cluster's: the same as a kubeconfig


@dataclass(frozen=True, eq=False)
class CertInfo(Model):
    """A certificate issued for a cluster (``GET /clusters/{id}/certs/states``), without its key."""

    serial: str = ""
    cluster_id: str = ""
    user_id: str = ""
    user_name: str = ""
    access_key_id: str = ""
    created: str = ""
    expiration: str = ""
    state: str = ""
    revoked: str | None = None


@dataclass(frozen=True, eq=False)
class Kubeconfig(Model):
    """``GET /k8s/{id}/user_config``: ``config`` is the kubeconfig YAML (it holds a private key)."""

    config: str = field(default="", repr=False)
    expiration: str = ""


@dataclass(frozen=True, eq=False)
class Node(Model):
    """A node of a cluster (DescribeClusterNodes), also an instance of the machine pool."""

    instance_id: str = ""
    role: str = ""
    instance_role: str = ""
    state: str = ""
    health: str = ""
    ip_address: list[str] = field(default_factory=list)
    docker_endpoint: str = ""
    swarm_node_id: str = ""
    instance_type: str = ""
    source: str = ""
    creation_time: str = ""
    cluster_id: str = ""

    @property
    def ip(self) -> str:
        """The node's private IP (the one ``remove_node`` takes)."""
        return self.ip_address[0] if self.ip_address else ""


Instance = Node


@dataclass(frozen=True, eq=False)
class NodePage(Model):
    nodes: list[Node] = field(default_factory=list)
    page: PageInfo = field(default_factory=PageInfo)


@dataclass(frozen=True, eq=False)
class Image(Model):
    region: str = ""
    value: str = ""
    text: str = ""


@dataclass(frozen=True, eq=False)
class Images(Model):
    """``GET /images``: ``{region: {"items": [{"text", "value"}]}}``; ``images`` flattens it."""

    @property
    def images(self) -> list[Image]:
        out = []
        for region, val in self.raw.items():
            items = val.get("items") if isinstance(val, Mapping) else None
            for it in items if isinstance(items, list) else []:
                if isinstance(it, Mapping):
                    out.append(Image.from_json({"region": region, **it}))
        return out


@dataclass(frozen=True, eq=False)
class Stage(Model):
    name: str = ""
    state: str = ""
    message: str = ""
    start_time: str | None = None
    end_time: str | None = None


@dataclass(frozen=True, eq=False)
class TaskError(Model):
    code: str = ""
    message: str = ""


@dataclass(frozen=True, eq=False)
class Task(Model):
    """DescribeTaskInfo (``GET /tasks/{id}``)."""

    task_id: str = ""
    task_type: str = ""
    cluster_id: str = ""
    state: str = ""
    current_stage: str | None = None
    stages: list[Stage] = field(default_factory=list)
    error: TaskError | None = None
    target: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] | None = None
    created: str = ""
    updated: str = ""


@dataclass(frozen=True, eq=False)
class Trigger(Model):
    """A trigger (spec §11). ``secret`` is in the create and rotate replies only, never in ``repr``."""

    id: str = ""
    cluster_id: str = ""
    project_id: str = ""
    action: str = ""
    service: str = ""
    image_update: bool = False
    token: str = ""
    trigger_url: str = ""
    created: str = ""
    last_invoked: str = ""
    previous_secret_valid_until: str | None = None
    secret: str = field(default="", repr=False)
    signed: bool = False
    signing_secret: str = field(default="", repr=False)
    request_id: str = ""


@dataclass(frozen=True, eq=False)
class Deleted(Model):
    id: str = ""
    request_id: str = ""


@dataclass(frozen=True, eq=False)
class Invocation(Model):
    """The reply of a trigger URL (``/hook/trigger``)."""

    trigger_id: str = ""
    action: str = ""
    task_id: str = ""
    state: str = ""
    request_id: str = ""
    error: TaskError | None = None


@dataclass(frozen=True, eq=False)
class AuditEntry(Model):
    seq: int = 0
    time: str = ""
    account_id: str = ""
    user_name: str = ""
    access_key_id: str = ""
    action: str = ""
    resource: str = ""
    source: str = ""
    request_id: str = ""
    outcome: str = ""
    hash: str = ""


@dataclass(frozen=True, eq=False)
class Event(Model):
    """What happened to a cluster (``GET /clusters/{id}/events``): a task's stage, a node's health,
    a container that died, a scaling decision with its cause."""

    id: int = 0
    cluster_id: str = ""
    project: str = ""
    kind: str = ""
    reason: str = ""
    message: str = ""
    time: str = ""


@dataclass(frozen=True, eq=False)
class AlertRule(Model):
    """A scaling rule on a service (``/clusters/{id}/alerts``): cpu above/below for a while →
    scale out/in through its trigger."""

    id: str = ""
    cluster_id: str = ""
    project_id: str = ""
    service: str = ""
    trigger_id: str = ""
    scale_out: dict[str, Any] | None = None
    scale_in: dict[str, Any] | None = None
    min_replicas: int = 0
    max_replicas: int = 0
    created: str = ""


@dataclass(frozen=True, eq=False)
class Monitoring(Model):
    """The monitoring stack (``GET /monitoring``): on or off, Prometheus and Alertmanager."""

    enabled: bool = False
    clusters: list[str] = field(default_factory=list)
    alert_rules: int = 0
    last_error: str = ""


@dataclass(frozen=True, eq=False)
class AttachStatus(Model):
    """An attach script's token (``GET /attach/{token}``): unused, or the join's task and state."""

    cluster_id: str = ""
    instance_id: str = ""
    task_id: str = ""
    state: str = ""
    stage: str = ""
    message: str = ""
    request_id: str = ""


@dataclass(frozen=True, eq=False)
class RegistryLogin(Model):
    """``PUT|POST /users`` (Container Registry CreateUserInfo/UpdateUserInfo): the login name
    ``docker login`` takes with the password just set (never the password)."""

    data: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""

    @property
    def login_name(self) -> str:
        return str(self.data.get("loginName") or "")


@dataclass(frozen=True, eq=False)
class RamReply(Model):
    """A RAM API (2015-05-01) reply: the action's own JSON (``User``, ``AccessKey``, ``Policies`` ...)."""

    request_id: str = ""
    KEYS: ClassVar[dict[str, str]] = {"request_id": "RequestId"}


@dataclass(frozen=True, eq=False)
class LoginProfile(Model):
    """A RAM user's console logon (RAM CreateLoginProfile/GetLoginProfile ``LoginProfile``), never its
    password."""

    user_name: str = ""
    password_reset_required: bool = False
    mfa_bind_required: bool = False
    create_date: str = ""
    KEYS: ClassVar[dict[str, str]] = {"user_name": "UserName", "password_reset_required": "PasswordResetRequired",
                                      "mfa_bind_required": "MFABindRequired", "create_date": "CreateDate"}


# ---------------------------------------------------------------------- Application API (spec §10)


@dataclass(frozen=True, eq=False)
class Container(Model):
    name: str = ""
    node: str = ""
    ip: str = ""
    running: bool = False
    status: str = ""
    health: str = ""


@dataclass(frozen=True, eq=False)
class Service(Model):
    """The Service object (spec §10.17); ``id`` is ``<project>_<service>``."""

    id: str = ""
    name: str = ""
    project: str = ""
    description: str = ""
    created: str = ""
    updated: str = ""
    desired_state: str = ""
    current_state: str = ""
    definition: dict[str, Any] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)
    containers: dict[str, Container] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Project(Model):
    """The Project object (spec §10.4) with opencs's ``task_id``, ``message`` and ``blue_green``."""

    name: str = ""
    description: str = ""
    template: str = ""
    version: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    created: str = ""
    updated: str = ""
    desired_state: str = ""
    current_state: str = ""
    services: list[Service] = field(default_factory=list)
    task_id: str = ""
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    blue_green: dict[str, Any] | None = None


@dataclass(frozen=True, eq=False)
class Volume(Model):
    """A data volume (spec §10.24, Docker's field names)."""

    name: str = ""
    driver: str = ""
    mountpoint: str = ""
    labels: dict[str, str] | None = None
    scope: str = ""
    node: str = ""
    refs: list[dict[str, Any]] = field(default_factory=list)
    KEYS: ClassVar[dict[str, str]] = {"name": "Name", "driver": "Driver", "mountpoint": "Mountpoint",
                                      "labels": "Labels", "scope": "Scope", "node": "Node", "refs": "Refs"}


__all__ = [
    "Accepted", "AlertRule", "AttachStatus", "AuditEntry", "CertInfo", "Cluster", "ClusterCerts", "ClusterPage",
    "Container", "Deleted", "Event", "Image", "Images", "Instance", "Invocation", "Kubeconfig", "LoginProfile", "Model",
    "Monitoring", "Node", "NodePage", "PageInfo", "Project", "RamReply", "RegistryLogin", "Service", "Stage", "Task",
    "TaskError", "Trigger", "Version", "Volume", "models_of",
]
