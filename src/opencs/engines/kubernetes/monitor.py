"""How opencs reads a Kubernetes cluster for usage and container exits (issue 12 items 2 and 4): as
a user of its own, `opencs:monitor`, with a client certificate of the cluster CA minted in memory
once per process and cluster (its key is never written anywhere that outlives the load).

The kubelets authenticate it by the CA (`authentication.x509.clientCAFile`) and ask the apiserver
whether it may (`authorization.mode: Webhook`); RBAC binds it to the bootstrap role
`system:kubelet-api-admin` (nodes/stats, nodes/proxy: `/stats/summary`, `/pods`) and to a role that
reads pods through the apiserver, nothing else. The bindings are made with the admin credentials the
first time a process reads the cluster, so a cluster made before them gets them then.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from opencs.engines.apps import EngineUnreachable
from opencs.engines.driver import DriverError
from opencs.engines.kubernetes.api import KubeApi, KubeError
from opencs.engines.kubernetes.pki import ClusterPKI
from opencs.pki import IssuedCert

MONITOR_USER = "opencs:monitor"
KUBELET_PORT = 10250  # the kubelet's authenticated API (KubeletConfiguration.port)
_RBAC = "/apis/rbac.authorization.k8s.io/v1"


def rbac_objects() -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object): what lets MONITOR_USER read the kubelets and the pods, no more."""
    subject = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": MONITOR_USER}]

    def binding(name: str, role: str) -> dict[str, Any]:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": name}, "subjects": subject,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}}

    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": MONITOR_USER},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}
    return [(f"{_RBAC}/clusterroles", role),
            (f"{_RBAC}/clusterrolebindings", binding(MONITOR_USER, MONITOR_USER)),
            (f"{_RBAC}/clusterrolebindings", binding(f"{MONITOR_USER}:kubelet-api", "system:kubelet-api-admin"))]


def client_context(ca_pem: str, cred: IssuedCert) -> ssl.SSLContext:
    """TLS trusting only the cluster CA, presenting `cred` (loaded from a private directory that is
    removed before this returns: ssl loads key pairs from files only)."""
    ctx = ssl.create_default_context(cadata=ca_pem)
    with tempfile.TemporaryDirectory(prefix="opencs-monitor-") as d:
        cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        for path, text in ((cert, cred.cert_pem), (key, cred.key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        ctx.load_cert_chain(cert, key)
    return ctx


@dataclass(frozen=True)
class Identity:
    server: str  # the cluster's apiserver (what kubeconfigs name)
    ctx: ssl.SSLContext  # cluster CA + MONITOR_USER's certificate: for the apiserver and every kubelet


class MonitorAccess:
    """MONITOR_USER's identity per cluster, made (and its RBAC ensured) on first use."""

    def __init__(self, pki: Callable[[str], ClusterPKI], admin_api: Callable[[str], AbstractContextManager[KubeApi]],
                 server: Callable[[str], str]) -> None:
        self._pki, self._admin_api, self._server = pki, admin_api, server
        self._ids: dict[str, Identity] = {}
        self._lock = threading.Lock()

    def identity(self, cluster_id: str) -> Identity:
        with self._lock:
            if (got := self._ids.get(cluster_id)) is not None:
                return got
        try:
            pki = self._pki(cluster_id)
            with self._admin_api(cluster_id) as api:
                for path, obj in rbac_objects():
                    if api.get(f"{path}/{obj['metadata']['name']}") is None:
                        api.create(path, obj)
            server = self._server(cluster_id)
        except (DriverError, KubeError) as e:
            raise EngineUnreachable(f"cluster {cluster_id}: {e}") from None
        ident = Identity(server, client_context(pki.ca.cert_pem, pki.client(MONITOR_USER)))
        with self._lock:
            return self._ids.setdefault(cluster_id, ident)

    def forget(self, cluster_id: str) -> None:
        """After a refusal (401/403) or an unreachable apiserver: made again on the next use."""
        with self._lock:
            self._ids.pop(cluster_id, None)

    def retain(self, cluster_ids: Collection[str]) -> None:
        """Only these clusters' identities are kept (a deleted cluster's key does not linger)."""
        with self._lock:
            for cid in set(self._ids) - set(cluster_ids):
                del self._ids[cid]


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class ClientsByCluster(Generic[C]):
    """One kept client per cluster, made from MONITOR_USER's identity on first use; `drop` closes it
    (after a failure: a fresh one next time)."""

    def __init__(self, access: MonitorAccess, make: Callable[[Identity], C]) -> None:
        self.access, self._make = access, make
        self._clients: dict[str, C] = {}
        self._lock = threading.Lock()

    def get(self, cluster_id: str) -> C:
        with self._lock:
            if (c := self._clients.get(cluster_id)) is None:
                c = self._clients[cluster_id] = self._make(self.access.identity(cluster_id))
            return c

    def drop(self, cluster_id: str) -> None:
        with self._lock:
            c = self._clients.pop(cluster_id, None)
        if c is not None:
            c.close()

    def retain(self, cluster_ids: Collection[str]) -> None:
        """Close the clients of every other cluster (deleted ones, or without a running node now)."""
        with self._lock:
            gone = [self._clients.pop(cid) for cid in set(self._clients) - set(cluster_ids)]
        for c in gone:
            c.close()


def kubelet_url(address: str, path: str) -> str:
    return f"https://{address}:{KUBELET_PORT}{path}"
