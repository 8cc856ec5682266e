"""KubernetesDriver: the cluster driver of dedicated Kubernetes clusters (spec §6.3).

Machines come from the provider with the Kubernetes node runtime (runtime.py: containerd under a
supervisor). The driver makes the first one the master — it writes the control plane's plan
(plans.py) into the machine and waits for the apiserver — and every machine (the master too,
tainted NoSchedule) a node; membership is what the apiserver says: a member id is the Node's name
(the instance id). Every method is idempotent: plans are written only where missing, and waiting
is on the cluster's own state (Node Ready, pod CIDRs, add-ons available).

The control plane has three forms (topology.py, started by control.py): one master, 3 or 5
masters behind a load balancer, or a managed control plane in a machine of opencs that is not a
node (cluster_type ManagedKubernetes; with profile Edge its workers are cloud and edge nodes, edge.py).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from opencs.engines.driver import (
    CLUSTER_LABEL,
    ClusterDriver,
    ClusterPKI,
    Credentials,
    DriverError,
    EngineMachines,
    MemberHealth,
    NodeBook,
    NodeConfig,
    NoManager,
    run_parallel,
)
from opencs.engines.kubernetes import addons, binary, edge, network, plans, sshnode, topology
from opencs.engines.kubernetes.api import KubeApi, KubeError, connect, node_ready, wait_for
from opencs.engines.kubernetes.box import Box, NodeBox, SshBox
from opencs.engines.kubernetes.config import ClusterNetwork
from opencs.engines.kubernetes.control import ControlPlanes
from opencs.engines.kubernetes.events import KubernetesDeathReader
from opencs.engines.kubernetes.kubeconfig import kubeconfig
from opencs.engines.kubernetes.monitor import MonitorAccess
from opencs.engines.kubernetes.pki import ClusterPKI as KubePKI
from opencs.engines.kubernetes.runtime import (
    STD_PATH,
    KubernetesNodeRuntime,
    missing_host_binaries,
)
from opencs.engines.kubernetes.usage import KubernetesUsageReader
from opencs.machine import HostShell, RegistryAuth

if TYPE_CHECKING:
    from opencs.engines.apps import AppEngine
    from opencs.store.models import InstanceRow

log = logging.getLogger("opencs.kubernetes")

NODES_READY_TIMEOUT = 240.0
DRAIN_TIMEOUT = 60.0


class ClusterBook(Protocol):
    """What the driver reads of a cluster in the store: its CA (key decrypted) and its settings."""

    def pki(self, cluster_id: str) -> ClusterPKI: ...

    def settings(self, cluster_id: str) -> Mapping[str, Any]: ...


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
    accepts = ("kubernetes", "managedkubernetes")

    def __init__(self, book: NodeBook, clusters: ClusterBook, runtime: KubernetesNodeRuntime | None = None,
                 seed_images: Callable[[], dict[str, str]] | None = None, etcd_fsync: bool = True) -> None:
        self.book = book
        self.clusters = clusters
        self._runtime = runtime or KubernetesNodeRuntime()
        # puts the pause and CoreDNS images into the bundled registry; returns their references
        self._seed_images = seed_images or (lambda: {})
        self.control = ControlPlanes(book, etcd_fsync)
        # what the usage collector and the death watcher read the clusters with (issue 12)
        monitor = MonitorAccess(self._pki, self._api, lambda cluster_id: self._endpoint(cluster_id)[0])
        self._usage, self._deaths = KubernetesUsageReader(monitor), KubernetesDeathReader(monitor)
        self._shells: Callable[[str, str], HostShell | None] = lambda provider, instance_id: None

    def use_machines(self, pool: EngineMachines) -> None:
        """Where the engine's own machines (managed control planes, load balancers) come from."""
        self.control.pool = pool

    def use_shells(self, shells: Callable[[str, str], HostShell | None]) -> None:
        """How the driver reaches a host the provider does not own: (provider, instance id) -> its shell."""
        self._shells = shells

    def _box(self, r: InstanceRow) -> NodeBox:
        """A member as the driver works on it: a local machine, or a node the ssh provider booted on a host."""
        if not (r.details or {}).get("node_dir"):
            return Box.of(r)
        shell = self._shells(r.provider, r.instance_id)
        if shell is None:
            raise DriverError(f"instance {r.instance_id}: its host cannot be reached from this server",
                              "SshUnreachable")
        return SshBox.of(r, shell)

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
        if missing := missing_host_binaries(self._runtime.oci_runtime):
            raise DriverError(f"Kubernetes nodes cannot run on this host, missing: {', '.join(missing)} "
                              "(apt-get install containerd runc crun containernetworking-plugins iptables)",
                              "EngineUnavailable")
        try:
            network_of(spec)
        except ValueError as e:
            raise DriverError(str(e), "InvalidParameter") from None
        k = spec.get("kubernetes") or {}
        kind = topology.kind_of(cluster_type, int(k.get("master_count") or 1))
        if kind == "ha" and shutil.which("haproxy", path=STD_PATH) is None:
            raise DriverError("3 or 5 masters need HAProxy in front of their apiservers: apt-get install haproxy",
                              "EngineUnavailable")
        if kind != "single" and self.control.pool is None:
            raise DriverError("this server has no machines for a cluster's own control plane", "EngineUnavailable")
        return "ManagedKubernetes" if kind == "managed" else self.cluster_type

    def check_machine(self, cluster_id: str, provider: str) -> None:
        if provider not in ("local", "ssh"):  # an ssh host was probed before (probe_machine)
            raise DriverError(not_a_node_host(provider), "ProviderUnsupported")

    def probe_machine(self, cluster_id: str, provider: str, host_ip: str, shell: HostShell) -> None:
        """An SSH host is asked what it has (sshnode.py): the 412 names what it lacks, or that it is
        not on the network of the cluster's nodes."""
        if provider != "ssh":
            return
        try:
            lacks = sshnode.host_lacks(shell)
            if lacks:
                raise DriverError(sshnode.refusal(host_ip, lacks), "ProviderUnsupported")
            member = self._admin_box(cluster_id, self._form_of(cluster_id)[0])
            if (why := sshnode.network_problem(
                    shell, host_ip, member.ip, lambda dst: network.route_to(member.netns, dst))):
                raise DriverError(f"{why}: pod routes go to node addresses directly, so a Kubernetes node over "
                                  "SSH must be on the same network as the cluster's nodes. Nothing was installed "
                                  "on the host", "HostNotOnNodeNetwork")
        except OSError as e:
            raise DriverError(f"probing the ssh host {host_ip}: {e}", "SshUnreachable") from None

    def managers_for(self, cluster_id: str, size: int) -> int:
        return self._form_of(cluster_id)[1]

    def node_config(self, pki: ClusterPKI | None, instance_id: str, registry: str | None,
                    pull_auth: RegistryAuth | None = None) -> NodeConfig:
        """containerd pulls through the bundled registry (docker.io's mirror too) with the node's
        credential, so pods name the account's images without imagePullSecrets."""
        cfg = NodeConfig(labels={"opencs.instance": instance_id}, runtime=self._runtime.name,
                         registry_mirror=f"http://{registry}" if registry else None,
                         insecure_registries=[registry] if registry else [])
        if pki is not None:
            cfg.labels[CLUSTER_LABEL] = pki.cluster_id
            cfg.registry_auth = pull_auth if registry and pull_auth and pull_auth.registry == registry else None
        return cfg

    def _pki(self, cluster_id: str) -> KubePKI:
        p = self.clusters.pki(cluster_id)
        return KubePKI.from_ca(p.ca_cert_pem, p.ca_key_pem)

    def _settings(self, cluster_id: str) -> tuple[ClusterNetwork, dict[str, Any]]:
        s = self.clusters.settings(cluster_id)
        return network_of(s), dict(s.get("kubernetes") or {})

    # ------------------------------------------------------------ members and control plane

    def _form_of(self, cluster_id: str) -> tuple[str, int]:
        """The control plane's form ('single', 'ha', 'managed') and its number of masters."""
        k = self.clusters.settings(cluster_id).get("kubernetes") or {}
        count = int(k.get("master_count") or 1)
        kind = topology.kind_of("ManagedKubernetes" if k.get("managed") else "Kubernetes", count)
        return kind, 0 if kind == "managed" else count

    def _members(self, cluster_id: str) -> list[InstanceRow]:
        return [r for r in self.book.of_cluster(cluster_id) if r.swarm_node_id]

    def _admin_box(self, cluster_id: str, kind: str) -> Box:
        """A machine holding the admin credentials: a master, or the managed control plane's machine."""
        if kind == "managed":
            if (cp := self.control.engine_box(cluster_id, topology.CONTROL_PLANE_ROLE)) is not None:
                return cp
            raise NoManager(cluster_id)
        for r in self.book.of_cluster(cluster_id):
            if r.role == "manager" and r.swarm_node_id:
                return Box.of(r)
        raise NoManager(cluster_id)

    def _endpoint(self, cluster_id: str) -> tuple[str, Box]:
        """The cluster's API endpoint (what kubeconfigs name) and a machine with admin credentials."""
        kind, _ = self._form_of(cluster_id)
        admin = self._admin_box(cluster_id, kind)
        if kind == "ha":
            lb = self.control.engine_box(cluster_id, topology.LB_ROLE)
            if lb is None:
                raise NoManager(cluster_id)
            return topology.server_url(lb.ip), admin
        return topology.server_url(admin.ip), admin

    @contextmanager
    def _api(self, cluster_id: str, timeout: float = 10.0) -> Iterator[KubeApi]:
        server, admin = self._endpoint(cluster_id)
        try:
            with connect(server, admin.k / "pki", timeout) as api:
                yield api
        except KubeError as e:
            raise DriverError(str(e), "KubernetesError") from e

    def api_url(self, cluster_id: str) -> str:
        try:
            return self._endpoint(cluster_id)[0]
        except DriverError:
            return ""

    def manager_endpoints(self, cluster_id: str) -> list[str]:
        return [self._endpoint(cluster_id)[0]]

    def usage_reader(self) -> KubernetesUsageReader:
        return self._usage

    def death_reader(self) -> KubernetesDeathReader:
        return self._deaths

    def app_engine(self, cluster_id: str) -> AppEngine:
        raise DriverError("the Application API (projects, services) is for Swarm clusters: run workloads on a "
                          "Kubernetes cluster with kubectl and the kubeconfig of GET /k8s/{id}/user_config",
                          "NoAppEngine")

    # ------------------------------------------------------------ create and join

    def _node_plan(self, cluster_id: str, m: NodeBox, server: str, master: bool,
                   attached: bool = False) -> plans.Plan:
        """`attached`: a machine joined to the running cluster (attach, attach script), not made by it."""
        net, k = self._settings(cluster_id)
        labels, taints = edge.node_marks(attached) if edge.is_edge(k) and not master else ({}, ())
        s = plans.NodeSettings(name=m.name, ip=m.ip, cgroup=m.cgroup, runtime_socket=m.socket, server=server,
                               network=net, proxy_mode=k.get("proxy_mode") or "iptables", master=master,
                               cpu_policy=k.get("cpu_policy") or "none",
                               system_reserved=dict(k.get("system_reserved") or {}), labels=labels, taints=taints,
                               exe=m.exe)
        return plans.node(m.k, self._pki(cluster_id), s)

    def create(self, cluster_id: str, first_instance_id: str) -> str:
        """The control plane in the cluster's form; masters (dedicated forms, tainted NoSchedule) are
        also nodes, in the managed form the first instance becomes a worker."""
        if self.book.get(first_instance_id) is None:
            raise DriverError(f"instance {first_instance_id} vanished", "InstanceNotFound")
        kind, count = self._form_of(cluster_id)
        net, _ = self._settings(cluster_id)
        self._seed_images()  # the sandbox image before any pod
        cp = self.control.start(cluster_id, kind, first_instance_id, count, self._pki(cluster_id), net)
        for m in cp.masters:
            plans.install(m.k, self._node_plan(cluster_id, m, cp.server, master=True))
            self.book.set_membership(m.name, "manager", m.name)
        if kind == "managed":
            self._join_workers(cluster_id, [first_instance_id], cp.server)
        return cp.uid

    def _join_workers(self, cluster_id: str, instance_ids: list[str], server: str) -> None:
        def install(iid: str) -> None:
            r = self.book.get(iid)
            if r is None:
                raise DriverError(f"instance {iid} vanished", "InstanceNotFound")
            m = self._box(r)
            if isinstance(m, SshBox):
                m = sshnode.with_binary(m)
            attached = bool((r.details or {}).get("attached_spec"))
            m.install(self._node_plan(cluster_id, m, server, master=False, attached=attached))
            self.book.set_membership(iid, "worker", m.name)

        run_parallel(install, instance_ids)

    def join(self, cluster_id: str, size: int) -> None:
        """Every running machine a Ready node: plans for new ones, pod CIDRs routed, add-ons on."""
        rows = [r for r in self.book.of_cluster(cluster_id) if r.state == "running"]
        if not rows:
            raise DriverError("cluster has no running instance", "NoInstances")
        kind, _ = self._form_of(cluster_id)
        if unjoined := [r for r in rows if r.role == "manager" and not r.swarm_node_id]:
            self.create(cluster_id, unjoined[0].instance_id)  # masters chosen before a crash: finish them
        server, _ = self._endpoint(cluster_id)
        self._join_workers(cluster_id, [r.instance_id for r in rows if not r.role], server)
        members = [self._box(r) for r in self._members(cluster_id)]
        net, k = self._settings(cluster_id)
        with self._api(cluster_id) as api:
            try:
                self._converge(api, members, net, self._routed_engine_boxes(cluster_id, kind))
                placement = edge.addon_placement() if edge.is_edge(k) else {}
                addons.ensure(api, self._seed_images(), net, placement)
            except (KubeError, network.RouteError) as e:
                raise DriverError(str(e), "NodesNotReady") from e

    def _routed_engine_boxes(self, cluster_id: str, kind: str) -> list[NodeBox]:
        """Engine machines that must reach pods: the managed apiserver answers pods (the kubernetes
        Service) and calls webhooks."""
        cp = self.control.engine_box(cluster_id, topology.CONTROL_PLANE_ROLE) if kind == "managed" else None
        return [cp] if cp is not None else []

    def _converge(self, api: KubeApi, members: list[NodeBox], net: ClusterNetwork, routed: list[NodeBox]) -> None:
        names = {m.name for m in members}

        def registered() -> dict[str, dict[str, Any]] | None:
            nodes = {n["metadata"]["name"]: n for n in api.nodes()}
            if all(nodes.get(m, {}).get("spec", {}).get("podCIDR") for m in names):
                return nodes
            return None

        def missing() -> str:
            return "; ".join(m.log_tail("kubelet", 3) for m in members)

        nodes = wait_for("every node registered with a pod CIDR", registered, NODES_READY_TIMEOUT, missing)
        self._route(members + routed, nodes, net)
        for m in members:
            m.install(plans.cni(m.k, nodes[m.name]["spec"]["podCIDR"], m.bridge))

        def ready() -> bool:
            return all(node_ready(n) for n in api.nodes() if n["metadata"]["name"] in names)

        wait_for("every node Ready", ready, NODES_READY_TIMEOUT, missing)
        for m in members:
            role = "master" if plans.MASTER_TAINT.split("=")[0] in _taints(nodes[m.name]) else "worker"
            api.patch(f"/api/v1/nodes/{m.name}", {"metadata": {"labels": {f"node-role.kubernetes.io/{role}": ""}}})

    def _route(self, members: list[NodeBox], nodes: Mapping[str, Mapping[str, Any]], net: ClusterNetwork) -> None:
        cidrs = {m.name: (str(nodes.get(m.name, {}).get("spec", {}).get("podCIDR") or ""), m.ip) for m in members}
        for m in members:
            want = network.wanted_routes(m.name, cidrs, net.service_cidr)
            m.install(plans.Plan(files={"routes": (network.routes_text(want), 0o644)}))
            m.sync_routes(want, net.pod_cidr)

    def set_managers(self, cluster_id: str, want: int) -> None:
        """Masters are fixed at create time (etcd's membership with them): nothing is promoted or demoted."""

    # ------------------------------------------------------------ removal

    def remove_node(self, cluster_id: str, instance_id: str) -> None:
        """Cordon, drain (evict its pods), delete the Node, stop its units; it stays a machine."""
        r = self.book.get(instance_id)
        if r is None:
            return
        m = self._box(r)
        kind, _ = self._form_of(cluster_id)
        if r.role == "manager" and kind == "ha":
            raise DriverError(f"{m.name} is one of the cluster's etcd members and apiservers: masters are fixed at "
                              "create time", "ErrorMasterNode")
        if r.swarm_node_id and r.role != "manager":
            try:
                with self._api(cluster_id) as api:
                    _drain(api, m.name)
                    api.delete(f"/api/v1/nodes/{m.name}")
                    nodes = {n["metadata"]["name"]: n for n in api.nodes()}
                others = [self._box(x) for x in self._members(cluster_id) if x.instance_id != instance_id]
                self._route(others + self._routed_engine_boxes(cluster_id, kind), nodes, self._settings(cluster_id)[0])
            except (KubeError, network.RouteError) as e:
                raise DriverError(f"removing node {m.name}: {e}", "DrainFailed") from e
        m.stop_units(plans.NODE_UNITS)
        self.book.set_membership(instance_id, "", "")

    def reset_node(self, cluster_id: str, instance_id: str) -> None:
        r = self.book.get(instance_id)
        if r is not None and r.swarm_node_id:
            self.remove_node(cluster_id, instance_id)

    def delete(self, cluster_id: str) -> None:
        """The engine's own machines (a managed control plane, a load balancer); the nodes go with
        the provider."""
        try:
            self.control.release(cluster_id)
        except Exception as e:  # the provider's failure, as the driver's
            raise DriverError(f"releasing the control plane's machines: {e}", "ReleaseFailed") from e

    # ------------------------------------------------------------ what users and monitors get

    def credentials(self, pki: ClusterPKI, user_cert_pem: str, user_key_pem: str) -> Credentials:
        server = pki.server or self.api_url(pki.cluster_id)
        from opencs.pki import IssuedCert

        kc = kubeconfig(server, pki.ca_cert_pem, IssuedCert(user_cert_pem, user_key_pem),
                        cluster=pki.cluster_id, user=f"user-{pki.cluster_id}")
        return Credentials(kind="kubeconfig", ca_pem=pki.ca_cert_pem, cert_pem=user_cert_pem, key_pem=user_key_pem,
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


def not_a_node_host(provider: str) -> str:
    """Why a machine of `provider` is refused as a node (the attach's 412)."""
    return (f"a {provider!r} machine cannot become a Kubernetes node: nodes run on the local provider's machines, "
            "and on SSH-registered hosts that have what a node needs (probed over SSH at attach): a node is a boot "
            "plan opencs installs and supervises in a machine of its own (containerd with CRI, kubelet and "
            "kube-proxy in the machine's mount namespace and cgroup, a CNI bridge over its pod CIDR, routes to the "
            "other nodes' pod CIDRs) and removes with the machine")


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
