"""The control plane's forms as pure plans, against fakes: who runs what (masters chosen and kept,
the managed control plane outside the nodes), etcd's initial cluster and TLS, the apiservers'
etcd servers and leader election, the load balancer's configuration; the engine's own machines
kept by start-up reconciliation while their cluster lives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from opencs.engines.driver import ENGINE_MACHINE_LABEL, EngineMachine
from opencs.engines.kubernetes import binary, plans, topology
from opencs.engines.kubernetes.config import ClusterNetwork
from opencs.engines.kubernetes.control import ControlPlanes, Started
from opencs.engines.kubernetes.pki import ClusterPKI
from opencs.engines.kubernetes.topology import Member

NET = ClusterNetwork(pod_cidr="172.20.0.0/16", service_cidr="172.21.0.0/20")
MASTERS = [Member("i-a", "10.9.0.2"), Member("i-b", "10.9.0.3"), Member("i-c", "10.9.0.4")]


@pytest.fixture
def database_url() -> None:
    """SQLite only (overrides conftest's two stores): the rules here do not depend on the store."""
    return None


@pytest.fixture(scope="module")
def pki() -> ClusterPKI:
    return ClusterPKI.create("c-topology")


@pytest.fixture(autouse=True)
def _binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plans name the multicall binary; a stand-in file is enough for pure plans."""
    exe = tmp_path / "bin" / "kubernetes"
    exe.parent.mkdir()
    exe.write_text("")
    exe.chmod(0o755)
    monkeypatch.setenv("OPENCS_KUBERNETES_BIN_DIR", str(exe.parent))
    assert binary.binary() == exe


def test_forms_and_engine_machine_ids() -> None:
    assert topology.kind_of("Kubernetes", 1) == "single" and topology.kind_of("kubernetes", 3) == "ha"
    assert topology.kind_of("Kubernetes", 5) == "ha" and topology.kind_of("ManagedKubernetes", 1) == "managed"
    with pytest.raises(ValueError, match="1, 3 or 5"):
        topology.kind_of("Kubernetes", 2)
    lb, cp = (topology.engine_machine_id("c-1", r) for r in (topology.LB_ROLE, topology.CONTROL_PLANE_ROLE))
    assert lb != cp and lb == topology.engine_machine_id("c-1", topology.LB_ROLE)  # a re-run finds the same
    assert lb != topology.engine_machine_id("c-2", topology.LB_ROLE)
    assert all(len(i) == 22 and i.startswith("i-") and i[2:].isalnum() and i[2:].islower() for i in (lb, cp))
    assert topology.engine_roles("ha") == (topology.LB_ROLE,) and topology.engine_roles("single") == ()


def test_masters_are_chosen_once() -> None:
    running = ["i-d", "i-b", "i-c"]
    assert topology.choose_masters([], "i-c", running, 3) == ["i-c", "i-b", "i-d"]  # the first up leads
    assert topology.choose_masters([], "i-c", running[:1] + ["i-c"], 3) is None  # not enough machines yet
    # reserved before a crash: kept, whatever runs first now
    assert topology.choose_masters(["i-x", "i-y"], "i-d", running, 3) == ["i-x", "i-y", "i-d"]
    assert topology.choose_masters(["i-x", "i-y", "i-z"], "i-d", running, 3) == ["i-x", "i-y", "i-z"]


def test_highly_available_control_plane_plan(tmp_path: Path, pki: ClusterPKI) -> None:
    p = plans.control_plane(tmp_path, pki, MASTERS[1], MASTERS, NET, endpoint_ip="10.9.0.9")
    etcd = p.units["etcd"]

    def arg(argv: list[str], flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert arg(etcd, "--initial-cluster") == (
        "i-a=https://10.9.0.2:2380,i-b=https://10.9.0.3:2380,i-c=https://10.9.0.4:2380")
    assert arg(etcd, "--listen-peer-urls") == "https://10.9.0.3:2380" and "--peer-client-cert-auth" in etcd
    assert "--client-cert-auth" in etcd and arg(etcd, "--initial-cluster-state") == "new"
    # every master's etcd gets the same token (a static cluster is one cluster)
    other = plans.control_plane(tmp_path, pki, MASTERS[0], MASTERS, NET, endpoint_ip="10.9.0.9").units["etcd"]
    assert arg(other, "--initial-cluster-token") == arg(etcd, "--initial-cluster-token")
    api = p.units["kube-apiserver"]
    assert arg(api, "--etcd-servers") == "https://10.9.0.2:2379,https://10.9.0.3:2379,https://10.9.0.4:2379"
    assert arg(api, "--advertise-address") == "10.9.0.3" and "--etcd-certfile" in api
    assert "--leader-elect=true" in p.units["kube-controller-manager"] and "--leader-elect=true" in p.units[
        "kube-scheduler"]
    cert = x509.load_pem_x509_certificate(p.files["pki/apiserver.crt"][0].encode())
    ips = {str(i) for i in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
           .get_values_for_type(x509.IPAddress)}
    assert {"10.9.0.3", "10.9.0.9", "172.21.0.1"} <= ips  # its own address and the load balancer's
    assert "server: https://10.9.0.3:6443" in p.files["pki/kube-scheduler.kubeconfig"][0]  # its own apiserver


def test_etcd_has_its_own_ca_the_same_on_every_master(pki: ClusterPKI) -> None:
    again = ClusterPKI.from_ca(pki.ca.cert_pem, pki.ca.key_pem)
    a, b = (x509.load_pem_x509_certificate(p.etcd_ca().cert_pem.encode()) for p in (pki, again))
    assert a.public_key() == b.public_key() and a.serial_number == b.serial_number and a.subject == b.subject
    ca = x509.load_pem_x509_certificate(pki.etcd_ca().cert_pem.encode())
    member = x509.load_pem_x509_certificate(again.etcd_member("i-a", "10.9.0.2").cert_pem.encode())
    member.verify_directly_issued_by(ca)  # issued on one master, trusted on another
    assert ca.subject != x509.load_pem_x509_certificate(pki.ca.cert_pem.encode()).subject
    with pytest.raises(ValueError):  # a user's certificate of the cluster CA does not open etcd
        x509.load_pem_x509_certificate(pki.client("someone").cert_pem.encode()).verify_directly_issued_by(ca)


def test_load_balancer_plan(tmp_path: Path) -> None:
    p = plans.load_balancer(tmp_path, "10.9.0.9", MASTERS)
    cfg = p.files["haproxy.cfg"][0]
    assert "bind 10.9.0.9:6443" in cfg and "mode tcp" in cfg and "option httpchk GET /readyz" in cfg
    assert [line.split()[1:] for line in cfg.splitlines() if line.strip().startswith("server ")] == [
        ["i-a", "10.9.0.2:6443"], ["i-b", "10.9.0.3:6443"], ["i-c", "10.9.0.4:6443"]]
    assert "option redispatch 1" in cfg  # a connection refused by a dead apiserver goes to another
    assert p.units["haproxy"][1:] == ["-db", "-f", str(tmp_path / "haproxy.cfg")]


# ---------------------------------------------------------------- ControlPlanes against fakes


@dataclass
class Row:
    instance_id: str
    private_ip: str
    details: dict[str, Any]
    state: str = "running"
    role: str = ""
    swarm_node_id: str = ""
    docker_host: str = ""


class Book:
    def __init__(self, rows: list[Row]) -> None:
        self.rows = {r.instance_id: r for r in rows}

    def of_cluster(self, cluster_id: str) -> list[Any]:
        return list(self.rows.values())

    def get(self, instance_id: str) -> Any:
        return self.rows.get(instance_id)

    def set_membership(self, instance_id: str, role: str, member_id: str) -> None:
        self.rows[instance_id].role, self.rows[instance_id].swarm_node_id = role, member_id


class Pool:
    def __init__(self, root: Path) -> None:
        self.root, self.made = root, {}  # type: ignore[var-annotated]

    def ensure(self, cluster_id: str, instance_id: str) -> EngineMachine:
        if instance_id not in self.made:
            self.made[instance_id] = _machine(self.root, instance_id, f"10.9.0.{100 + len(self.made)}")
        return self.made[instance_id]  # type: ignore[no-any-return]

    def find(self, instance_id: str) -> EngineMachine | None:
        return self.made.get(instance_id)

    def destroy(self, instance_id: str) -> None:
        self.made.pop(instance_id, None)


def _details(root: Path, iid: str) -> dict[str, Any]:
    return {"dir": str(root / iid), "netns": f"ns-{iid}", "unix_socket": f"/run/{iid}.sock"}


def _machine(root: Path, iid: str, ip: str) -> EngineMachine:
    return EngineMachine(iid, ip, _details(root, iid))


def _planes(tmp_path: Path, rows: list[Row]) -> tuple[ControlPlanes, Book, Pool]:
    book, pool = Book(rows), Pool(tmp_path)
    cp = ControlPlanes(book)
    cp.pool = pool
    cp._ready = lambda server, admin, masters, running: Started(server, admin, masters, "uid")  # type: ignore
    return cp, book, pool


def test_ha_start_writes_every_master_and_the_balancer(tmp_path: Path, pki: ClusterPKI) -> None:
    rows = [Row(f"i-{c}", f"10.9.0.{i + 2}", _details(tmp_path, f"i-{c}")) for i, c in enumerate("dcbw")]
    cp, book, pool = _planes(tmp_path, rows)
    started = cp.start("c-1", "ha", "i-d", 3, pki, NET)
    lb = topology.engine_machine_id("c-1", topology.LB_ROLE)
    assert started.server == f"https://{pool.made[lb].private_ip}:6443"
    assert [m.name for m in started.masters] == ["i-b", "i-c", "i-d"]
    assert {r.instance_id for r in book.rows.values() if r.role == "manager"} == {"i-b", "i-c", "i-d"}
    assert book.rows["i-w"].role == ""  # the fourth machine stays a worker
    cfg = (tmp_path / lb / "k8s" / "haproxy.cfg").read_text()
    assert all(f"server i-{c} " in cfg for c in "bcd") and "i-w" not in cfg
    for c in "bcd":
        etcd = (tmp_path / f"i-{c}" / "k8s" / "units" / "etcd.sh").read_text()
        assert "i-b=https://10.9.0.4:2380,i-c=https://10.9.0.3:2380,i-d=https://10.9.0.2:2380" in etcd
    assert not (tmp_path / "i-w" / "k8s").exists()
    # a re-run (crash after the choice) keeps the same masters even if another machine is first now
    assert [m.name for m in cp.start("c-1", "ha", "i-w", 3, pki, NET).masters] == ["i-b", "i-c", "i-d"]


def test_managed_start_keeps_the_control_plane_off_the_nodes(tmp_path: Path, pki: ClusterPKI) -> None:
    cp, book, pool = _planes(tmp_path, [Row("i-w", "10.9.0.2", _details(tmp_path, "i-w"))])
    started = cp.start("c-2", "managed", "i-w", 0, pki, NET)
    cpid = topology.engine_machine_id("c-2", topology.CONTROL_PLANE_ROLE)
    assert started.masters == [] and started.admin.name == cpid and started.server.endswith(":6443")
    units = {p.stem for p in (tmp_path / cpid / "k8s" / "units").glob("*.sh")}
    assert units == set(plans.CONTROL_PLANE_UNITS)  # no kubelet: not a node
    assert not (tmp_path / "i-w" / "k8s").exists() and book.rows["i-w"].role == ""
    cp.release("c-2")
    assert pool.made == {}


def test_start_up_reconciliation_keeps_engine_machines_of_live_clusters(runtime: Any) -> None:
    from opencs.providers.base import InstanceSpec
    from opencs.providers.fake import FakeProvider

    prov = FakeProvider()
    runtime.providers["local"] = runtime.health.providers["local"] = prov
    cid = runtime.clusters.create(_SwarmBody())[0]
    prov.create(InstanceSpec(instance_id="i-" + "a" * 20, labels={ENGINE_MACHINE_LABEL: cid}))
    prov.create(InstanceSpec(instance_id="i-" + "b" * 20, labels={ENGINE_MACHINE_LABEL: "c-gone"}))
    prov.create(InstanceSpec(instance_id="i-" + "c" * 20))
    runtime.health.reconcile_inventory()
    assert set(prov.instances) == {"i-" + "a" * 20}


class _SwarmBody:
    name, size, cluster_type, password, region_id = "sw-keep", 1, "swarm", None, "local"
    network_mode, vpc_id, vswitch_id, subnet_cidr, instance_type = "bridge", "", "", "", ""

    def stored_spec(self) -> dict[str, Any]:
        return {}
