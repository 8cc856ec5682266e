"""KubernetesDriver: the cluster driver of dedicated Kubernetes clusters (spec §6.3).

Machines come from the provider with the Kubernetes node runtime (runtime.py: containerd under a
supervisor). The driver makes the first one the master — it writes the control plane's plan
(plans.py) into the machine and waits for the apiserver — and every machine (the master too,
tainted NoSchedule) a node; membership is what the apiserver says: a member id is the Node's name
(the instance id). Every method is idempotent: plans are written only where missing, and waiting
is on the cluster's own state (Node Ready, pod CIDRs, add-ons available).

One master per cluster (master_count 1, the small-machine extension of spec §6.3): the control
plane's high-availability forms (3 or 5 masters) are refused at create time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from opencs.engines.driver import (
    ClusterDriver,
    ClusterPKI,
    Credentials,
    DriverError,
    MemberHealth,
    NodeBook,
    NodeConfig,
    NoManager,
    run_parallel,
)
from opencs.engines.kubernetes import addons, binary, network, plans
from opencs.engines.kubernetes.api import KubeApi, KubeError, connect, node_ready, wait_for
from opencs.engines.kubernetes.config import ClusterNetwork
from opencs.engines.kubernetes.kubeconfig import kubeconfig
from opencs.engines.kubernetes.pki import ClusterPKI as KubePKI
from opencs.engines.kubernetes.runtime import STATE_DIR, KubernetesNodeRuntime, missing_host_binaries

if TYPE_CHECKING:
    from opencs.engines.apps import AppEngine
    from opencs.store.models import InstanceRow

log = logging.getLogger("opencs.kubernetes")

API_READY_TIMEOUT = 180.0
NODES_READY_TIMEOUT = 240.0
DRAIN_TIMEOUT = 60.0


class ClusterBook(Protocol):
    """What the driver reads of a cluster in the store: its CA (key decrypted) and its settings."""

    def pki(self, cluster_id: str) -> ClusterPKI: ...

    def settings(self, cluster_id: str) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Box:
    """One machine of the cluster as the driver uses it."""

    name: str  # the Node's name: the instance id
    ip: str
    k: Path  # the machine's k8s/ directory
    netns: str
    cgroup: str
    socket: str  # containerd's API (the machine's api_socket)

    @classmethod
    def of(cls, r: InstanceRow) -> Box:
        d = r.details or {}
        if not d.get("dir") or not d.get("netns"):
            raise DriverError(f"instance {r.instance_id} is not a local machine: Kubernetes nodes run on the "
                              "local provider only", "ProviderUnsupported")
        return cls(r.instance_id, r.private_ip, Path(d["dir"]) / STATE_DIR, d["netns"], d.get("cgroup") or d["netns"],
                   d.get("unix_socket") or r.docker_host.removeprefix("unix://"))

    def log_tail(self, unit: str, lines: int = 6) -> str:
        try:
            text = (self.k / "log" / f"{unit}.log").read_text(errors="replace")
        except OSError:
            return f"{unit}: no log"
        return f"{unit}: " + " | ".join(text.strip().splitlines()[-lines:])


def network_of(settings: Mapping[str, Any]) -> ClusterNetwork:
    k = settings.get("kubernetes") or {}
    return ClusterNetwork(
        pod_cidr=k.get("container_cidr") or ClusterNetwork.pod_cidr,
        service_cidr=k.get("service_cidr") or ClusterNetwork.service_cidr,
        node_cidr_mask=int(k.get("node_cidr_mask") or ClusterNetwork.node_cidr_mask),
        node_port_range=k.get("node_port_range") or ClusterNetwork.node_port_range,
    )


class KubernetesDriver(ClusterDriver):
    cluster_type = "Kubernetes"  # as the spec spells it (and DescribeCluster shows it)
    accepts = ("kubernetes",)

    def __init__(self, book: NodeBook, clusters: ClusterBook, runtime: KubernetesNodeRuntime | None = None,
                 seed_images: Callable[[], dict[str, str]] | None = None, etcd_fsync: bool = True) -> None:
        self.book = book
        self.clusters = clusters
        self._runtime = runtime or KubernetesNodeRuntime()
        # puts the pause and CoreDNS images into the bundled registry; returns their references
        self._seed_images = seed_images or (lambda: {})
        self.etcd_fsync = etcd_fsync

    # ------------------------------------------------------------ configuration

    @property
    def node_runtime(self) -> KubernetesNodeRuntime:
        return self._runtime

    def check(self, cluster_type: str, spec: Mapping[str, Any]) -> str:
        if cluster_type.lower() not in self.accepts:
            raise DriverError(f"cluster_type {cluster_type!r} is not a Kubernetes type", "ClusterTypeNotSupported")
        try:
            binary.binary()
        except binary.BinaryMissing as e:
            raise DriverError(str(e), "EngineUnavailable") from None
        if missing := missing_host_binaries():
            raise DriverError(f"Kubernetes nodes cannot run on this host, missing: {', '.join(missing)} "
                              "(apt-get install containerd runc containernetworking-plugins iptables)",
                              "EngineUnavailable")
        try:
            network_of(spec)
        except ValueError as e:
            raise DriverError(str(e), "InvalidParameter") from None
        return self.cluster_type

    def managers_for(self, cluster_id: str, size: int) -> int:
        return 1

    def node_config(self, pki: ClusterPKI | None, instance_id: str, registry: str | None) -> NodeConfig:
        cfg = NodeConfig(labels={"opencs.instance": instance_id}, runtime=self._runtime.name,
                         registry_mirror=f"http://{registry}" if registry else None,
                         insecure_registries=[registry] if registry else [])
        if pki is not None:
            cfg.labels["opencs.cluster"] = pki.cluster_id
        return cfg

    def _pki(self, cluster_id: str) -> KubePKI:
        p = self.clusters.pki(cluster_id)
        return KubePKI.from_ca(p.ca_cert_pem, p.ca_key_pem)

    def _settings(self, cluster_id: str) -> tuple[ClusterNetwork, dict[str, Any]]:
        s = self.clusters.settings(cluster_id)
        return network_of(s), dict(s.get("kubernetes") or {})

    # ------------------------------------------------------------ members

    def _members(self, cluster_id: str) -> list[InstanceRow]:
        return [r for r in self.book.of_cluster(cluster_id) if r.swarm_node_id]

    def _master(self, cluster_id: str) -> Box:
        for r in self.book.of_cluster(cluster_id):
            if r.role == "manager" and r.swarm_node_id:
                return Box.of(r)
        raise NoManager(cluster_id)

    @contextmanager
    def _api(self, cluster_id: str, timeout: float = 10.0) -> Iterator[KubeApi]:
        m = self._master(cluster_id)
        try:
            with connect(plans.server_url(m.ip), m.k / "pki", timeout) as api:
                yield api
        except KubeError as e:
            raise DriverError(str(e), "KubernetesError") from e

    def api_url(self, cluster_id: str) -> str:
        try:
            return plans.server_url(self._master(cluster_id).ip)
        except DriverError:
            return ""

    def manager_endpoints(self, cluster_id: str) -> list[str]:
        return [plans.server_url(self._master(cluster_id).ip)]

    def app_engine(self, cluster_id: str) -> AppEngine:
        raise DriverError("the Application API (projects, services) is for Swarm clusters: run workloads on a "
                          "Kubernetes cluster with kubectl and the kubeconfig of GET /k8s/{id}/user_config",
                          "NoAppEngine")

    # ------------------------------------------------------------ create and join

    def _node_plan(self, cluster_id: str, m: Box, server: str, master: bool) -> plans.Plan:
        net, k = self._settings(cluster_id)
        s = plans.NodeSettings(name=m.name, ip=m.ip, cgroup=m.cgroup, runtime_socket=m.socket, server=server,
                               network=net, proxy_mode=k.get("proxy_mode") or "iptables", master=master,
                               cpu_policy=k.get("cpu_policy") or "none",
                               system_reserved=dict(k.get("system_reserved") or {}))
        return plans.node(m.k, self._pki(cluster_id), s)

    def create(self, cluster_id: str, first_instance_id: str) -> str:
        """The control plane on the first machine; it is also the cluster's first (tainted) node."""
        r = self.book.get(first_instance_id)
        if r is None:
            raise DriverError(f"instance {first_instance_id} vanished", "InstanceNotFound")
        m = Box.of(r)
        net, _ = self._settings(cluster_id)
        self._seed_images()  # the sandbox image before any pod
        plans.install(m.k, plans.control_plane(m.k, self._pki(cluster_id), m.name, m.ip, net, self.etcd_fsync))
        server = plans.server_url(m.ip)
        try:
            with connect(server, m.k / "pki") as api:
                detail = lambda: "; ".join(m.log_tail(u, 3) for u in plans.CONTROL_PLANE_UNITS)  # noqa: E731
                wait_for(f"apiserver {server} ready", api.ready, API_READY_TIMEOUT, detail)
                ns = wait_for("namespace kube-system", lambda: api.get("/api/v1/namespaces/kube-system"), 60)
        except KubeError as e:
            raise DriverError(str(e), "ControlPlaneFailed") from e
        plans.install(m.k, self._node_plan(cluster_id, m, server, master=True))
        self.book.set_membership(first_instance_id, "manager", m.name)
        return str(ns["metadata"]["uid"])

    def join(self, cluster_id: str, size: int) -> None:
        """Every running machine a Ready node: plans for new ones, pod CIDRs routed, add-ons on."""
        rows = [r for r in self.book.of_cluster(cluster_id) if r.state == "running"]
        if not rows:
            raise DriverError("cluster has no running instance", "NoInstances")
        master = self._master(cluster_id)
        server = plans.server_url(master.ip)

        def install(iid: str) -> None:
            r = next(x for x in rows if x.instance_id == iid)
            m = Box.of(r)
            plans.install(m.k, self._node_plan(cluster_id, m, server, master=False))
            self.book.set_membership(iid, "worker", m.name)

        run_parallel(install, [r.instance_id for r in rows if not (r.role and r.swarm_node_id)])
        members = [Box.of(r) for r in self._members(cluster_id)]
        net, _ = self._settings(cluster_id)
        with self._api(cluster_id) as api:
            try:
                self._converge(api, members, net)
                addons.ensure(api, self._seed_images(), net)
            except (KubeError, network.RouteError) as e:
                raise DriverError(str(e), "NodesNotReady") from e

    def _converge(self, api: KubeApi, members: list[Box], net: ClusterNetwork) -> None:
        names = {m.name for m in members}

        def registered() -> dict[str, dict[str, Any]] | None:
            nodes = {n["metadata"]["name"]: n for n in api.nodes()}
            if all(nodes.get(m, {}).get("spec", {}).get("podCIDR") for m in names):
                return nodes
            return None

        def missing() -> str:
            return "; ".join(m.log_tail("kubelet", 3) for m in members)

        nodes = wait_for("every node registered with a pod CIDR", registered, NODES_READY_TIMEOUT, missing)
        self._route(members, nodes, net)
        for m in members:
            plans.install(m.k, plans.cni(m.k, nodes[m.name]["spec"]["podCIDR"]))

        def ready() -> bool:
            return all(node_ready(n) for n in api.nodes() if n["metadata"]["name"] in names)

        wait_for("every node Ready", ready, NODES_READY_TIMEOUT, missing)
        for m in members:
            role = "master" if plans.MASTER_TAINT.split("=")[0] in _taints(nodes[m.name]) else "worker"
            api.patch(f"/api/v1/nodes/{m.name}", {"metadata": {"labels": {f"node-role.kubernetes.io/{role}": ""}}})

    def _route(self, members: list[Box], nodes: Mapping[str, Mapping[str, Any]], net: ClusterNetwork) -> None:
        cidrs = {m.name: (str(nodes.get(m.name, {}).get("spec", {}).get("podCIDR") or ""), m.ip) for m in members}
        for m in members:
            want = network.wanted_routes(m.name, cidrs, net.service_cidr)
            plans.install(m.k, plans.Plan(files={"routes": (network.routes_text(want), 0o644)}))
            network.sync_routes(m.netns, want)

    def set_managers(self, cluster_id: str, want: int) -> None:
        """Masters are fixed at create time (one per cluster here): nothing is promoted or demoted."""

    # ------------------------------------------------------------ removal

    def remove_node(self, cluster_id: str, instance_id: str) -> None:
        """Cordon, drain (evict its pods), delete the Node, stop its units; it stays a machine."""
        r = self.book.get(instance_id)
        if r is None:
            return
        m = Box.of(r)
        if r.swarm_node_id and r.role != "manager":
            try:
                with self._api(cluster_id) as api:
                    _drain(api, m.name)
                    api.delete(f"/api/v1/nodes/{m.name}")
                    nodes = {n["metadata"]["name"]: n for n in api.nodes()}
                others = [Box.of(x) for x in self._members(cluster_id) if x.instance_id != instance_id]
                self._route(others, nodes, self._settings(cluster_id)[0])
            except (KubeError, network.RouteError) as e:
                raise DriverError(f"removing node {m.name}: {e}", "DrainFailed") from e
        stop_units(m, plans.NODE_UNITS)
        self.book.set_membership(instance_id, "", "")

    def reset_node(self, cluster_id: str, instance_id: str) -> None:
        r = self.book.get(instance_id)
        if r is not None and r.swarm_node_id:
            self.remove_node(cluster_id, instance_id)

    def delete(self, cluster_id: str) -> None:
        """Nothing beyond the machines: the whole cluster lives in them."""

    # ------------------------------------------------------------ what users and monitors get

    def credentials(self, pki: ClusterPKI, user_cert_pem: str, user_key_pem: str) -> Credentials:
        server = self.api_url(pki.cluster_id)
        from opencs.pki import IssuedCert

        kc = kubeconfig(server, pki.ca_cert_pem, IssuedCert(user_cert_pem, user_key_pem),
                        cluster=pki.cluster_id, user=f"user-{pki.cluster_id}")
        return Credentials(kind="kubeconfig", ca_pem=pki.ca_cert_pem, cert_pem=user_cert_pem, key_pem=user_key_pem,
                           kubeconfig=kc)

    def user_credentials(self, pki: ClusterPKI, user: str, admin: bool, minutes: int | None) -> Credentials:
        kp = KubePKI.from_ca(pki.ca_cert_pem, pki.ca_key_pem)
        cred = kp.client(user, ["system:masters"] if admin else [], minutes=minutes or 3 * 365 * 24 * 60)
        server = self.api_url(pki.cluster_id)
        if not server:
            raise NoManager(pki.cluster_id)
        kc = kubeconfig(server, pki.ca_cert_pem, cred, cluster=pki.cluster_id, user=user)
        return Credentials(kind="kubeconfig", ca_pem=pki.ca_cert_pem, cert_pem=cred.cert_pem, key_pem=cred.key_pem,
                           kubeconfig=kc)

    def health(self, cluster_id: str) -> dict[str, MemberHealth] | None:
        try:
            with self._api(cluster_id, timeout=3.0) as api:
                nodes = api.nodes()
        except DriverError:
            return None
        except KubeError:
            return None
        return {n["metadata"]["name"]: MemberHealth(n["metadata"]["name"], "ready" if node_ready(n) else "down")
                for n in nodes}


def _taints(node: Mapping[str, Any]) -> set[str]:
    return {t.get("key", "") for t in (node.get("spec") or {}).get("taints") or []}


def _drain(api: KubeApi, node: str) -> None:
    """Cordon, evict every pod but DaemonSet and mirror pods, wait until they are gone."""
    if api.patch(f"/api/v1/nodes/{node}", {"spec": {"unschedulable": True}}) is None:
        return  # no such Node (removed already)

    def movable() -> list[tuple[str, str]]:
        out = []
        for p in api.pods_on(node):
            meta = p["metadata"]
            owners = {o.get("kind") for o in meta.get("ownerReferences") or []}
            if "DaemonSet" in owners or "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
                continue
            if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            out.append((meta["namespace"], meta["name"]))
        return out

    def evicted() -> bool:
        pods = movable()
        for ns, name in pods:
            api.evict(ns, name)
        return not pods

    wait_for(f"node {node} drained", evicted, DRAIN_TIMEOUT, lambda: ", ".join(f"{n}/{p}" for n, p in movable()),
             interval=1.0)


def stop_units(m: Box, units: tuple[str, ...]) -> None:
    """Remove units from a machine (the supervisor stops restarting them) and stop them."""
    for u in units:
        (m.k / "units" / f"{u}.sh").unlink(missing_ok=True)
    for u in units:
        try:
            pid = int((m.k / "run" / f"{u}.pid").read_text())
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        except (OSError, ValueError):
            continue
        # by PID, and only if that PID is still a process of this machine (its pids cgroup)
        if any(line.split(":")[1] == "pids" and line.split(":")[2].startswith(f"/{m.cgroup}")
               for line in cgroups.splitlines() if line.count(":") >= 2):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
