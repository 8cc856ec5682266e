"""The InfluxDB add-on's export (opencs.services.influxdb_addon) over made-up usage snapshots:
where a label's URL leads, the points and their tags, the bounded queue, failures and back-off.
The real thing, with Debian's influxd in a real swarm, is tests/monitoring/test_influxdb.py."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

from opencs.engines.usage import ContainerUsage, NodeUsage, Usage
from opencs.monitoring.influxdb import InfluxError, InfluxTarget, InfluxWriter, parse_addon_url
from opencs.services import influxdb_addon
from opencs.services.influxdb_addon import InfluxExport
from opencs.services.usage import ClusterUsage, UsageSnapshot

SEED_LABEL = "http://influxdb:8086"


def usage(cpu: float) -> Usage:
    return Usage(cpu, 100, 80, 1000, 1, 2, 3, 4)


def snapshot(t: float, cpu: float, label: str = SEED_LABEL, ports: tuple[tuple[int, int], ...] = ((8086, 18086),),
             ) -> UsageSnapshot:
    influx = ContainerUsage("i" * 64, "monitor_influxdb.1.x", "monitor", "monitor_influxdb", usage(1.0), label, ports)
    web = ContainerUsage("w" * 64, "web_app.1.y", "web", "web_app", usage(cpu))
    other = ContainerUsage("o" * 64, "lonely", "", "", usage(0.0))
    return UsageSnapshot(t, 0.01, [
        ClusterUsage("c1", [NodeUsage("i-a", usage(5), [influx], address="10.0.0.2"),
                            NodeUsage("i-b", usage(5), [web, other], address="10.0.0.3")]),
        ClusterUsage("c2", [NodeUsage("i-c", usage(5), [ContainerUsage("z" * 64, "x_y.1", "x", "x_y", usage(1))])]),
    ])


class FakeWriter:
    def __init__(self, target: InfluxTarget, fail: bool = False) -> None:
        self.target, self.fail = target, fail
        self.batches: list[list[dict[str, Any]]] = []

    def write(self, points: list[dict[str, Any]]) -> None:
        if self.fail:
            raise InfluxError(f"write: {self.target.url} unreachable (ConnectionError)")
        self.batches.append(points)

    def close(self) -> None:
        pass


def counter(name: str, **labels: str) -> float:
    from opencs import metrics

    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_seed_url_names_a_service_of_the_project_and_leads_to_its_published_port() -> None:
    ex = InfluxExport()
    (target,) = ex.targets(snapshot(1.0, 1.0))
    assert (target.url, target.database) == ("http://10.0.0.2:18086", "telegraf")
    assert ex.targets(snapshot(1.0, 1.0)) == {target: {"c1"}}  # only the cluster the label is in


def test_other_urls_are_used_as_written_and_unreachable_ones_are_said_once(caplog: pytest.LogCaptureFixture) -> None:
    ex = InfluxExport()
    (t,) = ex.targets(snapshot(1.0, 1.0, label="https://metrics.example:9999"))
    assert t.url == "https://metrics.example:9999"
    with caplog.at_level(logging.WARNING, "opencs.influxdb"):
        assert ex.targets(snapshot(1.0, 1.0, ports=())) == {}  # the service publishes nothing
        assert ex.targets(snapshot(1.0, 1.0, ports=())) == {}
        assert ex.targets(snapshot(1.0, 1.0, label="influxdb:8086")) == {}  # not a URL
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "publish port 8086 of service monitor_influxdb" in warned[0], warned


def test_credentials_stay_out_of_urls_and_reprs() -> None:
    t = parse_addon_url("http://admin:p%40ss@influxdb:8086")
    assert (t.username, t.password, t.url) == ("admin", "p@ss", "http://influxdb:8086")
    assert "p@ss" not in repr(t)
    assert parse_addon_url("http://[fd00::1]").url == "http://[fd00::1]:8086"
    with pytest.raises(ValueError):
        parse_addon_url("http://influxdb:99999")


def test_points_carry_the_walkthrough_names_and_usage_percent_from_the_second_pass() -> None:
    writers: list[FakeWriter] = []
    ex = InfluxExport(lambda t: writers.append(FakeWriter(t)) or writers[-1])
    ex.offer(snapshot(100.0, 10.0))
    ex.offer(snapshot(102.0, 11.5))  # web_app used 1.5 s of CPU in 2 s
    assert ex.drain(0) and ex.drain(0) and not ex.drain(0)
    (w,) = writers
    first, second = w.batches
    cpu = [p for p in second if p["measurement"] == "docker_container_cpu"]
    web = next(p for p in cpu if p["tags"]["aliyun.service.id"] == "web_app")
    assert web["tags"] == {"aliyun.cluster": "c1", "aliyun.project": "web", "aliyun.service.id": "web_app",
                           "container_name": "web_app.1.y", "node": "i-b", "cpu": "cpu-total"}
    assert web["fields"] == {"usage_total": 11_500_000_000, "usage_percent": pytest.approx(75.0)}
    assert web["time"] == 102_000
    assert all("usage_percent" not in p["fields"] for p in first if p["measurement"] == "docker_container_cpu")
    assert {p["measurement"] for p in second} == {"docker_container_cpu", "docker_container_mem",
                                                  "docker_container_net", "docker_container_blkio"}
    assert {p["tags"]["aliyun.cluster"] for p in second} == {"c1"}  # c2 carries no label
    assert len(second) == 4 * 3  # every container of c1, the unlabelled one too


def test_a_full_queue_drops_and_counts_and_a_failing_target_backs_off() -> None:
    ex = InfluxExport(lambda t: FakeWriter(t, fail=True), queue_size=2, backoff=60)
    dropped, failed, fails = (counter("opencs_influxdb_points_total", outcome="dropped"),
                              counter("opencs_influxdb_points_total", outcome="failed"),
                              counter("opencs_influxdb_write_failures_total"))
    for t in range(3):
        ex.offer(snapshot(float(t), 1.0))  # never blocks: the third batch does not fit
    assert counter("opencs_influxdb_points_total", outcome="dropped") == dropped + 12
    assert ex.drain(0) and ex.drain(0)  # the first fails; the second is dropped: backing off
    assert counter("opencs_influxdb_write_failures_total") == fails + 1
    assert counter("opencs_influxdb_points_total", outcome="failed") == failed + 12
    assert counter("opencs_influxdb_points_total", outcome="dropped") == dropped + 24


def test_a_down_influxdb_fails_fast_and_names_no_credential(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    ex = InfluxExport(InfluxWriter)
    ex.offer(snapshot(1.0, 1.0, label=f"http://admin:hunter2-secret@127.0.0.1:{port}"))
    with caplog.at_level(logging.DEBUG):
        assert ex.drain(1)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"127.0.0.1:{port} unreachable" in text and "hunter2" not in text
    ex.close()


def test_a_sink_that_raises_does_not_stop_the_usage_pass() -> None:
    from opencs.services.usage import UsageService
    from tests.engines.test_usage import FakeReader, Rows, row

    svc = UsageService(Rows([row(cluster_id="c1", cluster_type="swarm")]),  # type: ignore[arg-type]
                       Rows([row(instance_id="i-a", cluster_id="c1", state="running", docker_host="unix:///a",
                                 details={}, private_ip="10.0.0.9")]), {"swarm": FakeReader()})
    seen: list[UsageSnapshot] = []
    svc.sinks += [lambda s: 1 / 0, seen.append]  # type: ignore[func-returns-value]
    snap = svc.collect()
    assert seen == [snap] and svc.latest is snap


def test_back_off_doubles_and_a_recovered_target_is_written_again(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(influxdb_addon.time, "monotonic", lambda: now[0])
    writers: list[FakeWriter] = []
    ex = InfluxExport(lambda t: writers.append(FakeWriter(t, fail=True)) or writers[-1], backoff=3)
    tries = []
    for step in range(8):  # one pass a second: tried at 0, 1, 3, 6 (1 s, 2 s, then capped at 3 s)
        ex.offer(snapshot(float(step), 1.0))
        before = counter("opencs_influxdb_write_failures_total")
        ex.drain(0)
        if counter("opencs_influxdb_write_failures_total") > before:
            tries.append(step)
        now[0] += 1
    assert tries == [0, 1, 3, 6]
    writers[0].fail = False
    now[0] += 3
    ex.offer(snapshot(9.0, 1.0))
    ex.drain(0)
    assert len(writers) == 1 and len(writers[0].batches) == 1
