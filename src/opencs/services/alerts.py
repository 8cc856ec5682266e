"""Scaling alert rules attached to a service (issue 12 item 3, spec §11.6): `cpu > X % for D ->
scale out by step`, `cpu < Y % for D -> scale in by step`, within min..max replicas.

A rule owns a scaling trigger of its own (created and deleted with it); the monitoring stack renders
the rule as Prometheus alerts whose Alertmanager receivers call that trigger. The trigger keeps only
its secret's hash, so the rule keeps the secret encrypted with the data dir's key.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import string
from dataclasses import asdict, dataclass
from typing import Any, Protocol
from urllib.parse import quote

from opencs.errors import BadRequest, NotFound
from opencs.monitoring.render import Direction, ScalingAlert
from opencs.secretbox import SecretBox
from opencs.store.db import utcnow
from opencs.store.models import AlertRule
from opencs.store.repos.alerts import AlertRuleRepo

MAX_REPLICAS = 100  # the projects' own bound on a service's containers
_DURATION = re.compile(r"^(\d+)(s|m|h)?$")


class Triggers(Protocol):
    def create(self, cluster_id: str, project: str, action: str, service: str = "",
               image_update: bool = False, signed: bool | None = None) -> dict[str, Any]: ...

    def delete(self, cluster_id: str, trigger_id: str) -> None: ...


def seconds(value: object, field: str) -> int:
    """`20`, `"20s"`, `"2m"`, `"1h"` -> seconds, 1 s .. 1 day."""
    m = _DURATION.match(str(value).strip()) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    if m is None:
        raise BadRequest(f"Field '{field}': a duration such as 20s, 2m or 1h")
    n = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2) or "s"]
    if not 1 <= n <= 86400:
        raise BadRequest(f"Field '{field}': from 1s to 24h")
    return n


@dataclass(frozen=True)
class Half:
    """One direction: the CPU threshold (percent of one core), how long it must hold, the step."""

    cpu: float
    for_seconds: int
    step: int


@dataclass(frozen=True)
class RuleSpec:
    scale_out: Half | None
    scale_in: Half | None
    min_replicas: int = 1
    max_replicas: int = 10
    cooldown_seconds: int = 60  # least time between two calls of one direction

    @staticmethod
    def parse(body: dict[str, Any]) -> RuleSpec:
        def half(key: str, cpu_key: str) -> Half | None:
            v = body.get(key)
            if v is None:
                return None
            if not isinstance(v, dict):
                raise BadRequest(f"Field '{key}': an object with {cpu_key}, for and step")
            cpu = v.get(cpu_key)
            if isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or not 0 < cpu <= 10000:
                raise BadRequest(f"Field '{key}.{cpu_key}': percent of one core, above 0 and at most 10000")
            step = v.get("step", 1)
            if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= 100:
                raise BadRequest(f"Field '{key}.step': an integer from 1 to 100")
            return Half(float(cpu), seconds(v.get("for", "60s"), f"{key}.for"), step)

        out, in_ = half("scale_out", "cpu_above"), half("scale_in", "cpu_below")
        if out is None and in_ is None:
            raise BadRequest("A rule needs scale_out, scale_in or both")
        lo, hi = body.get("min_replicas", 1), body.get("max_replicas", 10)
        for name, v in (("min_replicas", lo), ("max_replicas", hi)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_REPLICAS:
                raise BadRequest(f"Field '{name}': an integer from 0 to {MAX_REPLICAS}")
        if lo > hi:
            raise BadRequest("Field 'min_replicas': not above max_replicas")
        if out and in_ and in_.cpu >= out.cpu:
            raise BadRequest("Field 'scale_in.cpu_below': below scale_out.cpu_above (else the rule flaps)")
        return RuleSpec(out, in_, lo, hi, seconds(body.get("cooldown", "60s"), "cooldown"))


class AlertRuleService:
    def __init__(self, repo: AlertRuleRepo, triggers: Triggers, box: SecretBox) -> None:
        self.repo = repo
        self.triggers = triggers
        self.box = box
        self.on_change: list[Any] = []  # callables run after a rule is added or removed

    def _changed(self) -> None:
        for f in self.on_change:
            f()

    def view(self, r: AlertRule) -> dict[str, Any]:
        return {"id": r.rule_id, "cluster_id": r.cluster_id, "project_id": r.project, "service": r.service,
                "trigger_id": r.trigger_id, **{k: v for k, v in r.spec.items() if k != "token"},
                "created": r.created.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def create(self, cluster_id: str, project: str, service: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = RuleSpec.parse(body)
        if not service:
            raise BadRequest("Field 'service': the service the rule scales")
        # unsigned: Alertmanager's webhook cannot sign (Standard Webhooks); its URL file is 0600
        trigger = self.triggers.create(cluster_id, project, "scaling", service, signed=False)
        rule_id = "ar-" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(12))
        row = AlertRule(rule_id=rule_id, cluster_id=cluster_id, project=project, service=service,
                        trigger_id=trigger["id"], secret_enc=self.box.encrypt(trigger["secret"]),
                        spec={**asdict(spec), "token": trigger["token"]}, created=utcnow())
        self.repo.add(row)
        self._changed()
        return self.view(row)

    def list_rules(self, cluster_id: str) -> list[dict[str, Any]]:
        return [self.view(r) for r in self.repo.of_cluster(cluster_id)]

    def delete(self, cluster_id: str, rule_id: str) -> None:
        row = self.repo.get(rule_id)
        if row is None or row.cluster_id != cluster_id:
            raise NotFound(f"Alert rule {rule_id} not found in cluster {cluster_id}", code="AlertRuleNotFound")
        with contextlib.suppress(NotFound):  # deleted on its own already
            self.triggers.delete(cluster_id, row.trigger_id)
        self.repo.delete(rule_id)
        self._changed()

    def alerts(self, webhook_base: str, live_clusters: set[str]) -> list[ScalingAlert]:
        """Every rule of a live cluster as the alerts the stack renders; the webhook calls the trigger
        at `webhook_base` (an address the Alertmanager reaches)."""
        out: list[ScalingAlert] = []
        for r in self.repo.all():
            if r.cluster_id not in live_clusters:
                continue
            spec, secret = r.spec, self.box.decrypt(r.secret_enc)
            hook = f"{webhook_base}/hook/trigger?triggerUrl={quote(spec['token'], safe='')}&secret={secret}"
            halves: tuple[tuple[Direction, str, int], ...] = (("out", "scale_out", spec["max_replicas"]),
                                                              ("in", "scale_in", spec["min_replicas"]))
            for direction, key, bound in halves:
                h = spec.get(key)
                if h:
                    out.append(ScalingAlert(
                        r.rule_id, r.cluster_id, f"{r.project}_{r.service}", direction,
                        h["cpu"], h["for_seconds"], h["step"], bound, spec["cooldown_seconds"],
                        f"{hook}&type=scale_{direction}&step={h['step']}"))
        return out
