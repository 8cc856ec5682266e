"""Pure parts of the Kubernetes engine: PKI identities, kubeconfig, generated configs, the version pin."""

from __future__ import annotations

import base64
import re
from pathlib import Path

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
