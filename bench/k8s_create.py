"""Kubernetes cluster create and pod start latency (issue 9), against a raw start in the same run.

    flock /tmp/opencs-itest.lock python bench/k8s_create.py [--runs 1] [--replicas 30] [--profile] [--pods-only]

  api     POST /clusters (sdk-core CreateClusterRequest, 1 master + 2 workers) on a real server, polled
          with DescribeClusterDetail until `running` (every node Ready, CoreDNS available)
  raw     the same binaries started the minimal way, in this process: three machines of the local
          provider made at once, then the Kubernetes driver's own create and join called directly on
          in-memory records — no API, no durable tasks, no store, no polling of a task
  pods    on the api cluster: a Deployment of --replicas busybox pods, each pod's time from its
          first sight (a watch) to Running, the image already on every node (the SLO excludes
          pulls); p50/p99 against the Kubernetes SLO (p99 <= 5 s), split into scheduling (first
          sight to bound to a node) and on the node (bound to Running); --profile adds the kubelets'
          operations the pods cost (their histograms' deltas, through the apiserver's node proxy)

Targets: api <= 1.2x raw, api <= 30 s to a Ready 3-node cluster. Needs root and the pinned binary
(scripts/build-kubernetes.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opencs import ids  # noqa: E402
from opencs.engines.driver import ClusterPKI  # noqa: E402
from opencs.engines.kubernetes import binary  # noqa: E402
from opencs.engines.kubernetes.driver import KubernetesDriver  # noqa: E402
from opencs.pki.ca import CertAuthority  # noqa: E402
from opencs.providers.base import InstanceSpec  # noqa: E402
from opencs.sdk import Client  # noqa: E402
from opencs.store.models import InstanceRow  # noqa: E402
from tests.clusterkit import destroy_everything, node_env, node_runtime  # noqa: E402
from tests.conftest import ServerProcess  # noqa: E402
from tests.sdks import core_call, core_client  # noqa: E402

BODY: dict[str, Any] = {
    "cluster_type": "Kubernetes", "name": "bench", "region_id": "local", "num_of_nodes": 2, "snat_entry": False,
    "master_instance_types": ["ecs.n1.medium"], "master_system_disk_category": "cloud_efficiency",
    "master_system_disk_size": 40, "master_vswitch_ids": ["vsw-1"], "worker_instance_types": ["ecs.n1.medium"],
    "worker_system_disk_category": "cloud_efficiency", "worker_system_disk_size": 40,
    "worker_vswitch_ids": ["vsw-1"], "login_password": "Test1234!",
}  # fmt: skip
ENV = {"OPENCS_MONITOR_INTERVAL": "2", "OPENCS_K8S_ETCD_FSYNC": "0", "OPENCS_REGISTRY_PORT": "5034"}


# ---------------------------------------------------------------- the API path


def _describe(core: Any, cid: str) -> dict[str, Any]:
    from aliyunsdkcs.request.v20151215.DescribeClusterDetailRequest import DescribeClusterDetailRequest

    r = DescribeClusterDetailRequest()
    r.set_ClusterId(cid)
    out: dict[str, Any] = core_call(core, r)
    return out


def api_create(server: ServerProcess) -> tuple[float, str]:
    from aliyunsdkcs.request.v20151215.CreateClusterRequest import CreateClusterRequest

    core = core_client(server.endpoint, server.ak, server.secret)
    t0 = time.monotonic()
    cid = core_call(core, CreateClusterRequest(), BODY)["cluster_id"]
    while (state := _describe(core, cid)["state"]) == "launching":
        time.sleep(0.2)
    if state != "running":
        raise SystemExit(f"cluster {cid} ended {state}")
    return time.monotonic() - t0, cid


@dataclass
class PodTimes:
    """Per pod (by name), monotonic seconds: first sight in the watch, first sight bound to a node
    (the scheduler's part ends), first sight Running (the kubelet's part ends)."""

    seen: dict[str, float] = field(default_factory=dict)
    bound: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)
    created: float = 0.0  # when the Deployment was created

    def all_running(self) -> float:
        """The Deployment's creation to its last pod Running (what a user waits for)."""
        return max(self.running.values()) - self.created

    def start(self) -> list[float]:
        return sorted(self.running[n] - self.seen[n] for n in self.running)

    def scheduling(self) -> list[float]:
        return sorted(self.bound[n] - self.seen[n] for n in self.running if n in self.bound)

    def on_node(self) -> list[float]:
        return sorted(self.running[n] - self.bound[n] for n in self.running if n in self.bound)


# kubelet histograms that say where a pod start's time goes (the kubelet's /metrics, via the apiserver)
KUBELET_METRICS = ("kubelet_runtime_operations_duration_seconds", "kubelet_pod_worker_duration_seconds",
                   "kubelet_pod_worker_start_duration_seconds", "kubelet_pleg_relist_duration_seconds",
                   "kubelet_cgroup_manager_duration_seconds", "kubelet_image_pull_duration_seconds",
                   "kubelet_pod_start_sli_duration_seconds")


def kubelet_histograms(api: Any, nodes: list[str]) -> dict[str, tuple[float, float]]:
    """(sum, count) per histogram and operation, summed over `nodes`."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, tuple[float, float]] = {}
    for n in nodes:
        text = api.call_api(f"/api/v1/nodes/{n}/proxy/metrics", "GET", auth_settings=["BearerToken"],
                            response_type="str", _preload_content=True)[0]
        for fam in text_string_to_metric_families(text):
            if fam.name not in KUBELET_METRICS:
                continue
            for smp in fam.samples:
                if not smp.name.endswith(("_sum", "_count")):
                    continue
                op = smp.labels.get("operation_type", "")
                key = f"{fam.name.removeprefix('kubelet_')}{'/' + op if op else ''}"
                total, count = out.get(key, (0.0, 0.0))
                out[key] = (total + smp.value, count) if smp.name.endswith("_sum") else (total, count + smp.value)
    return out


def profile_delta(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """What the measured pods cost each kubelet operation: calls and mean seconds, busiest first."""
    rows = []
    for key, (total, count) in after.items():
        t0, c0 = before.get(key, (0.0, 0.0))
        if count - c0 > 0:
            rows.append((key, int(count - c0), (total - t0) / (count - c0), total - t0))
    rows.sort(key=lambda r: -r[3])
    return {k: {"calls": c, "mean_s": round(m, 3), "total_s": round(t, 2)} for k, c, m, t in rows[:15]}


@dataclass
class CpuSnapshot:
    """CPU seconds of every process on the host (pid and start time -> name, own, reaped children's)
    and the host's busy and total jiffies: where the cores went while the pods started."""

    procs: dict[tuple[int, int], tuple[str, float, float]]
    busy: float
    total: float

    @classmethod
    def take(cls) -> CpuSnapshot:
        hz = os.sysconf("SC_CLK_TCK")
        procs = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                text = (d / "stat").read_text()
            except OSError:
                continue
            comm, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
            if comm == "kubernetes":  # one binary for every component: named by its first argument
                with contextlib.suppress(OSError, IndexError):
                    comm = (d / "cmdline").read_bytes().split(b"\0")[1].decode()
            # fields 14-17 (utime stime cutime cstime) and 22 (starttime), counted from 1 with pid and comm
            procs[(int(d.name), int(rest[19]))] = (comm, (int(rest[11]) + int(rest[12])) / hz,
                                                    (int(rest[13]) + int(rest[14])) / hz)
        cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return cls(procs, (sum(cpu) - cpu[3] - cpu[4]) / hz, sum(cpu) / hz)

    def since(self, before: CpuSnapshot) -> dict[str, Any]:
        """Busy share of the host's cores and CPU seconds by process name, busiest first: `own`, and
        `reaped` (children that exited and were waited for: runc under a shim, CNI plugins under
        containerd). Processes that came and went unreaped in between are not seen."""
        own: dict[str, float] = {}
        reaped: dict[str, float] = {}
        for key, (comm, o, c) in self.procs.items():
            _, o0, c0 = before.procs.get(key, (comm, 0.0, 0.0))
            own[comm] = own.get(comm, 0.0) + o - o0
            reaped[comm] = reaped.get(comm, 0.0) + c - c0
        names = sorted(own, key=lambda n: -(own[n] + reaped[n]))[:14]
        return {"host_busy": round((self.busy - before.busy) / max(1e-9, self.total - before.total), 2),
                "host_cpu_s": round(self.busy - before.busy, 1),
                "by_process_s": {n: {"own": round(own[n], 2), "reaped": round(reaped[n], 2)} for n in names}}


def pod_latencies(server: ServerProcess, cid: str, replicas: int, tmp: Path,
                  profile: bool = False) -> tuple[PodTimes, dict[str, Any]]:
    """Each pod's times (PodTimes) and, with `profile`, the kubelets' operations they cost."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes import watch

    kc = Client(server.url, server.ak, server.secret, retries=0).request("GET", f"/k8s/{cid}/user_config")
    (tmp / "kubeconfig").write_text(kc["config"])
    api = k8s_config.new_client_from_config(str(tmp / "kubeconfig"))
    v1, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    times = PodTimes()
    w = watch.Watch()
    started = threading.Event()

    def follow() -> None:
        stream = w.stream(v1.list_namespaced_pod, "default", label_selector="app=bench", timeout_seconds=180)
        started.set()
        for ev in stream:
            p, now = ev["object"], time.monotonic()
            times.seen.setdefault(p.metadata.name, now)
            if p.spec.node_name:
                times.bound.setdefault(p.metadata.name, now)
            if p.status.phase == "Running":
                times.running.setdefault(p.metadata.name, now)
            if len(times.running) >= replicas:
                w.stop()

    workers = _warm(v1, tmp)  # the SLO excludes image pulls: busybox is on every node first
    before = kubelet_histograms(api, workers) if profile else {}
    cpu0 = CpuSnapshot.take()
    t = threading.Thread(target=follow, daemon=True)
    t.start()
    started.wait(10)
    labels = {"app": "bench"}
    times.created = time.monotonic()
    apps.create_namespaced_deployment("default", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bench"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     # the SLO excludes pulls: an untagged image (:latest) would be pulled on every start
                     "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"]}]}}}})
    t.join(200)
    if len(times.running) < replicas:
        raise SystemExit(f"only {len(times.running)} of {replicas} pods Running")
    cpu = CpuSnapshot.take().since(cpu0)
    if not profile:
        return times, {}
    return times, {"cpu": cpu, "kubelet": profile_delta(before, kubelet_histograms(api, workers))}


def _warm(v1: Any, tmp: Path) -> list[str]:
    """One busybox pod per schedulable node, run to completion, so that no measured pod pulls."""
    nodes = [n.metadata.name for n in v1.list_node().items
             if not any(t.effect == "NoSchedule" for t in (n.spec.taints or []))]
    for n in nodes:
        v1.create_namespaced_pod("default", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"warm-{n}"},
            "spec": {"nodeName": n, "restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}})
    deadline = time.monotonic() + 120
    while any(v1.read_namespaced_pod(f"warm-{n}", "default").status.phase not in ("Succeeded", "Failed")
              for n in nodes):
        if time.monotonic() > deadline:
            raise SystemExit("warm-up pods did not finish")
        time.sleep(0.5)
    return nodes


# ---------------------------------------------------------------- the raw start


@dataclass
class Books:
    """In-memory records the driver reads and writes (the store's place in the raw start)."""

    pki: ClusterPKI
    rows: dict[str, InstanceRow] = field(default_factory=dict)

    def of_cluster(self, cluster_id: str) -> list[InstanceRow]:
        return list(self.rows.values())

    def get(self, instance_id: str) -> InstanceRow | None:
        return self.rows.get(instance_id)

    def set_membership(self, instance_id: str, role: str, member_id: str) -> None:
        self.rows[instance_id].role, self.rows[instance_id].swarm_node_id = role, member_id


class _Clusters:
    def __init__(self, books: Books) -> None:
        self.books = books

    def pki(self, cluster_id: str) -> ClusterPKI:
        return self.books.pki

    def settings(self, cluster_id: str) -> dict[str, Any]:
        return {}


def raw_create(tmp: Path) -> float:
    with node_runtime(tmp / "raw", "oci", "10.236.0.0/24", workers=0, kubernetes_etcd_fsync=False) as rt:
        prov, registry = rt.providers["local"], rt.registry
        endpoint = registry.ensure()
        cid = "c" + ids.instance_id()[2:]
        ca = CertAuthority.create(f"opencs cluster {cid}")
        books = Books(ClusterPKI(cid, ca.cert_pem, ca.key_pem))
        kube: Any = rt.cluster_driver.for_type("kubernetes")  # the server's, for its node runtime
        driver = KubernetesDriver(books, _Clusters(books), kube.node_runtime,
                                  seed_images=lambda: registry.seed_kubernetes(binary.bin_dir() / "coredns"),
                                  etcd_fsync=False)
        t0 = time.monotonic()

        def machine(_: int) -> InstanceRow:
            iid = ids.instance_id()
            cfg = driver.node_config(books.pki, iid, endpoint)
            inst = prov.create(InstanceSpec(instance_id=iid, registry_mirror=cfg.registry_mirror,
                                            insecure_registries=list(cfg.insecure_registries), runtime=cfg.runtime))
            return InstanceRow(instance_id=iid, private_ip=inst.private_ip, docker_host=inst.docker_host,
                               details=dict(inst.details), state="running", role="", swarm_node_id="")

        with ThreadPoolExecutor(3) as pool:
            for r in pool.map(machine, range(3)):
                books.rows[r.instance_id] = r
        driver.create(cid, next(iter(books.rows)))
        driver.join(cid, 3)
        return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--replicas", type=int, default=30)
    ap.add_argument("--profile", action="store_true", help="also where the kubelets' time went (their metrics)")
    ap.add_argument("--pods-only", action="store_true", help="skip the raw start (pod latency only)")
    ap.add_argument("--keep-logs", type=Path, help="copy every machine's unit logs (k8s/log) here before teardown")
    a = ap.parse_args()
    binary.binary()  # fails clearly without the pinned build
    api_s: list[float] = []
    raw_s: list[float] = []
    pods, sched, kubelet, whole = [], [], [], []
    prof: dict[str, Any] = {}
    for _ in range(a.runs):
        with tempfile.TemporaryDirectory(prefix="k8s-bench-") as d:
            tmp = Path(d)
            if not a.pods_only:
                raw_s.append(raw_create(tmp))
            server = ServerProcess(tmp / "api", env={**node_env("ocl", "10.248.0.0/24"), **ENV})
            try:
                server.start()
                took, cid = api_create(server)
                api_s.append(took)
                times, prof = pod_latencies(server, cid, a.replicas, tmp, a.profile)
                pods += times.start()
                sched += times.scheduling()
                kubelet += times.on_node()
                whole.append(times.all_running())
            finally:
                server.kill()
                if a.keep_logs:
                    for log in (tmp / "api" / "nodes").glob("*/k8s/log/*.log"):
                        dest = a.keep_logs / log.parts[-4] / log.name
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(log, dest)
                destroy_everything(tmp / "api", "ocl", "10.248.0.0/24")
    api = statistics.median(api_s)
    raw = statistics.median(raw_s) if raw_s else 0.0
    out: dict[str, Any] = {"api_create_s": round(api, 1)}
    if raw:
        out.update(raw_create_s=round(raw, 1), ratio=round(api / raw, 2))
    out.update(pods=len(pods), pod_start_p50_s=round(statistics.median(pods), 2), pod_start_p99_s=_p99(pods),
               scheduling_p50_s=round(statistics.median(sched), 2), scheduling_p99_s=_p99(sched),
               on_node_p50_s=round(statistics.median(kubelet), 2), on_node_p99_s=_p99(kubelet),
               deployment_all_running_s=round(statistics.median(whole), 2),
               targets={"ratio": 1.2, "create_s": 30, "pod_p99_s": 5})
    if prof:
        out["profile_last_run"] = prof
    print(json.dumps(out, indent=1 if prof else None))


def _p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(0.99 * len(xs)))], 2)


if __name__ == "__main__":
    main()
