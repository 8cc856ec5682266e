"""DriverSet asks the store for a cluster's type once: every call on a cluster dispatches through it."""

from __future__ import annotations

from opencs.engines.drivers import DriverSet
from opencs.engines.fake.cluster import FakeClusterDriver


def test_driver_set_remembers_known_types_only() -> None:
    asked: list[str] = []
    types = {"c-s": "swarm"}

    def type_of(cid: str) -> str | None:
        asked.append(cid)
        return types.get(cid)

    fake = FakeClusterDriver(book=None)  # type: ignore[arg-type]
    ds = DriverSet(fake, [], type_of)
    for _ in range(3):
        assert ds.of("c-s") is fake and ds.of("c-new") is fake
    assert asked.count("c-s") == 1  # a cluster's type never changes
    assert asked.count("c-new") == 3  # not recorded yet (None): asked again until it is
    types["c-new"] = "swarm"
    ds.of("c-new")
    ds.of("c-new")
    assert asked.count("c-new") == 4


def test_readers_by_every_type_an_engine_records() -> None:
    from opencs.engines.kubernetes.driver import KubernetesDriver
    from opencs.engines.kubernetes.usage import KubernetesUsageReader
    from opencs.engines.swarm.driver import SwarmDriver
    from opencs.engines.swarm.usage import SwarmUsageReader

    swarm, kube = SwarmDriver(book=None), KubernetesDriver(book=None, clusters=None)  # type: ignore[arg-type]
    ds = DriverSet(swarm, [kube], lambda cid: None)
    readers = ds.by_type(lambda d: d.usage_reader())
    assert set(readers) == {"swarm", "aliyun", "kubernetes", "managedkubernetes"}
    assert isinstance(readers["swarm"], SwarmUsageReader) and isinstance(readers["kubernetes"], KubernetesUsageReader)
    assert readers["kubernetes"] is readers["managedkubernetes"] is kube.usage_reader()  # one per process
    assert DriverSet(FakeClusterDriver(book=None), [], lambda cid: None).by_type(  # type: ignore[arg-type]
        lambda d: d.death_reader()) == {}  # an engine without one is not read
