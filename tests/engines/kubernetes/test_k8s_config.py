"""Pure parts of the Kubernetes engine: PKI identities, kubeconfig, generated configs, the version pin."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.x509.oid import NameOID

from opencs.engines.kubernetes import binary
from opencs.engines.kubernetes.config import (
    ClusterNetwork,
    KubeletSettings,
    cni_conflist,
    kube_proxy_config,
    kubelet_config,
)
from opencs.engines.kubernetes.kubeconfig import kubeconfig
from opencs.engines.kubernetes.pki import ClusterPKI
from opencs.pki import load_cert, verify_chain

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pki() -> ClusterPKI:
    return ClusterPKI.create("c-test")


def _subject(pem: str) -> tuple[str, list[str]]:
    name = load_cert(pem).subject
    cn = name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return str(cn), [str(a.value) for a in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def test_component_identities(pki: ClusterPKI) -> None:
    assert _subject(pki.kubelet_client("node-a").cert_pem) == ("system:node:node-a", ["system:nodes"])
    assert _subject(pki.admin().cert_pem) == ("kubernetes-admin", ["system:masters"])
    assert _subject(pki.client("system:kube-scheduler").cert_pem) == ("system:kube-scheduler", [])
    for cred in (pki.kubelet_client("n"), pki.admin(), pki.apiserver(["10.0.0.5"], "10.96.0.1")):
        assert verify_chain(cred.cert_pem, pki.ca.cert_pem)


def test_apiserver_sans(pki: ClusterPKI) -> None:
    from cryptography import x509

    cert = load_cert(pki.apiserver(["10.0.0.5"], "10.96.0.1").cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    assert {"10.0.0.5", "10.96.0.1", "127.0.0.1"} <= ips
    assert "kubernetes.default.svc.cluster.local" in san.get_values_for_type(x509.DNSName)


def test_kubeconfig_embeds_credentials(pki: ClusterPKI) -> None:
    cred = pki.admin()
    doc = yaml.safe_load(kubeconfig("https://10.0.0.5:6443", pki.ca.cert_pem, cred, user="admin"))
    assert doc["clusters"][0]["cluster"]["server"] == "https://10.0.0.5:6443"
    assert base64.b64decode(doc["users"][0]["user"]["client-key-data"]).decode() == cred.key_pem
    assert doc["current-context"] == doc["contexts"][0]["name"]


def test_network_plan() -> None:
    net = ClusterNetwork(pod_cidr="172.20.0.0/16", service_cidr="172.21.0.0/20", node_cidr_mask=25)
    assert net.node_pod_cidr(0) == "172.20.0.0/25" and net.node_pod_cidr(3) == "172.20.1.128/25"
    assert net.apiserver_service_ip == "172.21.0.1" and net.dns_service_ip == "172.21.0.10"
    with pytest.raises(ValueError, match="overlaps"):
        ClusterNetwork(pod_cidr="10.0.0.0/8", service_cidr="10.96.0.0/12")
    with pytest.raises(ValueError, match="node_cidr_mask"):
        ClusterNetwork(pod_cidr="10.244.0.0/16", node_cidr_mask=12)


def test_kubelet_never_touches_host_settings(tmp_path: Path) -> None:
    cfg = yaml.safe_load(kubelet_config(KubeletSettings("n1", "10.0.0.7", "ocsn1", tmp_path)))
    assert cfg["cgroupDriver"] == "cgroupfs" and cfg["cgroupRoot"] == "/ocsn1"
    assert cfg["protectKernelDefaults"] is True and cfg["kubeletCgroups"] == "/ocsn1/kubelet"
    assert "systemCgroups" not in cfg and cfg["oomScoreAdj"] == 0 and cfg["failSwapOn"] is False
    # pod start: parallel pulls and no pull rate limit (a pull over it fails into a 10 s back-off)
    assert cfg["serializeImagePulls"] is False and cfg["registryPullQPS"] == 0


def test_kube_proxy_conntrack_untouched(tmp_path: Path) -> None:
    cfg = yaml.safe_load(kube_proxy_config(tmp_path / "kc", "n1", "10.0.0.7", ClusterNetwork(), "nftables"))
    assert cfg["conntrack"]["maxPerCore"] == 0 and cfg["conntrack"]["tcpEstablishedTimeout"] == "0s"
    with pytest.raises(ValueError, match="IPVS"):
        kube_proxy_config(tmp_path / "kc", "n1", "10.0.0.7", ClusterNetwork(), "ipvs")


def test_cni_is_per_node(tmp_path: Path) -> None:
    assert '"subnet": "10.244.3.0/24"' in cni_conflist("10.244.3.0/24", tmp_path / "ipam")


def test_version_pin_matches_go_mod() -> None:
    go_mod = (REPO / "build" / "kubernetes" / "go.mod").read_text()
    assert re.search(rf"^\s*k8s\.io/kubernetes {re.escape(binary.KUBERNETES_VERSION)}$", go_mod, re.M)
    staging = binary.KUBERNETES_VERSION.replace("v1.", "v0.", 1)
    assert re.search(rf"k8s\.io/api => k8s\.io/api {re.escape(staging)}$", go_mod, re.M)


def test_service_account_key_is_derived_from_the_ca() -> None:
    a, b = ClusterPKI.create("c-a"), ClusterPKI.create("c-b")
    again = ClusterPKI.from_ca(a.ca.cert_pem, a.ca.key_pem)
    assert ClusterPKI.from_ca(a.ca.cert_pem, a.ca.key_pem).sa_pub_pem == again.sa_pub_pem
    assert ClusterPKI.from_ca(b.ca.cert_pem, b.ca.key_pem).sa_pub_pem != again.sa_pub_pem


def test_node_runtime_boot_plan(tmp_path: Path) -> None:
    from opencs.engines.kubernetes.runtime import KubernetesNodeRuntime
    from opencs.machine import MachineInfo, RuntimeSettings

    m = MachineInfo("i-aaaaaaaaaaaaaaaaaaaa", "10.9.0.5", "i-aaaaaaaaaaaaaaaaaaaa", tmp_path, "ocsnaaaa",
                    Path("/run/opencs/x/i-aaaaaaaaaaaaaaaaaaaa.sock"))
    rt = KubernetesNodeRuntime()
    plan = rt.boot_plan(m, RuntimeSettings(registry_mirror="http://10.9.0.1:5000"))
    toml = plan.files["k8s/containerd.toml"]
    assert 'address = "/run/opencs/x/i-aaaaaaaaaaaaaaaaaaaa.sock"' in toml  # the provider's API socket
    assert 'address = "/run/containerd/containerd.sock.ttrpc"' in toml  # private: nothing left on the host
    assert 'sandbox_image = "10.9.0.1:5000/opencs/pause:3.10"' in toml
    assert "exec containerd --config" in plan.files["k8s/units/containerd.sh"]
    assert plan.files["k8s/machine-id"] == rt.boot_plan(m, RuntimeSettings()).files["k8s/machine-id"]
    assert "/sys/fs/cgroup/pids" not in plan.env["OCS_CG_HIER"].split()  # the launcher joined it already
    assert plan.binds["/var/lib/kubelet"] == "k8s/kubelet" and "/run/containerd" in plan.tmpfs
    assert rt.tls_port(RuntimeSettings()) is None and "k8s/certs.d/docker.io/hosts.toml" in plan.files
    assert "auth]" not in toml and plan.private == {"k8s/containerd.toml"}


def test_oci_runtime_crun_or_runc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  caplog: pytest.LogCaptureFixture) -> None:
    """crun runs the containers behind the runc v2 shim where installed (its path as the shim's
    BinaryName; on a hybrid cgroup host the machine hides the unified hierarchy's controllers from
    it); runc by default otherwise, logged once; asked for by name it is required."""
    import tomllib

    from opencs.engines.kubernetes import runtime
    from opencs.machine import MachineInfo, RuntimeSettings

    m = MachineInfo("i-aaaaaaaaaaaaaaaaaaaa", "10.9.0.5", "i-aaaaaaaaaaaaaaaaaaaa", tmp_path, "ocsnaaaa",
                    Path("/run/opencs/x/i-aaaaaaaaaaaaaaaaaaaa.sock"))

    def options(plan: Any) -> dict[str, Any]:
        cri = tomllib.loads(plan.files["k8s/containerd.toml"])["plugins"]["io.containerd.grpc.v1.cri"]
        out: dict[str, Any] = cri["containerd"]["runtimes"]["runc"]["options"]
        return out

    real_which = runtime.shutil.which
    monkeypatch.setattr(runtime.shutil, "which", lambda b, path=None: "/usr/bin/crun" if b == "crun"
                        else real_which(b, path=path))
    monkeypatch.setattr(runtime, "_has_cgroup2_controllers", lambda: True)
    auto = runtime.KubernetesNodeRuntime()
    plan = auto.boot_plan(m, RuntimeSettings())
    assert auto.oci_runtime == "crun" and "crun" in auto.required_binaries
    assert options(plan) == {"SystemdCgroup": False, "BinaryName": "/usr/bin/crun"}
    assert plan.env["OCS_CG2_MASK"] == "/sys/fs/cgroup/unified/cgroup.controllers" and plan.files["k8s/empty"] == ""
    assert 'mount --bind "$K/empty" "$OCS_CG2_MASK"' in plan.argv[2]
    monkeypatch.setattr(runtime, "_has_cgroup2_controllers", lambda: False)  # a pure v1 (or v2) host
    assert runtime.KubernetesNodeRuntime().boot_plan(m, RuntimeSettings()).env["OCS_CG2_MASK"] == ""

    plan = runtime.KubernetesNodeRuntime(oci_runtime="runc").boot_plan(m, RuntimeSettings())
    assert options(plan) == {"SystemdCgroup": False} and plan.env["OCS_CG2_MASK"] == ""

    monkeypatch.setattr(runtime.shutil, "which", lambda b, path=None: None if b == "crun" else real_which(b, path=path))
    with caplog.at_level("WARNING", logger=runtime.__name__):
        fallback = runtime.KubernetesNodeRuntime()
        assert fallback.oci_runtime == "runc" and fallback.oci_runtime == "runc"
        assert options(fallback.boot_plan(m, RuntimeSettings())) == {"SystemdCgroup": False}
    assert [r.message for r in caplog.records].count(
        "crun is not installed: Kubernetes nodes run containers with runc, whose container starts cost about "
        "twice the CPU (apt-get install crun)") == 1
    wanted = runtime.KubernetesNodeRuntime(oci_runtime="crun")  # asked for: required, missing is an error
    assert "crun" in wanted.required_binaries and "crun" in runtime.missing_host_binaries("crun")
    with pytest.raises(ValueError, match="one of crun, runc"):
        runtime.KubernetesNodeRuntime(oci_runtime="youki")


def test_node_credential_goes_into_containerds_cri_config(tmp_path: Path) -> None:
    """The driver hands the node credential for the bundled registry to the runtime, which puts it
    where containerd 1.6's CRI reads it beside config_path; free and engine machines get none."""
    import tomllib

    from opencs.engines.driver import ClusterPKI as DriverPKI
    from opencs.engines.kubernetes.driver import KubernetesDriver
    from opencs.engines.kubernetes.runtime import KubernetesNodeRuntime
    from opencs.machine import MachineInfo, RegistryAuth, RuntimeSettings

    auth = RegistryAuth("10.9.0.1:5000", "node-i-aaaaaaaaaaaaaaaaaaaa", "pw\"with quote")
    driver = KubernetesDriver(None, None)  # type: ignore[arg-type]
    pki = DriverPKI("c1", "ca", "key")
    assert driver.node_config(pki, "i-a", "10.9.0.1:5000", auth).registry_auth == auth
    assert driver.node_config(None, "i-a", "10.9.0.1:5000", auth).registry_auth is None  # a free machine
    assert driver.node_config(pki, "i-a", "10.9.0.2:5000", auth).registry_auth is None  # not that registry
    m = MachineInfo("i-aaaaaaaaaaaaaaaaaaaa", "10.9.0.5", "i-aaaaaaaaaaaaaaaaaaaa", tmp_path, "ocsnaaaa",
                    Path("/run/opencs/x/i-aaaaaaaaaaaaaaaaaaaa.sock"))
    plan = KubernetesNodeRuntime().boot_plan(m, RuntimeSettings(registry_mirror="http://10.9.0.1:5000",
                                                                registry_auth=auth))
    cri = tomllib.loads(plan.files["k8s/containerd.toml"])["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["registry"]["configs"] == {"10.9.0.1:5000": {"auth": {"username": auth.username,
                                                                      "password": auth.password}}}
    assert cri["registry"]["config_path"].endswith("certs.d") and "k8s/containerd.toml" in plan.private
    assert auth.password not in repr(auth) and RegistryAuth.from_json(auth.to_json()) == auth


def test_plans(tmp_path: Path, pki: ClusterPKI) -> None:
    from opencs.engines.kubernetes import plans
    from opencs.engines.kubernetes.topology import Member

    net = ClusterNetwork(pod_cidr="172.20.0.0/16", service_cidr="172.21.0.0/20", node_cidr_mask=25)
    me = Member("i-m", "10.9.0.2")
    cp = plans.control_plane(tmp_path, pki, me, [me], net)
    kcm = cp.units["kube-controller-manager"]
    assert "--allocate-node-cidrs" in kcm and kcm[kcm.index("--node-cidr-mask-size") + 1] == "25"
    assert cp.files["pki/ca.key"][1] == 0o600 and "--unsafe-no-fsync" not in cp.units["etcd"]
    assert "--leader-elect=false" in kcm and "http://127.0.0.1:2379" in cp.units["kube-apiserver"]
    assert kcm[kcm.index("--kube-api-qps") + 1] == "100" and kcm[kcm.index("--kube-api-burst") + 1] == "200"
    s = plans.NodeSettings("i-m", "10.9.0.2", "ocsn", "/run/x.sock", "https://10.9.0.2:6443", net, master=True)
    node = plans.node(tmp_path, pki, s)
    assert plans.MASTER_TAINT in node.units["kubelet"] and "/var/lib/kubelet" in node.units["kubelet"]
    kubelet = yaml.safe_load(node.files["kubelet.yaml"][0])
    assert kubelet["containerRuntimeEndpoint"] == "unix:///run/x.sock" and kubelet["clusterDNS"] == ["172.21.0.10"]
    plans.install(tmp_path, cp)
    first = (tmp_path / "pki" / "apiserver.crt").read_text()
    plans.install(tmp_path, plans.control_plane(tmp_path, pki, me, [me], net))
    assert (tmp_path / "pki" / "apiserver.crt").read_text() == first  # a running component keeps its cert
    assert (tmp_path / "units" / "etcd.sh").read_text().startswith("exec ")


def test_routes_between_nodes() -> None:
    from opencs.engines.kubernetes.network import routes_text, wanted_routes

    cidrs = {"a": ("172.20.0.0/25", "10.9.0.2"), "b": ("172.20.0.128/25", "10.9.0.3"), "c": ("", "10.9.0.4")}
    want = wanted_routes("a", cidrs, "172.21.0.0/20")
    assert want == {"172.21.0.0/20": "", "172.20.0.128/25": "10.9.0.3"}
    assert routes_text(want) == "172.20.0.128/25 10.9.0.3\n172.21.0.0/20\n"


def test_driver_set_dispatches_by_cluster_type() -> None:
    from opencs.engines.driver import DriverError
    from opencs.engines.drivers import DriverSet
    from opencs.engines.fake.cluster import FakeClusterDriver

    class Kube(FakeClusterDriver):
        cluster_type, accepts = "Kubernetes", ("kubernetes", "managedkubernetes")

        def managers_for(self, cluster_id: str, size: int) -> int:
            return 1

    swarm, kube = FakeClusterDriver(book=None), Kube(book=None)  # type: ignore[arg-type]
    ds = DriverSet(swarm, [kube], {"c-k": "Kubernetes", "c-s": "swarm", "c-m": "ManagedKubernetes"}.get)
    assert ds.of("c-k") is kube and ds.of("c-s") is swarm and ds.of("c-unknown") is swarm
    assert ds.of("c-m") is kube  # a type the driver accepts besides its own
    assert ds.managers_for("c-k", 5) == 1 and ds.managers_for("c-s", 5) == 3
    assert ds.check("KUBERNETES", {}) == "Kubernetes" and ds.check("aliyun", {}) == "swarm"
    with pytest.raises(DriverError, match="not offered"):
        ds.check("mesos", {})


def test_edge_cluster_nodes_are_marked_at_registration(tmp_path: Path, pki: ClusterPKI,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Cloud nodes of an edge cluster: is-edge-worker=false and the add-on taint; attached machines:
    is-edge-worker=true, no taint; CoreDNS goes to the cloud nodes (spec §6.5, ACK@Edge)."""
    from opencs.engines.kubernetes import addons, edge, plans

    fake = tmp_path / "bin" / "kubernetes"  # plans name the binary; nothing runs it here
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("OPENCS_KUBERNETES_BIN_DIR", str(fake.parent))

    def kubelet(master: bool, attached: bool) -> list[str]:
        labels, taints = edge.node_marks(attached)
        s = plans.NodeSettings("i-n", "10.9.0.3", "ocsn", "/run/x.sock", "https://10.9.0.2:6443", master=master,
                               labels=labels, taints=taints)
        return plans.node(tmp_path, pki, s).units["kubelet"]

    cloud = kubelet(False, attached=False)
    assert cloud[cloud.index("--node-labels") + 1] == "alibabacloud.com/is-edge-worker=false"
    assert cloud[cloud.index("--register-with-taints") + 1] == "node-role.alibabacloud.com/addon=:NoSchedule"
    edge_node = kubelet(False, attached=True)
    assert edge_node[edge_node.index("--node-labels") + 1] == "alibabacloud.com/is-edge-worker=true"
    assert "--register-with-taints" not in edge_node
    both = kubelet(True, attached=False)  # a master's taint and another one: one comma-separated flag
    assert both[both.index("--register-with-taints") + 1] == f"{plans.MASTER_TAINT},{edge.ADDON_TAINT}"
    plain = plans.node(tmp_path, pki, plans.NodeSettings("i-n", "10.9.0.3", "ocsn", "/run/x.sock", "https://x:6443"))
    assert "--node-labels" not in plain.units["kubelet"] and "--register-with-taints" not in plain.units["kubelet"]

    (deploy,) = [o for _, o in addons.coredns_objects("reg/coredns:1", ClusterNetwork(), edge.addon_placement())
                 if o["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"alibabacloud.com/is-edge-worker": "false"}
    assert {"key": edge.ADDON_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    (deploy,) = [o for _, o in addons.coredns_objects("reg/coredns:1", ClusterNetwork()) if o["kind"] == "Deployment"]
    assert "nodeSelector" not in deploy["spec"]["template"]["spec"]


def test_local_and_ssh_machines_become_kubernetes_nodes() -> None:
    """Machines of other providers are refused before anything runs (412, saying why); an SSH host is
    probed over SSH instead (probe_machine, test_k8s_ssh_probe.py); DriverSet asks the cluster's own driver."""
    from opencs.engines.driver import DriverError
    from opencs.engines.drivers import DriverSet
    from opencs.engines.fake.cluster import FakeClusterDriver
    from opencs.engines.kubernetes.driver import KubernetesDriver

    kube = KubernetesDriver(book=None, clusters=None)  # type: ignore[arg-type]
    kube.check_machine("c-k", "local")
    kube.check_machine("c-k", "ssh")
    with pytest.raises(DriverError) as e:
        kube.check_machine("c-k", "fake")
    assert e.value.code == "ProviderUnsupported"
    assert "a 'fake' machine cannot become a Kubernetes node" in e.value.message
    assert "SSH-registered hosts that have what a node needs" in e.value.message
    swarm = FakeClusterDriver(book=None)  # type: ignore[arg-type]
    ds = DriverSet(swarm, [kube], {"c-k": "Kubernetes", "c-s": "swarm"}.get)
    ds.check_machine("c-s", "fake")  # Swarm takes any machine
    with pytest.raises(DriverError):
        ds.check_machine("c-k", "fake")
