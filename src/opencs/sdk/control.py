"""The signed control-plane API (spec §5, §11 and opencs's own routes), one :class:`Call` per route.

Bodies are the spec's JSON objects: typed keyword arguments where the fields are few, a mapping
(``body=``) where the spec has many (create/scale a cluster).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any

from opencs.sdk.core import Call, QueryLike, Reply, payload_of, seg
from opencs.sdk.models import (
    Accepted,
    AlertRule,
    AttachStatus,
    AuditEntry,
    CertInfo,
    Cluster,
    ClusterCerts,
    ClusterPage,
    Deleted,
    Event,
    Images,
    Instance,
    Invocation,
    Kubeconfig,
    LoginProfile,
    Monitoring,
    NodePage,
    RamReply,
    RegistryLogin,
    Task,
    Trigger,
    Version,
    models_of,
)


def _accepted(r: Reply) -> Accepted:
    return Accepted.from_json(r.payload or {})


def _cluster(cluster_id: str, tail: str = "") -> str:
    return f"/clusters/{seg(cluster_id)}{tail}"


def raw_call(method: str, path: str, *, query: QueryLike | None = None, body: Any = None,
             headers: Mapping[str, str] | None = None) -> Call[Any]:
    """Any signed call; the decoded JSON reply (``None`` for an empty body). ``path`` may carry
    ``?k=v``; ``bytes``/``str`` bodies are sent as they are, anything else as JSON."""
    return Call(method, path, payload_of, query=query, body=body, headers=headers)


def version() -> Call[Version]:
    """``GET /version`` → ``{"version", "api_version"}``."""
    return Call("GET", "/version", lambda r: Version.from_json(r.payload))


def healthz() -> Call[Any]:
    """``GET /healthz`` (unsigned): the server's liveness."""
    return Call("GET", "/healthz", payload_of, signed=False)


def openapi() -> Call[dict[str, Any]]:
    """``GET /openapi.json`` (unsigned): the OpenAPI document of the control-plane API."""
    return Call("GET", "/openapi.json", lambda r: dict(r.payload or {}), signed=False)


# ---------------------------------------------------------------------- clusters (spec §5)


def list_clusters() -> Call[list[Cluster]]:
    """``GET /clusters`` → every cluster the caller may see."""
    return Call("GET", "/clusters", lambda r: models_of(Cluster, r.payload))


def list_clusters_paged(page_number: int = 1, page_size: int = 10) -> Call[ClusterPage]:
    """``GET /api/v1/clusters`` → ``{"clusters": [...], "page_info": {...}}``."""
    return Call("GET", "/api/v1/clusters", lambda r: ClusterPage.from_json(r.payload),
                query={"page_number": page_number, "page_size": page_size})


def describe_cluster(cluster_id: str) -> Call[Cluster]:
    """``GET /clusters/{id}``."""
    return Call("GET", _cluster(cluster_id), lambda r: Cluster.from_json(r.payload))


def create_cluster(body: Mapping[str, Any]) -> Call[Accepted]:
    """``POST /clusters`` (spec §5.4) → ``{"cluster_id", "request_id", "task_id"}``."""
    return Call("POST", "/clusters", _accepted, body=dict(body))


def scale_cluster(cluster_id: str, body: Mapping[str, Any]) -> Call[Accepted]:
    """``PUT /clusters/{id}`` with ``{"size": N, ...}`` (spec §5.5)."""
    return Call("PUT", _cluster(cluster_id), _accepted, body=dict(body))


def delete_cluster(cluster_id: str) -> Call[Accepted]:
    """``DELETE /clusters/{id}``."""
    return Call("DELETE", _cluster(cluster_id), _accepted)


def attach_instances(cluster_id: str, body: Mapping[str, Any]) -> Call[Accepted]:
    """``POST /clusters/{id}/attach`` with ``{"instances": ["i-…"], ...}`` (spec §5.6)."""
    return Call("POST", _cluster(cluster_id, "/attach"), _accepted, body=dict(body))


def remove_node(cluster_id: str, ip: str, release_instance: bool = False) -> Call[Accepted]:
    """``DELETE /clusters/{id}/ip/{ip}?releaseInstance=true|false`` (spec §5.7)."""
    return Call("DELETE", _cluster(cluster_id, f"/ip/{seg(ip)}"), _accepted,
                query={"releaseInstance": release_instance})


def reset_node(cluster_id: str, instance_id: str, body: Mapping[str, Any] | None = None) -> Call[Accepted]:
    """``POST /clusters/{id}/instances/{instance_id}/reset`` (spec §5.8)."""
    return Call("POST", _cluster(cluster_id, f"/instances/{seg(instance_id)}/reset"), _accepted,
                body=dict(body or {}))


def cluster_certs(cluster_id: str, minutes: int | None = None) -> Call[ClusterCerts]:
    """``GET /clusters/{id}/certs`` → ``{"ca", "cert", "key", "serial", "expiration"}`` (PEM text,
    spec §5.11): a new client certificate of the caller's own (``minutes``: its lifetime)."""
    return Call("GET", _cluster(cluster_id, "/certs"), lambda r: ClusterCerts.from_json(r.payload),
                query={"TemporaryDurationMinutes": minutes})


def cluster_nodes(cluster_id: str, page_number: int | None = None, page_size: int | None = None) -> Call[NodePage]:
    """``GET /clusters/{id}/nodes`` → ``{"nodes": [...], "page": {...}}``."""
    return Call("GET", _cluster(cluster_id, "/nodes"), lambda r: NodePage.from_json(r.payload),
                query={"pageNumber": page_number, "pageSize": page_size})


def list_images() -> Call[Images]:
    """``GET /images`` → ``{RegionId: {"items": [{"text", "value"}]}}``."""
    return Call("GET", "/images", lambda r: Images.from_json(r.payload))


# ---------------------------------------------------------------------- certificates and Kubernetes (spec §5.11, §6)


def cert_states(cluster_id: str) -> Call[list[CertInfo]]:
    """``GET /clusters/{id}/certs/states``: the certificates issued for the cluster (a RAM user:
    its own) with their state (valid, expired, revoked)."""
    return Call("GET", _cluster(cluster_id, "/certs/states"),
                lambda r: models_of(CertInfo, (r.payload or {}).get("certs")))


def revoke_cert(cluster_id: str, serial: str) -> Call[CertInfo]:
    """``DELETE /clusters/{id}/certs/{serial}``: master_url refuses it from its next connection on."""
    return Call("DELETE", _cluster(cluster_id, f"/certs/{seg(serial)}"), lambda r: CertInfo.from_json(r.payload))


def revoke_my_certs(cluster_id: str) -> Call[list[str]]:
    """``DELETE /clusters/{id}/certs``: every certificate of the caller on the cluster; their serials."""
    return Call("DELETE", _cluster(cluster_id, "/certs"),
                lambda r: [str(x) for x in (r.payload or {}).get("revoked") or []])


def kubeconfig(cluster_id: str, *, private_ip: bool = False, minutes: int | None = None) -> Call[Kubeconfig]:
    """``GET /k8s/{id}/user_config`` (DescribeClusterUserKubeconfig, spec §6.8): a kubeconfig with a
    client certificate of the caller's own (``minutes``: its lifetime, 15–4320)."""
    return Call("GET", f"/k8s/{seg(cluster_id)}/user_config", lambda r: Kubeconfig.from_json(r.payload),
                query={"PrivateIpAddress": private_ip or None, "TemporaryDurationMinutes": minutes})


def attach_script(cluster_id: str, options: Mapping[str, Any] | None = None, *,
                  expired: int | None = None) -> Call[str]:
    """``POST /clusters/{id}/attachscript`` (DescribeClusterAttachScripts, spec §6.10): the shell
    line that joins the machine it runs on (single-use token; ``expired``: Unix time)."""
    body: dict[str, Any] = {"options": dict(options or {})}
    if expired is not None:
        body["expired"] = int(expired)
    return Call("POST", _cluster(cluster_id, "/attachscript"), lambda r: str(r.payload or ""), body=body)


def scale_out(cluster_id: str, body: Mapping[str, Any]) -> Call[Accepted]:
    """``POST /api/v2/clusters/{id}`` (ScaleOutCluster, spec §6.7): ``{"count": N, ...}`` more workers."""
    return Call("POST", f"/api/v2/clusters/{seg(cluster_id)}", _accepted, body=dict(body))


def _remove_body(nodes: list[str], release_node: bool, drain_node: bool) -> dict[str, Any]:
    return {"nodes": list(nodes), "release_node": release_node, "drain_node": drain_node}


def remove_nodes(cluster_id: str, nodes: list[str], *, release_node: bool = False,
                 drain_node: bool = True) -> Call[Accepted]:
    """``POST /api/v2/clusters/{id}/nodes/remove`` (RemoveClusterNodes): worker node names,
    instance ids or IPs; cordoned, drained (``drain_node``), removed, released (``release_node``)."""
    return Call("POST", f"/api/v2/clusters/{seg(cluster_id)}/nodes/remove", _accepted,
                body=_remove_body(nodes, release_node, drain_node))


def delete_cluster_nodes(cluster_id: str, nodes: list[str], *, release_node: bool = False,
                         drain_node: bool = True) -> Call[Accepted]:
    """``POST /clusters/{id}/nodes`` (DeleteClusterNodes, spec §6.13): as :func:`remove_nodes`."""
    return Call("POST", _cluster(cluster_id, "/nodes"), _accepted, body=_remove_body(nodes, release_node, drain_node))


# ---------------------------------------------------------------------- what the attach script calls (token, unsigned)


def _token(token: str, tail: str = "") -> str:
    return f"/attach/{seg(token)}{tail}"


def attach_status(token: str) -> Call[AttachStatus]:
    """``GET /attach/{token}``: the attach script's token, unused or the join's task and state."""
    return Call("GET", _token(token), lambda r: AttachStatus.from_json(r.payload), signed=False)


def attach_node_script(token: str) -> Call[str]:
    """``GET /attach/{token}/script``: the shell script the attach line fetches and runs."""
    return Call("GET", _token(token, "/script"), lambda r: str(r.payload or ""), signed=False)


def attach_join(token: str) -> Call[Accepted]:
    """``POST /attach/{token}``: the machine this call comes from joins the token's cluster (once)."""
    return Call("POST", _token(token), _accepted, signed=False)


# ---------------------------------------------------------------------- tasks and instances


def describe_task(task_id: str) -> Call[Task]:
    """``GET /tasks/{task_id}`` (DescribeTaskInfo: state, stages, error ...)."""
    return Call("GET", f"/tasks/{seg(task_id)}", lambda r: Task.from_json(r.payload))


def list_instances(free_only: bool = False) -> Call[list[Instance]]:
    """``GET /instances``: the machine pool; ``free_only`` keeps those in no cluster."""
    return Call("GET", "/instances", lambda r: models_of(Instance, r.payload),
                query={"free": "true"} if free_only else None)


def create_instances(count: int) -> Call[Accepted]:
    """``POST /instances`` with ``{"count": N}``."""
    return Call("POST", "/instances", _accepted, body={"count": int(count)})


def delete_instance(instance_id: str) -> Call[Accepted]:
    """``DELETE /instances/{id}`` (a free instance)."""
    return Call("DELETE", f"/instances/{seg(instance_id)}", _accepted)


def register_instance(body: Mapping[str, Any]) -> Call[Instance]:
    """``POST /instances/register``: an existing Docker host over SSH
    (``{"ssh": "user@host[:port]", "password" | "private_key", "known_host_key"?, "remote_socket"?}``)."""
    return Call("POST", "/instances/register", lambda r: Instance.from_json(r.payload), body=dict(body))


# ---------------------------------------------------------------------- triggers (spec §11) and audit


def create_trigger(cluster_id: str, project_id: str, action: str = "redeploy", *, service: str = "",
                   image_update: bool = False, signed: bool | None = None) -> Call[Trigger]:
    """``POST /clusters/{id}/triggers``; ``action`` is ``redeploy`` or ``scaling`` (which names a
    ``service``). The reply holds the ``secret`` (and for a ``signed`` trigger the Standard
    Webhooks ``signing_secret``), shown this once. ``signed=None``: the server's default."""
    body: dict[str, Any] = {"project_id": project_id, "action": action, "image_update": image_update}
    if service:
        body["service"] = service
    if signed is not None:
        body["signed"] = signed
    return Call("POST", _cluster(cluster_id, "/triggers"), lambda r: Trigger.from_json(r.payload), body=body)


def list_triggers(cluster_id: str, project_id: str | None = None) -> Call[list[Trigger]]:
    """``GET /clusters/{id}/triggers[?project_id=]`` (no secrets)."""
    return Call("GET", _cluster(cluster_id, "/triggers"), lambda r: models_of(Trigger, r.payload),
                query={"project_id": project_id})


def delete_trigger(cluster_id: str, trigger_id: str) -> Call[Deleted]:
    """``DELETE /clusters/{id}/triggers/{trigger_id}``."""
    return Call("DELETE", _cluster(cluster_id, f"/triggers/{seg(trigger_id)}"),
                lambda r: Deleted.from_json(r.payload))


def rotate_trigger(cluster_id: str, trigger_id: str, grace_seconds: int = 3600) -> Call[Trigger]:
    """``POST /clusters/{id}/triggers/{trigger_id}/rotate``: a new secret (shown once), same URL;
    the old secret keeps working for ``grace_seconds``."""
    return Call("POST", _cluster(cluster_id, f"/triggers/{seg(trigger_id)}/rotate"),
                lambda r: Trigger.from_json(r.payload), body={"grace_seconds": int(grace_seconds)})


def invoke_trigger(trigger_url: str, secret: str = "", *, type: str | None = None, step: int | None = None,
                   wait: bool = False, timeout: float | None = None,
                   signing_secret: str | None = None) -> Call[Invocation]:
    """``GET <trigger_url>&secret=…`` — what a CI job's ``curl`` does (not signed with an
    AccessKey; the secret is the credential). A signed trigger takes ``signing_secret`` instead:
    the call then carries Standard Webhooks headers (``webhook-id``/``-timestamp``/``-signature``).
    ``type``/``step`` for scaling triggers (``scale_out``/``scale_in``); ``wait=True`` answers when
    the task has ended (a failed task is a :class:`ConflictError`)."""
    query = {"secret": secret or None, "type": type, "step": step, "wait": "true" if wait else None,
             "timeout": timeout}
    headers = webhook_headers(signing_secret, b"") if signing_secret else None
    return Call("GET", "", lambda r: Invocation.from_json(r.payload), query=query, url=trigger_url, headers=headers)


def webhook_headers(signing_secret: str, body: bytes, msg_id: str | None = None,
                    timestamp: int | None = None) -> dict[str, str]:
    """Standard Webhooks headers of one message: ``v1,`` base64 HMAC-SHA256 over
    ``<id>.<timestamp>.<body>``, keyed with the base64 part of the ``whsec_…`` secret."""
    msg_id = msg_id or "msg_" + secrets.token_hex(12)
    ts = int(time.time()) if timestamp is None else timestamp
    try:
        key = base64.b64decode(signing_secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError("a signing secret is whsec_ and base64 (the trigger's create reply)") from None
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    signature = "v1," + base64.b64encode(mac).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def audit_log(action: str | None = None, user: str | None = None, since: str | None = None,
              limit: int = 100) -> Call[list[AuditEntry]]:
    """``GET /audit``: the caller's account's newest ``limit`` entries (oldest of them first)."""
    return Call("GET", "/audit", lambda r: models_of(AuditEntry, (r.payload or {}).get("entries")),
                query={"action": action, "user": user, "since": since, "limit": limit})


# ---------------------------------------------------------------------- events, monitoring, alert rules (issue 12)


def cluster_events(cluster_id: str, *, project: str | None = None, kind: str | None = None, after: int = 0,
                   limit: int = 100) -> Call[list[Event]]:
    """``GET /clusters/{id}/events``: oldest first, the ``limit`` after the event id ``after`` (0: the
    newest ``limit``)."""
    return Call("GET", _cluster(cluster_id, "/events"), lambda r: models_of(Event, (r.payload or {}).get("events")),
                query={"project": project, "kind": kind, "after": after or None, "limit": limit})


def events_stream(cluster_id: str, *, project: str | None = None, kind: str | None = None,
                  after: int = 0) -> Call[Reply]:
    """``GET /clusters/{id}/events?follow=true``: server-sent events, read line by line."""
    return Call("GET", _cluster(cluster_id, "/events"), lambda r: r, stream=True,
                query={"project": project, "kind": kind, "after": after or None, "follow": True})


def monitoring_status() -> Call[Monitoring]:
    """``GET /monitoring``: whether the Prometheus + Alertmanager stack runs, its URLs, rule count."""
    return Call("GET", "/monitoring", lambda r: Monitoring.from_json(r.payload))


def enable_monitoring(prometheus_port: int | None = None, alertmanager_port: int | None = None) -> Call[Monitoring]:
    """``POST /monitoring/enable`` (operator): run the stack, kept across restarts."""
    body = {k: v for k, v in (("prometheus_port", prometheus_port), ("alertmanager_port", alertmanager_port)) if v}
    return Call("POST", "/monitoring/enable", lambda r: Monitoring.from_json(r.payload), body=body)


def disable_monitoring() -> Call[Monitoring]:
    """``POST /monitoring/disable``."""
    return Call("POST", "/monitoring/disable", lambda r: Monitoring.from_json(r.payload), body={})


def create_alert_rule(cluster_id: str, body: Mapping[str, Any]) -> Call[AlertRule]:
    """``POST /clusters/{id}/alerts`` with ``{"project_id", "service", "scale_out": {"cpu_above",
    "for", "step"}, "scale_in": {...}, "min_replicas", "max_replicas", "cooldown"}``."""
    return Call("POST", _cluster(cluster_id, "/alerts"), lambda r: AlertRule.from_json(r.payload), body=dict(body))


def list_alert_rules(cluster_id: str) -> Call[list[AlertRule]]:
    """``GET /clusters/{id}/alerts``."""
    return Call("GET", _cluster(cluster_id, "/alerts"), lambda r: models_of(AlertRule, r.payload))


def delete_alert_rule(cluster_id: str, rule_id: str) -> Call[Deleted]:
    """``DELETE /clusters/{id}/alerts/{rule_id}`` (its trigger goes with it)."""
    return Call("DELETE", _cluster(cluster_id, f"/alerts/{seg(rule_id)}"), lambda r: Deleted.from_json(r.payload))


# ---------------------------------------------------------------------- the RAM API (2015-05-01) on "/"

RAM_VERSION = "2015-05-01"


def ram(action: str, params: Mapping[str, Any] | None = None) -> Call[RamReply]:
    """One RAM API action (``CreateUser``, ``CreateAccessKey``, ``AttachPolicyToUser`` ...) on ``/``,
    signed like every call; the action and version go in ``x-acs-action``/``x-acs-version``, the
    parameters (``UserName``, ``PolicyDocument`` ...) in the query."""
    return Call("POST", "/", lambda r: RamReply.from_json(r.payload), query=dict(params or {}),
                headers=_ram_headers(action))


def _ram_flags(reset: bool | None, mfa: bool | None) -> dict[str, str]:
    return {k: "true" if v else "false" for k, v in (("PasswordResetRequired", reset), ("MFABindRequired", mfa))
            if v is not None}


def create_login_profile(user_name: str, password: str, *, password_reset_required: bool = False,
                         mfa_bind_required: bool = False) -> Call[LoginProfile]:
    """RAM ``CreateLoginProfile``: the user may sign in to the console with ``<user>@<account>`` and
    ``password`` (sent as the official SDKs send it, a parameter of the signed call)."""
    q = {"UserName": user_name, "Password": password, **_ram_flags(password_reset_required, mfa_bind_required)}
    return Call("POST", "/", lambda r: LoginProfile.from_json(_ram_part(r, "LoginProfile")), query=q,
                headers=_ram_headers("CreateLoginProfile"))


def get_login_profile(user_name: str) -> Call[LoginProfile]:
    """RAM ``GetLoginProfile`` (never the password)."""
    return Call("POST", "/", lambda r: LoginProfile.from_json(_ram_part(r, "LoginProfile")),
                query={"UserName": user_name}, headers=_ram_headers("GetLoginProfile"))


def update_login_profile(user_name: str, *, password: str | None = None, password_reset_required: bool | None = None,
                         mfa_bind_required: bool | None = None) -> Call[RamReply]:
    """RAM ``UpdateLoginProfile``: what is given changes (a new password ends the user's console sessions)."""
    q = {"UserName": user_name, **({"Password": password} if password is not None else {}),
         **_ram_flags(password_reset_required, mfa_bind_required)}
    return Call("POST", "/", lambda r: RamReply.from_json(r.payload), query=q,
                headers=_ram_headers("UpdateLoginProfile"))


def delete_login_profile(user_name: str) -> Call[RamReply]:
    """RAM ``DeleteLoginProfile``: no console logon any more (its sessions end)."""
    return Call("POST", "/", lambda r: RamReply.from_json(r.payload), query={"UserName": user_name},
                headers=_ram_headers("DeleteLoginProfile"))


def _ram_headers(action: str) -> dict[str, str]:
    return {"x-acs-action": action, "x-acs-version": RAM_VERSION}


def _ram_part(r: Reply, key: str) -> Any:
    doc = r.payload
    return doc.get(key) if isinstance(doc, dict) else None


def set_registry_password(password: str, *, update: bool = False) -> Call[RegistryLogin]:
    """The caller's password for ``docker login`` to the bundled registry: ``PUT /users``
    (CreateUserInfo), or ``POST /users`` (UpdateUserInfo) with ``update``; the reply names the login."""
    return Call("POST" if update else "PUT", "/users", lambda r: RegistryLogin.from_json(r.payload),
                body={"User": {"Password": password}})


def metrics(token: str | None = None) -> Call[str]:
    """``GET /metrics`` (Prometheus text, unsigned; open to loopback peers, else a bearer token)."""
    headers = {"authorization": f"Bearer {token}"} if token else None
    return Call("GET", "/metrics", lambda r: str(payload_of(r) or ""), headers=headers, signed=False)


def container_metrics(token: str | None = None) -> Call[str]:
    """``GET /metrics/containers``: CPU, memory, network and block I/O of every cluster's containers
    and nodes (Prometheus text; access as :func:`metrics`)."""
    headers = {"authorization": f"Bearer {token}"} if token else None
    return Call("GET", "/metrics/containers", lambda r: str(payload_of(r) or ""), headers=headers, signed=False)
