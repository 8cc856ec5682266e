"""Pure rendering of the stack's files: prometheus.yml, the scaling rules, alertmanager.yml and the
file_sd targets (one per cluster). Nothing here touches a process or the disk.

CPU is the percentage of one core (the seed walkthrough's `usage_percent`), averaged over the
service's running containers: `100 * rate(opencs_container_cpu_usage_seconds_total[w])`. A rule
fires only while a step keeps the service within its bounds (`count + step <= max` out,
`count - step >= min` in), so the trigger never overshoots them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import yaml

CPU = "opencs_container_cpu_usage_seconds_total"
GROUP = "aliyun_cluster, aliyun_service_id"
Direction = Literal["out", "in"]


@dataclass(frozen=True)
class ScalingAlert:
    """One half of a user's rule: `cpu > threshold for D -> scale out by step` (or `<` and in)."""

    rule_id: str
    cluster_id: str
    service_id: str  # <project>_<service>, the engines' aliyun.service.id
    direction: Direction
    threshold: float  # percent of one core
    for_seconds: int
    step: int
    bound: int  # max replicas (out) or min replicas (in)
    cooldown_seconds: int  # Alertmanager repeat_interval: the least time between two calls
    webhook_url: str  # the scaling trigger with secret, type and step (a secret: files are 0600)

    @property
    def name(self) -> str:
        return f"{self.rule_id}-{self.direction}"


@dataclass(frozen=True)
class StackConfig:
    api_address: str  # host:port Prometheus scrapes (loopback where the API listens on it)
    api_scheme: str = "http"
    ca_file: str | None = None  # the API's CA when it speaks HTTPS
    token_file: str | None = None  # bearer token for /metrics when the API is not on loopback
    scrape_interval: float = 15.0
    evaluation_interval: float = 15.0
    collect_interval: float = 15.0  # how often the usage figures themselves change
    prometheus_port: int = 9390
    alertmanager_port: int = 9393

    @property
    def rate_window(self) -> str:
        # enough samples that change: two collector passes and two scrapes at the least
        return duration(max(4 * self.scrape_interval, 2 * self.collect_interval + self.scrape_interval))


def duration(seconds: float) -> str:
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _scrape_job(name: str, path: str, cfg: StackConfig) -> dict[str, Any]:
    job: dict[str, Any] = {"job_name": name, "metrics_path": path, "scheme": cfg.api_scheme}
    if cfg.ca_file:
        job["tls_config"] = {"ca_file": cfg.ca_file}
    if cfg.token_file:
        job["authorization"] = {"credentials_file": cfg.token_file}
    return job


def prometheus_yml(cfg: StackConfig, targets_glob: str, rules_glob: str) -> str:
    plane = {**_scrape_job("opencs", "/metrics", cfg), "static_configs": [{"targets": [cfg.api_address]}]}
    containers = {**_scrape_job("opencs-containers", "/metrics/containers", cfg),
                  "file_sd_configs": [{"files": [targets_glob], "refresh_interval": "5s"}]}
    doc = {
        "global": {"scrape_interval": duration(cfg.scrape_interval),
                   "evaluation_interval": duration(cfg.evaluation_interval),
                   "scrape_timeout": duration(min(10.0, cfg.scrape_interval))},
        "rule_files": [rules_glob],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{cfg.alertmanager_port}"]}]}]},
        "scrape_configs": [plane, containers],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def targets_json(cluster_ids: list[str], cfg: StackConfig) -> str:
    """file_sd: one target per cluster, its id as the `cluster` URL parameter and as `instance`
    (so the series of two clusters' scrapes never collide)."""
    return json.dumps([{"targets": [cfg.api_address], "labels": {"__param_cluster": cid, "instance": cid}}
                       for cid in sorted(cluster_ids)], indent=1)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def alert_expr(a: ScalingAlert, cfg: StackConfig) -> str:
    sel = f'{CPU}{{aliyun_cluster="{_esc(a.cluster_id)}",aliyun_service_id="{_esc(a.service_id)}"}}'
    cpu = f"avg by ({GROUP}) (100 * rate({sel}[{cfg.rate_window}]))"
    count = f"count by ({GROUP}) ({sel})"
    if a.direction == "out":
        return f"({cpu} > {a.threshold:g}) and on ({GROUP}) ({count} + {a.step} <= {a.bound})"
    return f"({cpu} < {a.threshold:g}) and on ({GROUP}) ({count} - {a.step} >= {a.bound})"


def rules_yml(alerts: list[ScalingAlert], cfg: StackConfig) -> str:
    rules = []
    for a in alerts:
        op, verb = (">", "scale out") if a.direction == "out" else ("<", "scale in")
        rules.append({
            "alert": "OpencsScaleOut" if a.direction == "out" else "OpencsScaleIn",
            "expr": alert_expr(a, cfg),
            "for": duration(a.for_seconds),
            "labels": {"opencs_rule": a.rule_id, "opencs_direction": a.direction},
            "annotations": {
                "summary": f"cpu {{{{ $value | printf \"%.1f\" }}}}% {op} {a.threshold:g}% for {a.for_seconds}s: "
                           f"{verb} {a.service_id} by {a.step}",
            },
        })
    return yaml.safe_dump({"groups": [{"name": "opencs-scaling", "rules": rules}]}, sort_keys=False)


def alertmanager_yml(alerts: list[ScalingAlert], cfg: StackConfig) -> str:
    """One receiver per rule half: a webhook that calls the scaling trigger. A firing alert calls it
    at once and again every cooldown while it stays firing; resolving calls nothing."""
    routes: list[dict[str, Any]] = []
    receivers: list[dict[str, Any]] = [{"name": "opencs-none"}]
    for a in alerts:
        cool = duration(a.cooldown_seconds)
        routes.append({
            "receiver": a.name,
            "matchers": [f'opencs_rule="{a.rule_id}"', f'opencs_direction="{a.direction}"'],
            "group_by": ["opencs_rule", "opencs_direction"],
            "group_wait": "0s", "group_interval": duration(min(5, a.cooldown_seconds)), "repeat_interval": cool,
        })
        hook: dict[str, Any] = {"url": a.webhook_url, "send_resolved": False, "max_alerts": 1}
        if cfg.ca_file:
            hook["http_config"] = {"tls_config": {"ca_file": cfg.ca_file}}
        receivers.append({"name": a.name, "webhook_configs": [hook]})
    doc = {
        "route": {"receiver": "opencs-none", "group_by": ["opencs_rule", "opencs_direction"], "routes": routes},
        "receivers": receivers,
    }
    return yaml.safe_dump(doc, sort_keys=False)
