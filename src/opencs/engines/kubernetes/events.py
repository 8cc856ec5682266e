"""Container exits of a Kubernetes node (opencs.engines.container_events), from its pods' status in
the apiserver: one list of the node's pods per pass, as `opencs:monitor` (monitor.py).

A container that ended shows as `state.terminated` (not restarted: restartPolicy Never or
OnFailure after exit 0) or, once the kubelet restarted it, as `lastState.terminated`, with its
reason (Error, OOMKilled, Completed...), exit code, end time and runtime id; `restartCount` counts
the restarts. The kubelet reports an exit to the apiserver a moment after it happened, so exits are
not taken by their end time falling into the watcher's window (one reported late would fall
between two windows) but by identity: each termination (its runtime id) once per process, none
that ended before the reader's first pass (an earlier process, or nobody, saw those).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from opencs.engines.apps import EngineUnreachable
from opencs.engines.container_events import ContainerDeath
from opencs.engines.kubernetes.api import KubeApi, KubeError
from opencs.engines.kubernetes.monitor import ClientsByCluster, MonitorAccess
from opencs.engines.usage import NodeRef

TIMEOUT = 10.0
CLOCK_SLACK = 1.0  # seconds: the status's times are whole seconds


def _time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def terminations(pod: dict[str, Any]) -> list[tuple[str, float | None, ContainerDeath]]:
    """(identity, end time, the exit) of every ended container the pod's status shows."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    out = []
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        restarts = int(cs.get("restartCount") or 0)
        for term in ((cs.get("state") or {}).get("terminated"), (cs.get("lastState") or {}).get("terminated")):
            if not term:
                continue
            at = _time(term.get("finishedAt"))
            fallback = f"{meta.get('uid')}/{cs.get('name')}/{restarts}/{term.get('finishedAt')}"
            key = str(term.get("containerID") or fallback)
            reason = str(term.get("reason") or "")
            out.append((key, at, ContainerDeath(
                at or 0.0, f"{meta.get('name')}/{cs.get('name')}", str(meta.get("namespace", "")),
                str(meta.get("name", "")), int(term.get("exitCode") or 0), reason == "OOMKilled", reason, restarts)))
    return out


class KubernetesDeathReader:
    def __init__(self, access: MonitorAccess) -> None:
        self.access = access
        self._apis = ClientsByCluster(access, lambda ident: KubeApi(ident.server, None, TIMEOUT, ctx=ident.ctx))
        self._seen: dict[str, set[str]] = {}  # node -> the terminations its pods showed last time
        self._floor: dict[str, float] = {}  # node -> `since` of its first pass

    def retain(self, nodes: Sequence[NodeRef]) -> None:
        clusters = {n.cluster_id for n in nodes if n.cluster_id}
        self._apis.retain(clusters)
        self.access.retain(clusters)
        ids = {n.instance_id for n in nodes}
        for kept in (self._seen, self._floor):
            for iid in set(kept) - ids:
                del kept[iid]

    def deaths(self, node: NodeRef, since: float, until: float) -> list[ContainerDeath]:
        if not node.cluster_id:
            raise EngineUnreachable(f"{node.instance_id}: no cluster")
        try:
            pods = self._apis.get(node.cluster_id).pods_on(node.instance_id)  # the Node's name is the instance id
        except KubeError as e:
            self._apis.drop(node.cluster_id)
            self.access.forget(node.cluster_id)
            raise EngineUnreachable(str(e)) from None
        floor = self._floor.setdefault(node.instance_id, since) - CLOCK_SLACK
        seen = self._seen.get(node.instance_id, set())
        now: set[str] = set()
        out = []
        for pod in pods:
            for key, at, death in terminations(pod):
                if key in now:
                    continue
                now.add(key)
                if key not in seen and (at is None or at >= floor):
                    out.append(death)
        self._seen[node.instance_id] = now
        return sorted(out, key=lambda d: d.at)
