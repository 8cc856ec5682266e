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
