"""The cluster rules (sizes, scale and its rollback, attach, remove node, manager counts, idempotent
deletes) against the fake cluster driver and fake machines: no root, no dockerd, a real SQLite store."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from opencs.api.schemas import CreateCluster, ScaleCluster
from opencs.engines.driver import DriverError
from opencs.engines.fake.cluster import FakeClusterDriver
from opencs.errors import Conflict, NotFound, ProviderNotAvailable, ValidationFailed
from opencs.machine import ShellResult
from opencs.providers.fake import FakeProvider
from opencs.secretbox import SecretBox
from opencs.services import cluster_tasks
from opencs.services.cluster_tasks import ClusterTaskDeps
from opencs.services.clusters import ClusterService
from opencs.services.instances import InstanceService
from opencs.services.monitor import HealthService
from opencs.services.nodes import Machines
from opencs.store.db import Database, migrate
from opencs.store.repos.clusters import ClusterRepo
from opencs.store.repos.instances import InstanceRepo
from opencs.store.repos.tasks import TaskRepo
from opencs.tasks.engine import TaskEngine
from opencs.tasks.registry import TaskRegistry


class _NoRegistry:
    def ensure(self) -> str | None:
        return None


@dataclass
class World:
    db: Database
    provider: FakeProvider
    driver: FakeClusterDriver
    instances: InstanceRepo
    tasks: TaskEngine
    clusters: ClusterService
    free: InstanceService
    health: HealthService
    machines: Machines

    def run(self, task_id: str) -> str:
        """Run pending tasks in this thread until `task_id` ended; its final state."""
        while self.tasks.run_one():
            pass
        return self.tasks.get(task_id).state

    def create(self, size: int, name: str = "c1") -> str:
        cid, tid = self.clusters.create(CreateCluster(name=name, size=size))
        assert self.run(tid) == "success", self.tasks.get(tid).error_message
        return cid

    def roles(self, cid: str) -> list[str]:
        return sorted(r.role for r in self.instances.of_cluster(cid))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(db.engine)
    box = SecretBox.from_file(tmp_path / "secret.key")
    providers = {"local": (prov := FakeProvider())}
    crepo, irepo = ClusterRepo(db), InstanceRepo(db)
    driver = FakeClusterDriver(irepo)
    machines = Machines(providers, irepo, crepo, box, driver, lambda: None)
    deps = ClusterTaskDeps(crepo, irepo, machines, driver, _NoRegistry())
    tasks = TaskEngine(TaskRepo(db), TaskRegistry(cluster_tasks.task_handlers(deps)))
    clusters = ClusterService(crepo, irepo, box, tasks, providers, driver, max_cluster_size=6)
    yield World(db, prov, driver, irepo, tasks, clusters, InstanceService(irepo, tasks, clusters),
                HealthService(providers, irepo, crepo, driver), machines)
    db.close()


def test_create_sizes_and_manager_counts(world: World) -> None:
    c1 = world.create(2, "two")
    assert world.roles(c1) == ["manager", "worker"]
    c3 = world.create(3, "three")
    assert world.roles(c3) == ["manager"] * 3
    view = world.clusters.get(c3)
    assert view["state"] == "running" and view["size"] == 3 and view["master_url"].startswith("https://fake-")
    # the store and the engine agree on every member
    eng = world.driver.engines[c3]
    assert {r.swarm_node_id for r in world.instances.of_cluster(c3)} == set(eng.members)


def test_size_limits(world: World) -> None:
    with pytest.raises(ValidationFailed):
        world.clusters.create(CreateCluster(name="big", size=7))
    cid = world.create(1)
    with pytest.raises(ValidationFailed):
        world.clusters.scale(cid, ScaleCluster(size=7))
    with pytest.raises(Exception, match="already has 1"):
        world.clusters.scale(cid, ScaleCluster(size=1))
    world.provider.unavailable = "local provider unavailable: no dockerd"
    with pytest.raises(ProviderNotAvailable):
        world.clusters.scale(cid, ScaleCluster(size=2))


def test_scale_up_then_down_keeps_oldest_manager(world: World) -> None:
    cid = world.create(2)
    first = world.instances.of_cluster(cid)[0]
    assert world.run(world.clusters.scale(cid, ScaleCluster(size=5))) == "success"
    assert world.roles(cid) == ["manager"] * 3 + ["worker"] * 2
    assert world.run(world.clusters.scale(cid, ScaleCluster(size=1))) == "success"
    rows = world.instances.of_cluster(cid)
    assert [r.instance_id for r in rows] == [first.instance_id] and rows[0].role == "manager"
    assert set(world.provider.instances) == {first.instance_id}  # the others' machines are gone
    assert world.clusters.get(cid)["size"] == 1


def test_failed_scale_rolls_back_to_previous_size(world: World) -> None:
    cid = world.create(2)
    before = {r.instance_id for r in world.instances.of_cluster(cid)}
    world.provider.fail_creates = 1
    tid = world.clusters.scale(cid, ScaleCluster(size=4))
    assert world.run(tid) == "fail"
    assert "(rolled back)" in (world.tasks.get(tid).error_message or "")
    assert {r.instance_id for r in world.instances.of_cluster(cid)} == before
    assert world.clusters.get(cid)["state"] == "running" and world.clusters.get(cid)["size"] == 2
    assert set(world.provider.instances) == before


def test_driver_failure_fails_the_task_with_its_code(world: World) -> None:
    cid = world.create(1)
    world.driver.fail["join"] = DriverError("raft said no", "SwarmError")
    tid = world.clusters.scale(cid, ScaleCluster(size=2))
    assert world.run(tid) == "fail"
    row = world.tasks.get(tid)
    assert row.error_code == "SwarmError" and "raft said no" in (row.error_message or "")
    assert world.clusters.get(cid)["size"] == 1  # rolled back


def test_attach_free_instances(world: World) -> None:
    cid = world.create(1)
    assert world.run(world.free.create(2)) == "success"
    free = [r.instance_id for r in world.instances.all(free_only=True)]
    assert len(free) == 2 and not world.provider.specs[free[0]].tls_factory  # free machines: no cluster TLS
    results, tid = world.clusters.attach(cid, free)
    assert [r["instanceId"] for r in results] == free
    with pytest.raises(Conflict):  # the cluster is scaling now
        world.clusters.attach(cid, free)
    assert world.run(tid) == "success"
    assert world.roles(cid) == ["manager"] * 3  # three nodes: three managers
    assert all(world.provider.specs[i].tls_factory for i in free)  # re-imaged with the cluster's cert
    with pytest.raises(Conflict, match="already belongs"):
        world.clusters.attach(cid, free[:1])
    with pytest.raises(NotFound):
        world.clusters.attach(cid, ["i-" + "0" * 20])


class _Host:
    """A host's answers to the Kubernetes probe (the real one over SSH: test_k8s_ssh_probe.py)."""

    def __init__(self, lacks: str) -> None:
        self.lacks, self.scripts = lacks, 0

    def run(self, script: str, timeout: float = 60.0) -> ShellResult:
        self.scripts += 1
        return ShellResult(0, self.lacks, "")

    def put(self, files: Mapping[str, tuple[bytes, int]]) -> None:
        raise AssertionError("nothing is written to a host that is refused")


class _SshHosts(FakeProvider):
    def __init__(self, host: _Host) -> None:
        super().__init__()
        self.host = host

    def host_shell(self, instance_id: str) -> _Host:
        return self.host


def test_ssh_machine_probed_by_a_kubernetes_cluster(world: World) -> None:
    """Attaching an SSH-registered machine to a Kubernetes cluster: its host is probed first, and what
    it lacks is a 412 before anything runs (the instance stays free, no task); a Swarm cluster
    takes it without asking the host."""
    from opencs.engines.drivers import DriverSet
    from opencs.engines.kubernetes.driver import KubernetesDriver

    kube_id, swarm_id = world.create(1, "k"), world.create(1, "s")
    kube = KubernetesDriver(book=None, clusters=None)  # type: ignore[arg-type]
    drivers = DriverSet(world.driver, [kube], {kube_id: "Kubernetes", swarm_id: "swarm"}.get)
    host = _Host("runc on PATH (/usr/bin:/bin)\n")
    clusters = ClusterService(world.clusters.repo, world.instances, world.clusters.box, world.tasks,
                              {**world.clusters.providers, "ssh": _SshHosts(host)}, drivers, max_cluster_size=6)
    world.instances.add_registered("i-ssh0000000000000000", "ssh", "10.1.2.3", "running", "unix:///x.sock", {})
    with pytest.raises(ProviderNotAvailable) as e:
        clusters.attach(kube_id, ["i-ssh0000000000000000"])
    assert e.value.status == 412 and host.scripts == 1
    assert "the ssh host 10.1.2.3 cannot become a Kubernetes node, it lacks: runc on PATH" in e.value.message
    assert "Nothing was installed" in e.value.message
    row = world.instances.get("i-ssh0000000000000000")
    assert row is not None and not row.cluster_id
    assert world.clusters.get(kube_id)["state"] == "running"
    _, tid = clusters.attach(swarm_id, ["i-ssh0000000000000000"])  # Swarm takes SSH hosts (reserved here)
    assert world.instances.get("i-ssh0000000000000000").cluster_id == swarm_id  # type: ignore[union-attr]
    assert tid and host.scripts == 1


def test_remove_node_rules(world: World) -> None:
    solo = world.create(1, "solo")
    ip = world.instances.of_cluster(solo)[0].private_ip
    with pytest.raises(Conflict, match="last node"):
        world.clusters.remove_node(solo, ip, release_instance=True)
    cid = world.create(2)
    mgr, wrk = sorted(world.instances.of_cluster(cid), key=lambda r: r.role)
    with pytest.raises(Conflict, match="only swarm manager"):
        world.clusters.remove_node(cid, mgr.private_ip, release_instance=True)
    with pytest.raises(NotFound):
        world.clusters.remove_node(cid, "10.1.2.3", release_instance=True)
    # without release the machine goes back to the pool, re-imaged without the cluster's certificate
    assert world.run(world.clusters.remove_node(cid, wrk.private_ip, release_instance=False)) == "success"
    back = world.instances.get(wrk.instance_id)
    assert back is not None and back.cluster_id is None and back.role == ""
    assert world.provider.specs[wrk.instance_id].tls_factory is None
    assert world.clusters.get(cid)["size"] == 1


def test_reset_node_rejoins(world: World) -> None:
    cid = world.create(2)
    wrk = next(r for r in world.instances.of_cluster(cid) if r.role == "worker")
    assert world.run(world.clusters.reset_node(cid, wrk.instance_id)) == "success"
    again = world.instances.get(wrk.instance_id)
    assert again is not None and again.role == "worker" and again.swarm_node_id != wrk.swarm_node_id
    mgr = next(r for r in world.instances.of_cluster(cid) if r.role == "manager")
    with pytest.raises(Conflict, match="only swarm manager"):
        world.clusters.reset_node(cid, mgr.instance_id)


def test_delete_cluster_releases_machines(world: World) -> None:
    cid = world.create(3)
    assert world.run(world.clusters.delete(cid)) == "success"
    assert world.provider.instances == {} and cid not in world.driver.engines
    with pytest.raises(NotFound):
        world.clusters.get(cid)


def test_repeated_instance_delete_gets_the_running_task(world: World) -> None:
    assert world.run(world.free.create(1)) == "success"
    iid = world.instances.all(free_only=True)[0].instance_id
    first = world.free.delete(iid)
    assert world.free.delete(iid) == first  # not a second delete task
    assert world.run(first) == "success"
    with pytest.raises(NotFound):
        world.free.delete(iid)


def test_health_reports_engine_and_member_state(world: World) -> None:
    cid = world.create(2)
    world.health.refresh()
    assert {r.health for r in world.instances.of_cluster(cid)} == {"healthy"}
    wrk = next(r for r in world.instances.of_cluster(cid) if r.role == "worker")
    world.driver.engines[cid].members[wrk.swarm_node_id].state = "down"
    world.health.refresh()
    assert world.instances.get(wrk.instance_id).health == "unhealthy: swarm node down"  # type: ignore[union-attr]
    world.provider.destroy(wrk.instance_id)
    world.health.refresh()
    assert world.instances.get(wrk.instance_id).state == "lost"  # type: ignore[union-attr]


def test_health_pass_reads_the_store_twice_and_probes_concurrently(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """At 1,000 nodes a pass must not cost a store query per cluster nor one engine round trip
    after the other (bench/scale.py): the member rows go to the driver, the probes overlap."""
    cids = [world.create(1, name=f"h{k}") for k in range(4)]
    world.create(2, name="h-two")
    asked: list[tuple[str, int]] = []
    member_health = world.driver.member_health
    monkeypatch.setattr(world.driver, "member_health",
                        lambda cid, rows: asked.append((cid, len(rows))) or member_health(cid, rows))
    monkeypatch.setattr(world.instances, "of_cluster", lambda cid: pytest.fail("a store read per cluster"))
    inspect = world.provider.inspect

    def slow_inspect(iid: str):  # type: ignore[no-untyped-def]
        time.sleep(0.2)  # an engine that takes its time to answer
        return inspect(iid)

    monkeypatch.setattr(world.provider, "inspect", slow_inspect)
    t = time.monotonic()
    world.health.refresh()
    took = time.monotonic() - t
    assert sorted(n for _, n in asked) == [1, 1, 1, 1, 2] and set(cids) < {c for c, _ in asked}
    assert took < 0.2 * 6 / 2, f"6 probes of 0.2 s took {took:.2f} s: not concurrent"
    monkeypatch.undo()
    assert {r.health for c in cids for r in world.instances.of_cluster(c)} == {"healthy"}


def test_health_skips_clusters_without_nodes_and_keeps_deleted_ones_out(world: World) -> None:
    cid = world.create(1, name="gone")
    world.clusters.repo.update(cid, state="deleted")
    world.health.refresh()  # a deleted cluster's rows: no member view, so the swarm state is unknown
    assert {r.health for r in world.instances.of_cluster(cid)} == {"unhealthy: swarm node unknown"}


def test_the_last_requested_size_wins(world: World) -> None:
    """Issue 13 item 3: a scale while a scale task runs is accepted; the cluster ends at the last size."""
    import time

    cid = world.create(2)
    tid = world.clusters.scale(cid, ScaleCluster(size=4))  # pending: nobody claimed it yet
    assert world.clusters.scale(cid, ScaleCluster(size=3)) == tid  # folded: it will scale to 3
    assert world.clusters.scale(cid, ScaleCluster(size=3)) == tid  # the same size again: the same task
    assert world.run(tid) == "success" and world.clusters.get(cid)["size"] == 3
    first = world.clusters.scale(cid, ScaleCluster(size=5))
    assert world.tasks.repo.claim(first, "ghost:1:dead", time.time(), 0.05) is not None  # running, then killed
    second = world.clusters.scale(cid, ScaleCluster(size=1))
    assert second != first and world.tasks.get(second).after == first
    time.sleep(0.1)  # the dead worker's lease runs out
    assert world.run(second) == "success"
    assert world.tasks.get(first).superseded_by == second and world.tasks.get(first).state == "success"
    assert world.clusters.get(cid)["size"] == 1 and len(world.instances.of_cluster(cid)) == 1
    assert world.clusters.get(cid)["state"] == "running"


class _Crash(BaseException):
    """A kill -9 in the middle of a stage: nothing after it in the process runs."""


def test_scale_resumed_after_a_crash_finishes_the_machine_it_was_making(world: World) -> None:
    """CI of stop 19: killed after the new machine was made but before its row was recorded running,
    the resumed scale saw the target size reached and left that machine pending, never a member."""
    cid = world.create(1)
    create, made = world.provider.create, []

    def made_then_killed(spec: object) -> object:
        made.append(create(spec).instance_id)  # type: ignore[arg-type]
        raise _Crash

    world.provider.create = made_then_killed  # type: ignore[method-assign,assignment]
    tid = world.clusters.scale(cid, ScaleCluster(size=2))
    with pytest.raises(_Crash):
        world.run(tid)
    world.provider.create = lambda spec: made.append(spec.instance_id) or create(spec)  # type: ignore[method-assign,assignment,func-returns-value]
    assert [r.state for r in world.instances.of_cluster(cid)].count("pending") == 1
    assert world.tasks.repo.update_owned(tid, world.tasks.owner, {"lease_until": 0.0})  # the lease ran out
    assert world.run(tid) == "success"
    rows = world.instances.of_cluster(cid)
    assert len(rows) == 2 and {r.state for r in rows} == {"running"} and all(r.swarm_node_id for r in rows)
    assert set(world.provider.instances) == {r.instance_id for r in rows}
    assert len(made) == 1  # the machine made whole before the kill is kept, not made again


def test_a_machine_made_again_is_no_member_until_it_joins(world: World) -> None:
    """A half-made machine is destroyed and made again on resume: the membership its row recorded
    belonged to the old one (a Kubernetes row kept role=worker, so its new machine never got kubelet)."""
    cid = world.create(2)
    victim = next(r for r in world.instances.of_cluster(cid) if r.role != "manager")
    world.provider.instances[victim.instance_id].details["labels"] = {}  # as if killed before it was set up
    world.machines.ensure(cid, [victim.instance_id])
    r = world.instances.get(victim.instance_id)
    assert r is not None and (r.state, r.role, r.swarm_node_id) == ("running", "", "")
    assert world.provider.instances[victim.instance_id].details["labels"]["opencs.cluster"] == cid  # made again


def test_the_cached_replies_follow_every_write_of_this_process(world: World) -> None:
    import json

    cid = world.create(1)
    detail, nodes = json.loads(world.clusters.get_json(cid)), json.loads(world.clusters.nodes_json(cid))
    assert detail == json.loads(json.dumps(world.clusters.get(cid))) and detail["size"] == 1
    assert nodes["page"]["total_count"] == 1
    tid = world.clusters.scale(cid, ScaleCluster(size=2))
    task = json.loads(world.tasks.describe_json(tid))
    assert task["task_id"] == tid and task["state"] != "success"
    assert world.run(tid) == "success"
    # the scale wrote the cluster, its instances and its task: none of the replies of before
    assert json.loads(world.clusters.get_json(cid))["size"] == 2
    assert json.loads(world.clusters.nodes_json(cid))["page"]["total_count"] == 2
    assert json.loads(world.tasks.describe_json(tid))["state"] == "success"
    described = world.tasks.describe(world.tasks.get(tid))
    assert json.loads(world.tasks.describe_json(tid)) == json.loads(json.dumps(described))
