"""The Application API of a cluster (spec §10), one :class:`Call` per route: projects, services,
volumes. Served at the cluster's ``master_url`` over mutual TLS with the cluster's certificates;
nothing here is signed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opencs.sdk.core import Call, Reply, seg
from opencs.sdk.models import Accepted, Project, Service, Volume, models_of


def _none(r: Reply) -> None:
    return None


def _text(r: Reply) -> str:
    return r.payload if isinstance(r.payload, str) else ""


def _accepted(r: Reply) -> Accepted:
    return Accepted.from_json(r.payload if isinstance(r.payload, Mapping) else {})


def _project(name: str, tail: str = "") -> str:
    return f"/projects/{seg(name)}{tail}"


def _service(service_id: str, tail: str = "") -> str:
    return f"/services/{seg(service_id)}{tail}"


def _created_name(r: Reply) -> str:
    return str(r.headers.get("location", "")).rsplit("/", 1)[-1]


# ---------------------------------------------------------------------- projects (§10.4–10.16)


def list_projects(q: str | None = None, *, services: bool = True, containers: bool = True) -> Call[list[Project]]:
    """``GET /projects/`` (``q`` filters by name)."""
    return Call("GET", "/projects/", lambda r: models_of(Project, r.payload),
                query={"q": q, "services": services, "containers": containers})


def create_project(name: str, template: str, *, version: str | None = None, description: str | None = None,
                   environment: Mapping[str, str] | None = None, latest_image: bool = False) -> Call[str]:
    """``POST /projects/`` with a Compose template; returns the project's name at once (``201``)
    while the deployment runs: follow it with ``wait_project``."""
    body: dict[str, Any] = {"name": name, "template": template}
    for key, value in (("version", version), ("description", description)):
        if value is not None:
            body[key] = value
    if environment:
        body["environment"] = dict(environment)
    if latest_image:
        body["latest_image"] = True
    return Call("POST", "/projects/", lambda r: _created_name(r) or name, body=body)


def get_project(name: str, *, services: bool = True, containers: bool = True) -> Call[Project]:
    """``GET /projects/{name}``."""
    return Call("GET", _project(name), lambda r: Project.from_json(r.payload),
                query={"services": services, "containers": containers})


def update_project(name: str, template: str | None = None, *, version: str | None = None,
                   description: str | None = None, environment: Mapping[str, str] | None = None,
                   latest_image: bool = False, blue_green: bool = False,
                   weights: Mapping[str, int] | None = None, health_timeout: int | None = None) -> Call[Accepted]:
    """``POST /projects/{name}/update`` (§10.12). ``blue_green=True`` runs the new version beside the
    old one (§10.13) and splits traffic by ``weights`` ``{"old": N, "new": 100-N}``; during such a
    release, ``weights`` alone moves the split. The reply's ``task_id`` is set for blue-green."""
    body: dict[str, Any] = {}
    for key, value in (("template", template), ("version", version), ("description", description),
                       ("health_timeout", health_timeout)):
        if value is not None:
            body[key] = value
    if environment is not None:
        body["environment"] = dict(environment)
    if latest_image:
        body["latest_image"] = True
    if blue_green:
        body["update_method"] = "blue-green"
    if weights is not None:
        body["weights"] = dict(weights)
    return Call("POST", _project(name, "/update"), _accepted, body=body)


def confirm_update(name: str, force: bool = True) -> Call[Accepted]:
    """``POST /projects/{name}/confirm-update?force=`` (§10.14): finish a blue-green release."""
    return Call("POST", _project(name, "/confirm-update"), _accepted, query={"force": force})


def rollback_update(name: str, force: bool = True) -> Call[Accepted]:
    """``POST /projects/{name}/rollback-update?force=`` (§10.15): back to the old version."""
    return Call("POST", _project(name, "/rollback-update"), _accepted, query={"force": force})


def start_project(name: str) -> Call[None]:
    """``POST /projects/{name}/start`` (answers when started)."""
    return Call("POST", _project(name, "/start"), _none)


def stop_project(name: str, timeout: int | None = None) -> Call[None]:
    """``POST /projects/{name}/stop?t=`` (answers when stopped)."""
    return Call("POST", _project(name, "/stop"), _none, query={"t": timeout})


def kill_project(name: str, signal: str | None = None) -> Call[None]:
    """``POST /projects/{name}/kill?signal=`` (default ``KILL``)."""
    return Call("POST", _project(name, "/kill"), _none, query={"signal": signal})


def redeploy_project(name: str) -> Call[None]:
    """``POST /projects/{name}/redeploy``: new containers with the newest image of each tag
    (answers at once; ``wait_project`` follows it)."""
    return Call("POST", _project(name, "/redeploy"), _none)


def delete_project(name: str, *, force: bool = False, volumes: bool = False) -> Call[None]:
    """``DELETE /projects/{name}?force=&v=`` (answers when removed)."""
    return Call("DELETE", _project(name), _none, query={"force": force, "v": volumes})


# ---------------------------------------------------------------------- services (§10.17–10.23)


def list_services(q: str | None = None, *, containers: bool = True) -> Call[list[Service]]:
    """``GET /services/``."""
    return Call("GET", "/services/", lambda r: models_of(Service, r.payload),
                query={"q": q, "containers": containers})


def get_service(service_id: str, *, containers: bool = True) -> Call[Service]:
    """``GET /services/{project_service}``."""
    return Call("GET", _service(service_id), lambda r: Service.from_json(r.payload),
                query={"containers": containers})


def start_service(service_id: str) -> Call[None]:
    return Call("POST", _service(service_id, "/start"), _none)


def stop_service(service_id: str, timeout: int | None = None) -> Call[None]:
    return Call("POST", _service(service_id, "/stop"), _none, query={"t": timeout})


def kill_service(service_id: str, signal: str | None = None) -> Call[None]:
    return Call("POST", _service(service_id, "/kill"), _none, query={"signal": signal})


def scale_service(service_id: str, value: int) -> Call[None]:
    """``POST /services/{id}/scale`` with ``{"type": "scale_to", "value": N}``."""
    return Call("POST", _service(service_id, "/scale"), _none, body={"type": "scale_to", "value": int(value)})


# ---------------------------------------------------------------------- logs (issue 12 item 5)


def _log_query(tail: int | None, since: str | float | None, timestamps: bool, follow: bool) -> dict[str, Any]:
    return {"tail": tail, "since": since, "timestamps": timestamps or None, "follow": follow or None}


def project_logs(name: str, *, tail: int | None = None, since: str | float | None = None,
                 timestamps: bool = False) -> Call[str]:
    """``GET /projects/{name}/logs``: every container's output, ``<container> | <line>`` in time
    order; ``tail`` lines per container, ``since`` unix seconds or a duration back (``10m``)."""
    return Call("GET", _project(name, "/logs"), _text, query=_log_query(tail, since, timestamps, False))


def service_logs(service_id: str, *, tail: int | None = None, since: str | float | None = None,
                 timestamps: bool = False) -> Call[str]:
    """``GET /services/{id}/logs``: as :func:`project_logs`, the service's containers only."""
    return Call("GET", _service(service_id, "/logs"), _text, query=_log_query(tail, since, timestamps, False))


def logs_stream(name: str = "", service_id: str = "", *, tail: int | None = None, since: str | float | None = None,
                timestamps: bool = False) -> Call[Reply]:
    """``GET …/logs?follow=true`` of a project (``name``) or a service, read line by line."""
    path = _service(service_id, "/logs") if service_id else _project(name, "/logs")
    return Call("GET", path, lambda r: r, query=_log_query(tail, since, timestamps, True), stream=True)


# ---------------------------------------------------------------------- volumes (§10.24–10.28)


def create_volume(name: str, driver: str = "local", driver_opts: Mapping[str, str] | None = None,
                  labels: Mapping[str, str] | None = None) -> Call[Volume]:
    """``POST /volumes/create`` (``local``; ``nas``/``ossfs`` where the nodes can mount them)."""
    body: dict[str, Any] = {"name": name, "driver": driver}
    if driver_opts:
        body["driverOpts"] = dict(driver_opts)
    if labels:
        body["labels"] = dict(labels)
    return Call("POST", "/volumes/create", lambda r: Volume.from_json(r.payload), body=body)


def list_volumes() -> Call[list[Volume]]:
    """``GET /volumes`` (``{"Volumes": [...]}``, as a list)."""
    return Call("GET", "/volumes", lambda r: models_of(Volume, (r.payload or {}).get("Volumes")))


def get_volume(name: str) -> Call[Volume]:
    return Call("GET", f"/volumes/{seg(name)}", lambda r: Volume.from_json(r.payload))


def delete_volume(name: str) -> Call[None]:
    return Call("DELETE", f"/volumes/{seg(name)}", _none)
