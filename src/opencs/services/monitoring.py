"""The monitoring stack of this control plane, on or off (`opencs monitoring enable`, POST
/monitoring/enable): whether it runs and on which loopback ports is kept in
`<data-dir>/monitoring/state.json`; what it scrapes (every live cluster) and alerts on (every
scaling rule) follows the store, converged by opencs.loops.monitoring."""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from opencs.errors import ApiError, BadRequest
from opencs.monitoring.render import ScalingAlert, StackConfig
from opencs.services.alerts import AlertRuleService


class Stack(Protocol):
    def apply(self, cfg: StackConfig, cluster_ids: list[str], alerts: list[ScalingAlert]) -> None: ...

    def stop(self) -> None: ...

    def status(self, cfg: StackConfig) -> dict[str, Any]: ...


class LiveClusters(Protocol):
    def live(self) -> list[Any]: ...


@dataclass(frozen=True)
class PlaneAddress:
    """How the stack reaches this control plane: what Prometheus scrapes and the base of the
    trigger URLs the Alertmanager calls (it runs on this host: loopback when the API listens there)."""

    config: StackConfig  # ports are filled from the state file
    webhook_base: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StackUnavailable(ApiError):
    status = 503
    code = "MonitoringUnavailable"


class MonitoringService:
    def __init__(self, state_dir: Path, stack: Stack, clusters: LiveClusters, alerts: AlertRuleService,
                 plane: PlaneAddress) -> None:
        self.state_path = state_dir / "state.json"
        self.stack, self.clusters, self.alerts, self.plane = stack, clusters, alerts, plane
        self.wake = threading.Event()  # set when something the stack renders changed
        self.last_error = ""
        self._lock = threading.Lock()
        alerts.on_change.append(self.wake.set)

    def _state(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            return {"enabled": False}
        return doc if isinstance(doc, dict) else {"enabled": False}

    def _save(self, state: dict[str, Any]) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def _config(self, state: dict[str, Any]) -> StackConfig:
        return replace(self.plane.config, prometheus_port=int(state["prometheus_port"]),
                       alertmanager_port=int(state["alertmanager_port"]))

    @property
    def enabled(self) -> bool:
        return bool(self._state().get("enabled"))

    def enable(self, prometheus_port: int | None = None, alertmanager_port: int | None = None) -> dict[str, Any]:
        for name, p in (("prometheus_port", prometheus_port), ("alertmanager_port", alertmanager_port)):
            if p is not None and not 1024 <= p <= 65535:
                raise BadRequest(f"Field '{name}': 1024 to 65535")
        with self._lock:
            old = self._state()
            state = {"enabled": True,
                     "prometheus_port": prometheus_port or old.get("prometheus_port") or _free_port(),
                     "alertmanager_port": alertmanager_port or old.get("alertmanager_port") or _free_port()}
            if state["prometheus_port"] == state["alertmanager_port"]:
                raise BadRequest("prometheus_port and alertmanager_port differ")
            self._save(state)
            self._converge(state)
        return self.status()

    def disable(self) -> dict[str, Any]:
        with self._lock:
            state = self._state()
            self.stack.stop()
            self._save({**state, "enabled": False})
        return self.status()

    def status(self) -> dict[str, Any]:
        state = self._state()
        out: dict[str, Any] = {"enabled": bool(state.get("enabled"))}
        if "prometheus_port" in state:
            out.update(self.stack.status(self._config(state)))
        out["clusters"] = sorted(c.cluster_id for c in self.clusters.live())
        out["alert_rules"] = sum(1 for r in self.alerts.repo.all() if r.cluster_id in out["clusters"])
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    def converge(self) -> None:
        """One pass of the loop: the stack runs with what the store says now (or stays off)."""
        with self._lock:
            state = self._state()
            if state.get("enabled"):
                self._converge(state)

    def _converge(self, state: dict[str, Any]) -> None:
        live = sorted(c.cluster_id for c in self.clusters.live())
        try:
            self.stack.apply(self._config(state), live, self.alerts.alerts(self.plane.webhook_base, set(live)))
            self.last_error = ""
        except (OSError, RuntimeError) as e:
            self.last_error = str(e)
            raise StackUnavailable(f"the monitoring stack: {e}") from None
