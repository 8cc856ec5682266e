"""Control-plane metrics (Prometheus exposition through `prometheus_client`).

One registry per process, so that tests and several control planes in one interpreter do not mix
their figures with the library's global one. Everything here is cheap to call on hot paths.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SLOW = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

http_requests = Counter("opencs_http_requests", "Control-plane API requests", ["route", "method", "status"],
                        registry=REGISTRY)
http_latency = Histogram("opencs_http_request_duration_seconds", "Control-plane API latency", ["route", "method"],
                         buckets=_FAST, registry=REGISTRY)
signature_failures = Counter("opencs_signature_failures", "Signed requests refused, by reason (error code)",
                             ["reason"], registry=REGISTRY)
tasks_finished = Counter("opencs_tasks_finished", "Durable tasks that ended", ["type", "outcome"], registry=REGISTRY)
task_duration = Histogram("opencs_task_duration_seconds", "Durable task run time (one claim), by outcome",
                          ["type", "outcome"], buckets=_SLOW, registry=REGISTRY)
stage_duration = Histogram("opencs_task_stage_duration_seconds", "Task stage run time", ["type", "stage", "outcome"],
                           buckets=_SLOW, registry=REGISTRY)
loop_passes = Counter("opencs_loop_passes", "Reconcile passes of the control-plane loops", ["loop", "outcome"],
                      registry=REGISTRY)
loop_last_success = Gauge("opencs_loop_last_success_timestamp_seconds", "Unix time of a loop's last good pass",
                          ["loop"], registry=REGISTRY)
duties_held = Gauge("opencs_duty_held", "1 while this process holds the lease of a singleton duty and runs it",
                    ["duty"], registry=REGISTRY)
engine_writes = Counter("opencs_engine_service_writes", "Service creates and spec updates sent to a swarm "
                        "(deploys, scales, redeploys)", ["op"], registry=REGISTRY)
store_latency = Histogram("opencs_store_statement_duration_seconds", "Database statement latency", ["statement"],
                          buckets=_FAST, registry=REGISTRY)


def loop_pass(loop: str, ok: bool) -> None:
    loop_passes.labels(loop, "ok" if ok else "error").inc()
    if ok:
        loop_last_success.labels(loop).set(time.time())


def duty_held(duty: str, held: bool) -> None:
    duties_held.labels(duty).set(1 if held else 0)


@contextmanager
def timed_stage(task_type: str, stage: str) -> Iterator[None]:
    start, outcome = time.perf_counter(), "error"
    try:
        yield
        outcome = "success"
    finally:
        stage_duration.labels(task_type, stage, outcome).observe(time.perf_counter() - start)


class QueueDepth(Collector):
    """Tasks waiting or running, read from the store when scraped (one COUNT per state)."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily("opencs_task_queue_depth", "Durable tasks not yet ended, by state", labels=["state"])
        try:
            counts = self.counts()
        except Exception as e:  # a store that is down must not fail the whole scrape: the gauge is absent
            log.warning("task queue depth not read: %s", e)
            return
        for state, n in sorted(counts.items()):
            g.add_metric([state], n)
        yield g


def watch_queue(counts: Callable[[], dict[str, int]]) -> QueueDepth:
    """Report the task queue of this process's store (the last store registered wins)."""
    global _queue
    if _queue is not None:
        REGISTRY.unregister(_queue)
    _queue = QueueDepth(counts)
    REGISTRY.register(_queue)
    return _queue


def unwatch_queue(queue: QueueDepth | None) -> None:
    """A closed store stops being scraped (unless another store has replaced it already)."""
    global _queue
    if queue is not None and queue is _queue:
        REGISTRY.unregister(queue)
        _queue = None


_queue: QueueDepth | None = None


def exposition() -> bytes:
    return generate_latest(REGISTRY)
