"""/metrics: Prometheus text that moves with what the control plane does."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.conftest import Signer
from tests.plugins import sdk_tasks


def sample(text: str, name: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def scrape(client: TestClient, runtime: Any, token: str = "tok-123") -> str:
    runtime.settings.metrics_token = token  # the test client's peer is not loopback
    r = client.get("/metrics", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def test_requests_and_signature_failures_are_counted(client: TestClient, runtime: Any, signer: Signer) -> None:
    before = scrape(client, runtime)
    ok = client.get("/clusters", headers=signer.headers("GET", "/clusters"))
    assert ok.status_code == 200
    bad = signer.headers("GET", "/clusters/c1234")
    bad["authorization"] = bad["authorization"][:-4] + "AAAA"
    assert client.get("/clusters/c1234", headers=bad).status_code in (400, 401, 403)
    after = scrape(client, runtime)
    total = "opencs_http_requests_total"
    assert sample(after, total, route="/clusters", method="GET", status="200") == \
        sample(before, total, route="/clusters", method="GET", status="200") + 1
    # refused before routing, still named by its route template, never by the raw path
    assert sample(after, total, route="/clusters/{cluster_id}", method="GET") >= 1
    assert "c1234" not in after
    failures = {s.labels["reason"]: s.value for f in text_string_to_metric_families(after)
                for s in f.samples if s.name == "opencs_signature_failures_total"}
    failures_before = {s.labels["reason"]: s.value for f in text_string_to_metric_families(before)
                       for s in f.samples if s.name == "opencs_signature_failures_total"}
    assert sum(failures.values()) == sum(failures_before.values()) + 1
    assert sample(after, "opencs_http_request_duration_seconds_count", route="/clusters", method="GET") >= 1
    assert sample(after, "opencs_store_statement_duration_seconds_count", statement="SELECT") > 0


def test_task_durations_and_queue_depth(client: TestClient, runtime: Any) -> None:
    name = "opencs_task_duration_seconds_count"
    before = scrape(client, runtime)
    tid = runtime.tasks.submit(sdk_tasks.OK, {})
    assert sample(scrape(client, runtime), "opencs_task_queue_depth", state="pending") >= 1
    assert runtime.tasks.run_one()
    assert runtime.tasks.get(tid).state == "success"
    failed = runtime.tasks.submit(sdk_tasks.FAIL, {})
    assert runtime.tasks.run_one() and runtime.tasks.get(failed).state == "fail"
    after = scrape(client, runtime)
    assert sample(after, name, type=sdk_tasks.OK, outcome="success") == \
        sample(before, name, type=sdk_tasks.OK, outcome="success") + 1
    assert sample(after, "opencs_tasks_finished_total", type=sdk_tasks.FAIL, outcome="fail") == \
        sample(before, "opencs_tasks_finished_total", type=sdk_tasks.FAIL, outcome="fail") + 1
    assert sample(after, "opencs_task_stage_duration_seconds_count", type=sdk_tasks.FAIL, stage="boot",
                  outcome="error") >= 1
    assert sample(after, "opencs_task_queue_depth", state="pending") == 0


def test_metrics_need_a_token_beyond_loopback(client: TestClient, runtime: Any) -> None:
    runtime.settings.metrics_token = ""
    r = client.get("/metrics")
    assert r.status_code == 403 and r.json()["Code"] == "MetricsForbidden" and r.json()["RequestId"]
    runtime.settings.metrics_token = "right"
    assert client.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/metrics", headers={"authorization": "Bearer right"}).status_code == 200


def test_router_passes_report_loop_health(tmp_path: Any, monkeypatch: Any) -> None:
    """Issue 12 item 1 names the router among the loops whose health /metrics shows."""
    from opencs import metrics
    from opencs.routing.router import RouterService

    r = RouterService(None, None, tmp_path, interval=0)  # type: ignore[arg-type]  # sync is replaced
    calls: list[int] = []

    def sync() -> str:
        calls.append(1)
        if len(calls) == 2:
            r._stop.set()
            raise RuntimeError("boom")
        return "unchanged"

    monkeypatch.setattr(r, "sync", sync)
    before = {o: metrics.REGISTRY.get_sample_value("opencs_loop_passes_total", {"loop": "router", "outcome": o})
              or 0.0 for o in ("ok", "error")}
    r._loop()  # one good pass, one failed one, then stopped
    after = {o: metrics.REGISTRY.get_sample_value("opencs_loop_passes_total", {"loop": "router", "outcome": o})
             for o in ("ok", "error")}
    assert after == {"ok": before["ok"] + 1, "error": before["error"] + 1}
    assert metrics.REGISTRY.get_sample_value("opencs_loop_last_success_timestamp_seconds", {"loop": "router"})


def test_queue_depth_of_a_closed_store_is_not_scraped() -> None:
    """A store that is down leaves the gauge out instead of failing the scrape; a closed one is dropped."""
    from opencs import metrics

    def down() -> dict[str, int]:
        raise OSError("store is gone")

    q = metrics.watch_queue(down)
    try:
        assert metrics.REGISTRY.get_sample_value("opencs_task_queue_depth", {"state": "queued"}) is None
        assert b"opencs_task_queue_depth" not in metrics.generate_latest(metrics.REGISTRY)
    finally:
        metrics.unwatch_queue(q)
    assert metrics._queue is None
