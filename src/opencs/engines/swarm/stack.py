"""Swarm stacks through the Engine API (docker SDK): what ``docker stack deploy/rm/ps`` do, plus
what the Application API needs around them (container status per node, signals, volumes).

Services and networks carry ``com.docker.stack.namespace=<project>`` so ``docker stack ls/ps/rm``
see them. Each service carries ``opencs.config-hash``: a deploy leaves a service whose hash did not
change alone (only its replica count is converged), so re-running a deploy is idempotent.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound

from opencs import metrics
from opencs.compose.normalize import HASH_LABEL, NAMESPACE_LABEL, NetworkModel, ServiceModel, StackModel
from opencs.engines.swarm import client, exits
from opencs.engines.swarm.observe import (
    FAILED_TASK_STATES,
    STOPPED_CONSTRAINT,
    Snapshot,
    _age,
    current_tasks,
    desired_count,
    is_global,
    service_outcome,
    snapshot,
    stack_services,
    task_problem,
)

log = logging.getLogger("opencs.stack")



class StackError(Exception):
    def __init__(self, message: str, code: str = "DeployFailed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# ---------------------------------------------------------------- IPVS detection

_IPVS_LOG = "Could not get ipvs family information from the kernel"


def detect_ipvs(nodes: Iterable[tuple[str, dict[str, Any]]]) -> bool:
    """Can the nodes' kernel do IPVS (swarm VIP load balancing and the ingress routing mesh)?

    ``nodes``: (docker_host, provider details) pairs. Nodes whose engine runs on this machine
    (unix socket) share our kernel: IPVS is there if /proc/net/ip_vs exists, or the kernel can load
    modules and has ip_vs.ko; the engine's own log line "Could not get ipvs family information"
    settles it. Remote engines are assumed to be standard Linux hosts with IPVS.
    """
    for host, details in nodes:
        d = details.get("dir") if details else None
        if d:
            try:
                log_text = (Path(d) / "dockerd.log").read_text(errors="replace")
                if _IPVS_LOG in log_text:
                    return False
            except OSError:
                pass
        if host.startswith("unix://"):
            return kernel_has_ipvs()
    return True


def kernel_has_ipvs() -> bool:
    if os.path.exists("/proc/net/ip_vs"):
        return True
    if not os.path.exists("/proc/modules"):
        return False  # CONFIG_MODULES is off and IPVS is not built in
    release = os.uname().release
    base = Path(f"/lib/modules/{release}/kernel/net/netfilter/ipvs")
    return any(base.glob("ip_vs.ko*")) if base.is_dir() else False


# ---------------------------------------------------------------- hashing


def config_hash(spec: dict[str, Any]) -> str:
    """Hash of everything that makes a service's tasks what they are (not its replica count)."""
    s = copy.deepcopy(spec)
    s.get("Labels", {}).pop(HASH_LABEL, None)
    mode = s.get("Mode", {})
    if "Replicated" in mode:
        mode["Replicated"].pop("Replicas", None)
    s.get("TaskTemplate", {}).pop("ForceUpdate", None)
    return hashlib.sha256(json.dumps(s, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


# ---------------------------------------------------------------- images


# (registry host:port, user, password): the bundled registry's node credential of the cluster
RegistryLogin = tuple[str, str, str]


def registry_login(c: docker.DockerClient, login: RegistryLogin | None, images: Iterable[str]) -> None:
    """Log the client in to the bundled registry when an image comes from it, so that the lookups and
    the services (X-Registry-Auth, as `--with-registry-auth`) carry the node credential and every
    node pulls with it. A failed login is logged: public images still pull without one."""
    if login is None or not any(i.startswith(f"{login[0]}/") for i in images):
        return
    try:
        c.login(username=login[1], password=login[2], registry=login[0], reauth=True)
    except APIError as e:
        log.warning("login to the bundled registry %s failed: %s", login[0], _explain(e))


def resolve_image(manager_host: str, image: str, login: RegistryLogin | None = None) -> str:
    """The registry's manifest digest of ``image`` (through the engine, so mirrors/auth apply)."""
    with closing(client(manager_host)) as c:
        registry_login(c, login, [image])
        try:
            r = c.api.inspect_distribution(image)
        except NotFound as e:
            raise StackError(f"image {image!r} was not found in the registry: {_explain(e)}", "ImageNotFound") \
                from None
        except APIError as e:
            raise StackError(f"image {image!r} could not be looked up: {_explain(e)}", "ImageNotFound") from None
        return str(r["Descriptor"]["digest"])


def image_present(docker_host: str, image: str) -> bool:
    with closing(client(docker_host)) as c:
        try:
            c.api.inspect_image(image)
            return True
        except NotFound:
            return False


def _explain(e: Exception) -> str:
    if isinstance(e, APIError):
        return str(e.explanation or e)
    return str(e)


# ---------------------------------------------------------------- networks


def _find_network(c: docker.DockerClient, name: str) -> dict[str, Any] | None:
    for n in c.api.networks(names=[name]):
        if n.get("Name") == name:
            return n  # type: ignore[no-any-return]
    return None


def ensure_network(c: docker.DockerClient, nm: NetworkModel) -> str:
    existing = _find_network(c, nm.name)
    if existing is not None:
        if existing.get("Driver") != "overlay" or existing.get("Scope") != "swarm":
            raise StackError(f"network {nm.name!r} exists but is not a swarm overlay network", "NetworkConflict")
        return str(existing["Id"])
    if nm.external:
        raise StackError(f"network {nm.name!r} is declared external but does not exist", "NetworkNotFound")
    ipam = None
    if nm.ipam:
        ipam = {"Driver": nm.ipam.get("Driver", "default"), "Config": nm.ipam.get("Config", []), "Options": None}
    try:
        r = c.api.create_network(nm.name, driver=nm.driver, options=nm.driver_opts or None, ipam=ipam,
                                 internal=nm.internal, labels=nm.labels, attachable=nm.attachable, scope="swarm",
                                 check_duplicate=True)
    except APIError as e:
        if e.status_code == 409:  # created concurrently
            again = _find_network(c, nm.name)
            if again:
                return str(again["Id"])
        raise StackError(f"network {nm.name!r} could not be created: {_explain(e)}", "NetworkFailed") from None
    return str(r["Id"])


def remove_networks(manager_host: str, project: str, timeout: float = 30.0, labels: Iterable[str] = ()) -> None:
    """Remove the stack's networks (those with all `labels` too); tasks detach asynchronously, so
    retry while endpoints remain."""
    end = time.time() + timeout
    with closing(client(manager_host)) as c:
        while True:
            nets = c.api.networks(filters={"label": [f"{NAMESPACE_LABEL}={project}", *labels]})
            left = []
            for n in nets:
                try:
                    c.api.remove_network(n["Id"])
                except NotFound:
                    pass
                except APIError as e:
                    left.append(f"{n['Name']}: {_explain(e)}")
            if not left:
                return
            if time.time() > end:
                raise StackError("networks could not be removed: " + "; ".join(left), "RemoveFailed")
            time.sleep(0.5)


# ---------------------------------------------------------------- services


def _desired_spec(svc: ServiceModel, *, replicas: int | None, stopped: bool, image: str | None,
                  force_update: int) -> dict[str, Any]:
    spec = copy.deepcopy(svc.spec)
    if image:
        spec["TaskTemplate"]["ContainerSpec"]["Image"] = image
    if svc.mode == "global":
        if stopped:
            pl = spec["TaskTemplate"].setdefault("Placement", {})
            pl["Constraints"] = [*pl.get("Constraints", []), STOPPED_CONSTRAINT]
    else:
        n = svc.replicas if replicas is None else replicas
        spec["Mode"] = {"Replicated": {"Replicas": 0 if stopped else int(n or 0)}}
    spec["TaskTemplate"]["ForceUpdate"] = force_update
    spec["Labels"][HASH_LABEL] = config_hash(spec)
    return spec


def _create(c: docker.DockerClient, spec: dict[str, Any]) -> None:
    metrics.engine_writes.labels("create").inc()
    c.api.create_service(
        task_template=spec["TaskTemplate"], name=spec["Name"], labels=spec["Labels"], mode=spec["Mode"],
        update_config=spec.get("UpdateConfig"), rollback_config=spec.get("RollbackConfig"),
        endpoint_spec=spec.get("EndpointSpec"),
    )


def _update(c: docker.DockerClient, sid: str, version: int, spec: dict[str, Any]) -> None:
    metrics.engine_writes.labels("update").inc()
    c.api.update_service(
        sid, version, task_template=spec["TaskTemplate"], name=spec["Name"], labels=spec["Labels"],
        mode=spec["Mode"], update_config=spec.get("UpdateConfig") or {},
        rollback_config=spec.get("RollbackConfig") or {}, endpoint_spec=spec.get("EndpointSpec") or {},
        fetch_current_spec=False,
    )


def _retry_out_of_sequence(fn: Callable[[], None]) -> None:
    for _ in range(8):
        try:
            fn()
            return
        except APIError as e:
            if "update out of sequence" not in str(e):
                raise
            time.sleep(0.2)
    fn()


def scale_service(manager_host: str, project: str, full_name: str, replicas: int) -> bool:
    """Set the replica count of one replicated service of the project and nothing else (what
    `docker service scale` does): one inspect and one update, no stack diff. False when the live
    service is not the project's replicated service; the caller then deploys the stack instead."""
    with closing(client(manager_host)) as c:
        found = True

        def scale() -> None:
            nonlocal found
            try:
                cur = c.api.inspect_service(full_name)
            except NotFound:
                found = False
                return
            spec = cur["Spec"]
            if spec.get("Labels", {}).get(NAMESPACE_LABEL) != project or "Replicated" not in spec.get("Mode", {}):
                found = False
                return
            spec["Mode"] = {"Replicated": {"Replicas": int(replicas)}}
            _update(c, cur["ID"], cur["Version"]["Index"], spec)

        try:
            _retry_out_of_sequence(scale)
        except APIError as e:
            raise StackError(f"service {full_name}: {_explain(e)}") from None
        return found


@dataclass
class DeployPlan:
    """What a deploy did per service: created | updated | scaled | unchanged | removed."""

    actions: dict[str, str] = field(default_factory=dict)


def deploy(
    manager_host: str,
    model: StackModel,
    *,
    replicas: dict[str, int] | None = None,
    stopped: Iterable[str] = (),
    images: dict[str, str] | None = None,
    force: dict[str, int] | None = None,
    only: Iterable[str] | None = None,
    prune: bool = True,
    login: RegistryLogin | None = None,
) -> DeployPlan:
    """Converge the stack: networks, then services in dependency order; prune services no longer in
    the template. ``force`` maps service → ForceUpdate counter (a redeploy bumps it)."""
    replicas = replicas or {}
    stopped_set = set(stopped)
    images = images or {}
    force = force or {}
    only_set = set(only) if only is not None else None
    plan = DeployPlan()
    with closing(client(manager_host)) as c:
        registry_login(c, login, [*(s.image for s in model.services.values()), *images.values()])
        for nm in model.networks.values():
            ensure_network(c, nm)
        live = {s["Spec"]["Name"]: s for s in stack_services(c, model.project)}
        for name in model.order:
            if only_set is not None and name not in only_set:
                continue
            svc = model.services[name]
            cur = live.get(svc.full_name)
            cur_force = int(cur["Spec"]["TaskTemplate"].get("ForceUpdate", 0)) if cur else 0
            spec = _desired_spec(svc, replicas=replicas.get(name), stopped=name in stopped_set,
                                 image=images.get(name), force_update=max(cur_force, force.get(name, 0)))
            try:
                if cur is None:
                    _create(c, spec)
                    plan.actions[name] = "created"
                    continue
                same = cur["Spec"].get("Labels", {}).get(HASH_LABEL) == spec["Labels"][HASH_LABEL] \
                    and cur_force == spec["TaskTemplate"]["ForceUpdate"]
                if same and cur["Spec"].get("Mode") == spec["Mode"]:
                    plan.actions[name] = "unchanged"
                    continue
                if same:
                    # only the replica count differs: keep the live task template untouched
                    def scale(cur: dict[str, Any] = cur, spec: dict[str, Any] = spec) -> None:
                        fresh = c.api.inspect_service(cur["ID"])
                        live_spec = fresh["Spec"]
                        live_spec["Mode"] = spec["Mode"]
                        _update(c, fresh["ID"], fresh["Version"]["Index"], live_spec)

                    _retry_out_of_sequence(scale)
                    plan.actions[name] = "scaled"
                    continue

                def upd(cur: dict[str, Any] = cur, spec: dict[str, Any] = spec) -> None:
                    fresh = c.api.inspect_service(cur["ID"])
                    _update(c, fresh["ID"], fresh["Version"]["Index"], spec)

                _retry_out_of_sequence(upd)
                plan.actions[name] = "updated"
            except APIError as e:
                raise StackError(f"service {name}: {_explain(e)}") from None
        if prune and only_set is None:
            wanted = {s.full_name for s in model.services.values()}
            for full, s in live.items():
                if full not in wanted:
                    with suppress(NotFound):
                        c.api.remove_service(s["ID"])
                    plan.actions[s["Spec"]["Labels"].get("opencs.service", full)] = "removed"
    return plan


# ---------------------------------------------------------------- waiting


@dataclass
class _Watch:
    """What wait_converged remembers between its looks at the swarm."""

    since: float
    settle: float
    exit_logs: Callable[[dict[str, Any]], list[str]]
    pending_since: dict[str, float] = field(default_factory=dict)
    failed_seen: dict[str, dict[str, str]] = field(default_factory=dict)  # service → task id → error
    unchanged: frozenset[str] = frozenset()  # left as they were by the deploy: their update status is older


def _still_waiting(name: str, svc: dict[str, Any], snap: Snapshot, w: _Watch) -> str | None:
    """Why the service has not converged yet (None: it has). StackError when it never will."""
    us = svc.get("UpdateStatus") or {}
    if us.get("State") in ("rollback_completed", "rollback_paused", "paused") and name not in w.unchanged and \
            _age(us.get("StartedAt", "")) < time.time() - w.since + 5:
        raise StackError(f"service {name}: the update failed ({us.get('State')}): {us.get('Message', '')}")
    want = desired_count(svc, snap)
    cur = current_tasks(snap, svc["ID"])
    running = [t for t in cur if t.get("Status", {}).get("State") == "running"]
    stale_running = [t for t in snap.tasks_of(svc["ID"]) if t.get("Status", {}).get("State") == "running"
                     and t not in cur]
    if want == 0:
        return f"{name}: {len(stale_running)} container(s) still stopping" if stale_running else None
    if us.get("State") in ("updating", "rollback_started"):
        return f"{name}: rolling update in progress"
    o = service_outcome(svc, snap)
    if o.state == "failed":  # exited non-zero and its restart policy gave up
        raise StackError(exits.failure_text(name, o, w.exit_logs(o.task or {})), "ContainerFailed")
    if o.state == "completed" and not stale_running:  # a one-shot command that exited 0
        return None
    settled = [t for t in running if _age(t.get("Status", {}).get("Timestamp", "")) >= w.settle]
    done = exits.completed_slots(snap.tasks_of(svc["ID"]), by_node=is_global(svc),
                                 template=svc["Spec"].get("TaskTemplate"))
    if len(settled) + done >= want and not stale_running:
        return None
    failures = [t for t in snap.tasks_of(svc["ID"]) if t.get("Status", {}).get("State") in FAILED_TASK_STATES
                and not exits.scaled_away(t)
                and _age(t.get("Status", {}).get("Timestamp", "")) < time.time() - w.since + 1]
    seen = w.failed_seen.setdefault(name, {})
    for t in failures:
        seen[t["ID"]] = task_problem(t)
    if len(seen) >= 3:  # a policy without a bound on its restarts (max_attempts written as 0)
        last = max(failures or snap.tasks_of(svc["ID"]), key=lambda t: exits.timestamp(t.get("CreatedAt", "")))
        code, logs = exits.exit_code(last), w.exit_logs(last)
        raise StackError(f"service {name}: containers keep failing: "
                         + (f"exit code {code}" if code is not None else list(seen.values())[-1])
                         + (f"; last log lines: {' | '.join(logs)}" if logs else ""), "ContainerFailed")
    for t in cur:
        st = t.get("Status", {})
        if st.get("State") == "pending" and st.get("Err"):
            first = w.pending_since.setdefault(t["ID"], time.time())
            if time.time() - first > 5:
                raise StackError(f"service {name}: a container cannot be placed: {st['Err']}", "SchedulingFailed")
    detail = ", ".join(sorted({task_problem(t) for t in cur if t not in running})) or "starting"
    return f"{name}: {len(running)}/{want} running ({detail})"


def wait_converged(
    manager_host: str,
    model: StackModel,
    services: Iterable[str],
    *,
    timeout: float = 120.0,
    since: float | None = None,
    progress: Callable[[str], None] | None = None,
    settle: float = 1.5,
    exit_logs: Callable[[dict[str, Any]], list[str]] | None = None,
    unchanged: Collection[str] = (),
) -> None:
    """Until every named service runs its desired tasks (stopped ones: none), each running for at
    least ``settle`` seconds (a container that exits at once is not "running"), or completed (a
    one-shot command exited 0 and is not restarted). Fails early on a rolled-back/paused update,
    containers that exited non-zero and are not restarted again (with the exit code and
    ``exit_logs(task)``, the container's last lines), repeatedly failing tasks or tasks that
    cannot be placed."""
    names = list(services)
    end = time.time() + timeout
    w = _Watch(since or time.time(), settle, exit_logs or (lambda t: []), unchanged=frozenset(unchanged))
    while True:
        snap = snapshot(manager_host, [], model.project, containers=False)
        waiting: list[str] = []
        for name in names:
            svc = snap.service(model.services[name].full_name)
            if svc is None:
                raise StackError(f"service {name} disappeared from the swarm")
            why = _still_waiting(name, svc, snap, w)
            if why:
                waiting.append(why)
        if not waiting:
            return
        msg = "; ".join(waiting)
        if progress:  # on every poll: a task's progress also tells whether a newer request took over
            progress(msg)
        if time.time() > end:
            raise StackError(f"not converged after {timeout:.0f}s: {msg}", "Timeout")
        time.sleep(0.5)
