"""The signed control-plane API (spec §5, §11 and opencs's own routes), one :class:`Call` per route.

Bodies are the spec's JSON objects: typed keyword arguments where the fields are few, a mapping
(``body=``) where the spec has many (create/scale a cluster).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opencs.sdk.core import Call, Reply, payload_of, seg
from opencs.sdk.models import (
    Accepted,
    AuditEntry,
    Cluster,
    ClusterCerts,
    ClusterPage,
    Deleted,
    Images,
    Instance,
    Invocation,
    NodePage,
    Task,
    Trigger,
    Version,
    models_of,
)


def _accepted(r: Reply) -> Accepted:
    return Accepted.from_json(r.payload or {})


def _cluster(cluster_id: str, tail: str = "") -> str:
    return f"/clusters/{seg(cluster_id)}{tail}"


def version() -> Call[Version]:
    """``GET /version`` → ``{"version", "api_version"}``."""
    return Call("GET", "/version", lambda r: Version.from_json(r.payload))


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


def cluster_certs(cluster_id: str) -> Call[ClusterCerts]:
    """``GET /clusters/{id}/certs`` → ``{"ca", "cert", "key"}`` (PEM text, spec §5.11)."""
    return Call("GET", _cluster(cluster_id, "/certs"), lambda r: ClusterCerts.from_json(r.payload))


def cluster_nodes(cluster_id: str, page_number: int | None = None, page_size: int | None = None) -> Call[NodePage]:
    """``GET /clusters/{id}/nodes`` → ``{"nodes": [...], "page": {...}}``."""
    return Call("GET", _cluster(cluster_id, "/nodes"), lambda r: NodePage.from_json(r.payload),
                query={"pageNumber": page_number, "pageSize": page_size})


def list_images() -> Call[Images]:
    """``GET /images`` → ``{RegionId: {"items": [{"text", "value"}]}}``."""
    return Call("GET", "/images", lambda r: Images.from_json(r.payload))


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
                   image_update: bool = False) -> Call[Trigger]:
    """``POST /clusters/{id}/triggers``; ``action`` is ``redeploy`` or ``scaling`` (which names a
    ``service``). The reply holds the ``secret``, shown this once."""
    body: dict[str, Any] = {"project_id": project_id, "action": action, "image_update": image_update}
    if service:
        body["service"] = service
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


def invoke_trigger(trigger_url: str, secret: str, *, type: str | None = None, step: int | None = None,
                   wait: bool = False, timeout: float | None = None) -> Call[Invocation]:
    """``GET <trigger_url>&secret=…`` — what a CI job's ``curl`` does (unsigned; the secret is the
    credential). ``type``/``step`` for scaling triggers (``scale_out``/``scale_in``); ``wait=True``
    answers when the task has ended (a failed task is a :class:`ConflictError`)."""
    query = {"secret": secret, "type": type, "step": step, "wait": "true" if wait else None, "timeout": timeout}
    return Call("GET", "", lambda r: Invocation.from_json(r.payload), query=query, url=trigger_url)


def audit_log(action: str | None = None, user: str | None = None, since: str | None = None,
              limit: int = 100) -> Call[list[AuditEntry]]:
    """``GET /audit``: the caller's account's newest ``limit`` entries (oldest of them first)."""
    return Call("GET", "/audit", lambda r: models_of(AuditEntry, (r.payload or {}).get("entries")),
                query={"action": action, "user": user, "since": since, "limit": limit})


def metrics(token: str | None = None) -> Call[str]:
    """``GET /metrics`` (Prometheus text, unsigned; open to loopback peers, else a bearer token)."""
    headers = {"authorization": f"Bearer {token}"} if token else None
    return Call("GET", "/metrics", lambda r: str(payload_of(r) or ""), headers=headers, signed=False)
