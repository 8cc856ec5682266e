"""Waiters and pagers, written once as flows (see :mod:`opencs.sdk.core`) for both clients."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

from opencs.sdk import application as appapi
from opencs.sdk import control
from opencs.sdk.core import Call, Emit, Flow, NextLine, Now, Paged, Reply, Sleep
from opencs.sdk.errors import ConflictError, ProjectFailed, TaskFailed, TaskTimeout, WaitTimeout
from opencs.sdk.models import Cluster, ClusterCerts, Event, Node, Project, Service, Task

TASK_SUCCESS = frozenset({"success", "succeeded", "successful"})
TASK_FAILED = frozenset({"fail", "failed", "error", "canceled", "cancelled"})


def wait_task(task_id: str, timeout: float = 600, poll: float = 0.5,
              on_update: Callable[[Task], None] | None = None) -> Flow[Task]:
    """Poll a task until it succeeds and return it.

    ``on_update`` is called with the task after every poll. Raises :class:`TaskFailed` when the
    task fails and :class:`TaskTimeout` (a :class:`TimeoutError`) after ``timeout`` seconds.
    """
    deadline = (yield Now()) + timeout
    while True:
        task: Task = yield control.describe_task(task_id)
        if on_update is not None:
            on_update(task)
        state = task.state.lower()
        if state in TASK_SUCCESS:
            return task
        if state in TASK_FAILED:
            raise TaskFailed(task)
        remaining = deadline - (yield Now())
        if remaining <= 0:
            raise TaskTimeout(task_id, timeout, task)
        yield Sleep(min(poll, remaining))


def wait_project(name: str, states: Collection[str] = ("running",), timeout: float = 300, poll: float = 0.5,
                 on_update: Callable[[Project], None] | None = None) -> Flow[Project]:
    """Poll ``GET /projects/{name}`` until its ``current_state`` is one of ``states`` (default:
    running) and return it; :class:`ProjectFailed` when it is ``failed`` (not asked for),
    :class:`WaitTimeout` after ``timeout`` seconds."""
    deadline = (yield Now()) + timeout
    while True:
        project: Project = yield appapi.get_project(name, containers=False)
        if on_update is not None:
            on_update(project)
        if project.current_state in states:
            return project
        if project.current_state == "failed":
            raise ProjectFailed(project)
        remaining = deadline - (yield Now())
        if remaining <= 0:
            raise WaitTimeout("ProjectTimeout", f"project {name} still {project.current_state} after "
                              f"{timeout:g}s (waiting for {', '.join(states)})", timeout, project)
        yield Sleep(min(poll, remaining))


def wait_service(service_id: str, containers: int | None = None, states: Collection[str] = ("running",),
                 timeout: float = 300, poll: float = 0.5) -> Flow[Service]:
    """Poll ``GET /services/{id}`` until its state is one of ``states`` and, with ``containers``,
    it has that many running containers."""
    deadline = (yield Now()) + timeout
    while True:
        svc: Service = yield appapi.get_service(service_id)
        running = sum(1 for c in svc.containers.values() if c.running)
        if svc.current_state in states and (containers is None or running == containers):
            return svc
        remaining = deadline - (yield Now())
        if remaining <= 0:
            raise WaitTimeout("ServiceTimeout", f"service {service_id} still {svc.current_state} with {running} "
                              f"running container(s) after {timeout:g}s", timeout, svc)
        yield Sleep(min(poll, remaining))


def wait_cluster(cluster_id: str, states: Collection[str] = ("running",), timeout: float = 600,
                 poll: float = 1.0) -> Flow[Cluster]:
    """Poll ``GET /clusters/{id}`` until its state is one of ``states``."""
    deadline = (yield Now()) + timeout
    while True:
        cluster: Cluster = yield control.describe_cluster(cluster_id)
        if cluster.state in states:
            return cluster
        remaining = deadline - (yield Now())
        if remaining <= 0:
            raise WaitTimeout("ClusterTimeout", f"cluster {cluster_id} still {cluster.state} after {timeout:g}s",
                              timeout, cluster)
        yield Sleep(min(poll, remaining))


# ---------------------------------------------------------------------- pagers


def iter_clusters(page_size: int = 50) -> Paged[Cluster]:
    """Every cluster, page by page (``GET /api/v1/clusters``)."""
    page = 1
    while True:
        got: Any = yield control.list_clusters_paged(page, page_size)
        for c in got.clusters:
            yield Emit(c)
        if not got.clusters or page * page_size >= got.page_info.total_count:
            return
        page += 1


def iter_nodes(cluster_id: str, page_size: int = 100) -> Paged[Node]:
    """Every node of a cluster, page by page (``GET /clusters/{id}/nodes``)."""
    page = 1
    while True:
        got: Any = yield control.cluster_nodes(cluster_id, page, page_size)
        for n in got.nodes:
            yield Emit(n)
        if not got.nodes or page * page_size >= got.page.total_count:
            return
        page += 1


def iter_events(cluster_id: str, *, project: str | None = None, kind: str | None = None, after: int = 0,
                page_size: int = 100) -> Paged[Event]:
    """A cluster's events, page by page (``?after=``): those after the event id ``after``, or with
    ``after=0`` the newest ``page_size`` first (the route's own reading of 0), then every later one."""
    while True:
        got: list[Event] = yield control.cluster_events(cluster_id, project=project, kind=kind, after=after,
                                                        limit=page_size)
        for e in got:
            after = max(after, e.id)
            yield Emit(e)
        if len(got) < page_size:
            return


# ---------------------------------------------------------------------- streams (read line by line)


def _lines(call: Call[Reply], parse: Callable[[str], Any | None] = lambda line: line) -> Paged[Any]:
    """A streamed reply, one item a line (``parse`` → ``None``: the line is skipped)."""
    reply: Reply = yield call
    while (line := (yield NextLine(reply.stream))) is not None:
        item = parse(line)
        if item is not None:
            yield Emit(item)


def _sse_event(line: str) -> Event | None:
    return Event.from_json(json.loads(line[5:])) if line.startswith("data:") else None


def follow_events(cluster_id: str, *, project: str | None = None, kind: str | None = None,
                  after: int = 0) -> Paged[Event]:
    """The cluster's events as they happen (``?follow=true``: server-sent events), those after the
    event id ``after`` first; ends when the server closes the stream."""
    return _lines(control.events_stream(cluster_id, project=project, kind=kind, after=after), _sse_event)


def follow_project_logs(name: str, *, tail: int | None = None, since: str | float | None = None,
                        timestamps: bool = False) -> Paged[str]:
    """``GET /projects/{name}/logs?follow=true``: the lines so far, then each new one as it is written."""
    return _lines(appapi.logs_stream(name, tail=tail, since=since, timestamps=timestamps))


def follow_service_logs(service_id: str, *, tail: int | None = None, since: str | float | None = None,
                        timestamps: bool = False) -> Paged[str]:
    """``GET /services/{id}/logs?follow=true``, line by line."""
    return _lines(appapi.logs_stream(service_id=service_id, tail=tail, since=since, timestamps=timestamps))


# ---------------------------------------------------------------------- the cluster's Application API


def app_endpoint(cluster_id: str) -> Flow[tuple[str, ClusterCerts]]:
    """The cluster's ``master_url`` and a new certificate of the caller's for it."""
    cluster: Cluster = yield control.describe_cluster(cluster_id)
    if not cluster.master_url:
        raise ConflictError(409, "NoMasterUrl", f"cluster {cluster_id} has no master_url yet "
                            f"(state {cluster.state})", None)
    certs: ClusterCerts = yield control.cluster_certs(cluster_id)
    return cluster.master_url, certs
