"""The Kubernetes readers' mapping, on replies recorded from a real kubelet and apiserver
(tests/fixtures/kubelet/, written by test_k8s_metrics.py with OPENCS_RECORD_KUBELET): a pod `burn`
(a busy loop), CoreDNS (memory limit 170 MiB), `oom` (OOM-killed under 16 MiB) and `fail` (exit 3,
restarted), on node i-hw9xj6l2n4r7gdpnijy1. The cgroup figures come from a fake tree laid out as
kubelet's cgroupfs driver lays it out under the machine's cgroup."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from opencs.api import usage_metrics
from opencs.engines.apps import EngineUnreachable
from opencs.engines.kubernetes.api import KubeError
from opencs.engines.kubernetes.events import KubernetesDeathReader, terminations
from opencs.engines.kubernetes.monitor import MONITOR_USER, MonitorAccess, rbac_objects
from opencs.engines.kubernetes.pki import ClusterPKI
from opencs.engines.kubernetes.usage import container_cgroup, node_usage
from opencs.engines.usage import NodeRef
from opencs.services.usage import ClusterUsage, UsageSnapshot
from tests.engines.test_usage import NET_DEV, fake_group

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "kubelet"
NODE = "i-hw9xj6l2n4r7gdpnijy1"
MACHINE = "okmnhw9xj6l2n4r"  # the machine's cgroup (any name: the fake tree has it)
BURN_UID = "171880d4-3332-40de-8f61-dd21bcd4890a"
BURN_ID = "9b67e5ea0b2f2e17ccace973e436a995171e58389a5f5a682df756907b868218"
DNS_UID = "10074e71-a05b-476b-a94e-7eb2c580d488"
DNS_ID = "f14d8f9db8d769b670423ab959dd77616ec450ba792bc3c8833bda681ab7bd68"
UNLIMITED = (1 << 63) - 4096


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return doc


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root, proc = tmp_path / "cg", tmp_path / "proc"
    fake_group(root, MACHINE, cpu_ns=7_000_000_000, mem=900, inactive=100, limit=1 << 31, pid=40)
    burn = container_cgroup(MACHINE, "BestEffort", BURN_UID, BURN_ID)
    assert burn == f"{MACHINE}/kubepods/besteffort/pod{BURN_UID}/{BURN_ID}"  # as kubelet made it (seen on a node)
    fake_group(root, burn, cpu_ns=1, mem=1, inactive=0, limit=UNLIMITED, pid=42)
    dns = container_cgroup(MACHINE, "Burstable", DNS_UID, DNS_ID)
    assert dns == f"{MACHINE}/kubepods/burstable/pod{DNS_UID}/{DNS_ID}"
    assert container_cgroup(MACHINE, "Guaranteed", "u", "c") == f"{MACHINE}/kubepods/podu/c"
    fake_group(root, dns, cpu_ns=1, mem=1, inactive=0, limit=178257920, pid=None, blkio=None)
    for pid in (40, 42):
        (proc / str(pid) / "net").mkdir(parents=True)
        (proc / str(pid) / "net" / "dev").write_text(NET_DEV)
    return root, proc


def _ref(cgroup: str | None) -> NodeRef:
    return NodeRef(NODE, "unix:///x/containerd.sock", cgroup, "10.208.0.2", "c-k8s")


def test_summary_and_pods_map_to_the_swarm_samples(tree: tuple[Path, Path]) -> None:
    root, proc = tree
    n = node_usage(_ref(MACHINE), _load("stats-summary.json"), _load("kubelet-pods.json"), root, proc)
    assert (n.instance_id, n.source, n.address) == (NODE, "cgroup", "10.208.0.2")
    by = {(c.project, c.service_id, c.name): c for c in n.containers}
    assert set(by) == {("default", "burn", "main"), ("kube-system", "coredns-686fdd459d-5jn57", "coredns")}
    burn = by["default", "burn", "main"]
    assert burn.container_id == BURN_ID
    u = burn.usage
    assert (u.cpu_seconds, u.memory_bytes, u.memory_working_set_bytes) == (9.593391164, 278528, 278528)  # the summary
    assert (u.blkio_read_bytes, u.blkio_write_bytes) == (4097, 8192)  # its cgroup
    assert (u.net_rx_bytes, u.net_tx_bytes) == (1500, 2050)  # its pod's netns: the summary has no pod network
    assert u.memory_limit_bytes is None and u.fs_used_bytes == 40960 and u.fs_capacity_bytes == 270553174016
    dns = by["kube-system", "coredns-686fdd459d-5jn57", "coredns"].usage
    assert dns.memory_limit_bytes == 170 * 2**20 and (dns.net_rx_bytes, dns.blkio_read_bytes) == (0, 0)
    # the node: the machine's cgroup, not the summary's node CPU (the whole host's: 2634 s here)
    assert n.usage is not None and n.usage.cpu_seconds == 7.0 and n.usage.memory_limit_bytes == 1 << 31
    assert (n.usage.fs_used_bytes, n.usage.fs_capacity_bytes) == (24604278784, 270553174016)
    assert (n.usage.net_rx_bytes, n.usage.net_tx_bytes) == (1500, 2050)


def test_without_the_machines_cgroup_only_the_kubelets_figures(tmp_path: Path) -> None:
    n = node_usage(_ref(None), _load("stats-summary.json"), _load("kubelet-pods.json"), tmp_path, tmp_path)
    assert n.usage is None and n.source == "kubelet" and len(n.containers) == 2
    u = {c.service_id: c.usage for c in n.containers}["burn"]
    assert (u.cpu_seconds, u.blkio_write_bytes, u.net_rx_bytes, u.memory_limit_bytes) == (9.593391164, 0, 0, None)


def test_the_exposition_carries_kubernetes_names(tree: tuple[Path, Path]) -> None:
    root, proc = tree
    n = node_usage(_ref(MACHINE), _load("stats-summary.json"), _load("kubelet-pods.json"), root, proc)
    text = usage_metrics.exposition(UsageSnapshot(1.0, 0.1, [ClusterUsage("c-k8s", [n])])).decode()
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for fam in text_string_to_metric_families(text) for s in fam.samples}
    labels = (("aliyun_cluster", "c-k8s"), ("aliyun_project", "default"), ("aliyun_service_id", "burn"),
              ("container", "main"), ("node", NODE))
    assert got["opencs_container_cpu_usage_seconds_total", labels] == 9.593391164
    assert got["opencs_container_filesystem_usage_bytes", labels] == 40960
    node = (("aliyun_cluster", "c-k8s"), ("node", NODE))
    assert got["opencs_node_filesystem_capacity_bytes", node] == 270553174016
    assert got["opencs_node_containers", node] == 2


def test_exits_from_the_recorded_pod_status() -> None:
    pods = {p["metadata"]["name"]: p for p in _load("apiserver-pods.json")["items"]}
    assert terminations(pods["burn"]) == []
    ((key, at, oom),) = terminations(pods["oom"])
    assert key.startswith("containerd://43c1b596") and at == datetime.fromisoformat("2026-12-07T14:42:00Z").timestamp()
    assert (oom.container, oom.project, oom.service_id, oom.exit_code, oom.oom_killed) == (
        "oom/main", "default", "oom", 137, True)
    assert oom.reason == "exit code 137: killed by the kernel's OOM killer (memory limit)"
    fails = terminations(pods["fail"])  # ended twice: the restarted one and the one now ended
    assert len({k for k, _, _ in fails}) == 2 and all(d.exit_code == 3 and not d.oom_killed for _, _, d in fails)
    assert fails[0][2].reason == "exit code 3 (Error), restarted 1 time so far"


class FakeApi:
    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.closed = False

    def pods_on(self, node: str) -> list[dict[str, Any]]:
        if isinstance(self.pods, Exception):
            raise self.pods
        return [p for p in self.pods if p["spec"]["nodeName"] == node]

    def close(self) -> None:
        self.closed = True


class FakeAccess:
    def __init__(self) -> None:
        self.forgotten: list[str] = []
        self.retained: list[set[str]] = []

    def forget(self, cluster_id: str) -> None:
        self.forgotten.append(cluster_id)

    def retain(self, cluster_ids: set[str]) -> None:
        self.retained.append(set(cluster_ids))


def _reader(pods: list[dict[str, Any]]) -> tuple[KubernetesDeathReader, FakeAccess]:
    access = FakeAccess()
    r = KubernetesDeathReader(access)  # type: ignore[arg-type]
    r._apis._clients["c-k8s"] = FakeApi(pods)  # type: ignore[assignment]
    return r, access


def test_each_termination_is_reported_once() -> None:
    pods = _load("apiserver-pods.json")["items"]
    start = datetime.fromisoformat("2026-12-07T14:41:55Z").timestamp()
    r, _ = _reader(pods)
    first = r.deaths(_ref(None), start, start + 2)
    assert sorted(d.container for d in first) == ["fail/main", "fail/main", "oom/main"]
    assert r.deaths(_ref(None), start + 2, start + 4) == []  # the same status again: nothing new
    fail = next(p for p in pods if p["metadata"]["name"] == "fail")
    cs = fail["status"]["containerStatuses"][0]
    cs["lastState"], cs["restartCount"] = {"terminated": {**cs["state"]["terminated"]}}, 2
    cs["state"] = {"terminated": {**cs["state"]["terminated"], "containerID": "containerd://third",
                                  "finishedAt": "2026-12-07T14:42:20Z"}}
    (third,) = r.deaths(_ref(None), start + 4, start + 6)  # reported late, outside its window: still once
    assert third.at == datetime.fromisoformat("2026-12-07T14:42:20Z").timestamp() and third.restarts == 2
    # a reader that starts later (a new process, the duty taken over) does not report the old ones again
    later, _ = _reader(pods)
    assert later.deaths(_ref(None), start + 60, start + 62) == []


def test_an_unreachable_apiserver_is_said_and_the_identity_made_again() -> None:
    r, access = _reader(KubeError("GET /api/v1/pods: HTTP 403: forbidden", 403))  # type: ignore[arg-type]
    with pytest.raises(EngineUnreachable, match="403"):
        r.deaths(_ref(None), 0.0, 1.0)
    assert access.forgotten == ["c-k8s"] and "c-k8s" not in r._apis._clients


class FakeAdmin:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.creates = 0

    def get(self, path: str) -> dict[str, Any] | None:
        return self.objects.get(path)

    def create(self, path: str, obj: dict[str, Any]) -> None:
        self.creates += 1
        self.objects[f"{path}/{obj['metadata']['name']}"] = obj


def _access() -> tuple[MonitorAccess, FakeAdmin]:
    pki, admin = ClusterPKI.create("c-k8s"), FakeAdmin()

    @contextmanager
    def admin_api(cluster_id: str) -> Any:
        yield admin

    return MonitorAccess(lambda cid: pki, admin_api, lambda cid: "https://10.208.0.2:6443"), admin


def test_monitor_identity_is_made_once_with_its_rbac() -> None:
    access, admin = _access()
    ident = access.identity("c-k8s")
    assert ident.server == "https://10.208.0.2:6443" and admin.creates == 3
    roles = {o["roleRef"]["name"] for p, o in admin.objects.items() if "clusterrolebindings" in p}
    assert roles == {MONITOR_USER, "system:kubelet-api-admin"}
    assert all(s["name"] == MONITOR_USER for o in admin.objects.values() for s in o.get("subjects", []))
    assert access.identity("c-k8s") is ident and admin.creates == 3  # cached; the bindings exist
    access.forget("c-k8s")
    assert access.identity("c-k8s") is not ident and admin.creates == 3  # made again, nothing re-created
    assert len(rbac_objects()) == 3


def test_a_deleted_clusters_client_and_marks_go_after_the_next_pass() -> None:
    pods = _load("apiserver-pods.json")["items"]
    r, access = _reader(pods)
    api = r._apis._clients["c-k8s"]
    r.deaths(_ref(None), 0.0, 1.0)
    r.retain([_ref(None)])  # still a member: kept
    assert r._apis._clients["c-k8s"] is api and not api.closed and r._seen  # type: ignore[attr-defined]
    r.retain([])  # the cluster is gone
    assert api.closed and not r._apis._clients and not r._seen and not r._floor  # type: ignore[attr-defined]
    assert access.retained == [{"c-k8s"}, set()]


def test_monitor_identities_of_other_clusters_go_on_retain() -> None:
    access, _ = _access()
    ident = access.identity("c-k8s")
    access.retain({"c-k8s", "c-other"})
    assert access.identity("c-k8s") is ident
    access.retain(set())
    assert access.identity("c-k8s") is not ident
