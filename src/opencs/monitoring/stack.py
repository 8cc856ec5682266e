"""Debian's prometheus and prometheus-alertmanager for one control plane, under
`<data-dir>/monitoring/`, listening on loopback only.

`apply()` is idempotent: it rewrites what changed (files 0600: the Alertmanager receivers hold
trigger secrets), starts what is not running, and reloads a running process whose configuration
changed. Scrape targets are a file_sd file Prometheus re-reads by itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from opencs.monitoring import render
from opencs.monitoring.daemon import Daemon, DaemonError
from opencs.procs import cmdline

PROMETHEUS = Path("/usr/bin/prometheus")
ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")


def _write(path: Path, text: str) -> bool:
    """Replace the file if its content differs; True when it did."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


class MonitoringStack:
    def __init__(self, root: Path, prometheus: Path = PROMETHEUS, alertmanager: Path = ALERTMANAGER,
                 retention: str = "7d") -> None:
        self.root = root
        self.prom_dir, self.am_dir = root / "prometheus", root / "alertmanager"
        self.prom_config, self.am_config = self.prom_dir / "prometheus.yml", self.am_dir / "alertmanager.yml"
        self.rules_file = self.prom_dir / "rules" / "scaling.yml"
        self.targets_file = self.prom_dir / "targets" / "clusters.json"
        self.binaries = (prometheus, alertmanager)
        self.retention = retention

    def _daemons(self, cfg: render.StackConfig) -> tuple[Daemon, Daemon]:
        prom = Daemon("prometheus", self.binaries[0], self.prom_config, [
            f"--config.file={self.prom_config}", f"--storage.tsdb.path={self.prom_dir / 'data'}",
            f"--storage.tsdb.retention.time={self.retention}", f"--web.listen-address=127.0.0.1:{cfg.prometheus_port}",
            "--web.enable-lifecycle",
            f"--rules.alert.resend-delay={render.duration(max(1.0, cfg.evaluation_interval))}",
            "--log.level=warn"], self.prom_dir)
        am = Daemon("alertmanager", self.binaries[1], self.am_config, [
            f"--config.file={self.am_config}", f"--storage.path={self.am_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{cfg.alertmanager_port}", "--cluster.listen-address=",
            "--log.level=warn"], self.am_dir)
        return prom, am

    def apply(self, cfg: render.StackConfig, cluster_ids: list[str], alerts: list[render.ScalingAlert]) -> None:
        changed_prom = _write(self.rules_file, render.rules_yml(alerts, cfg))
        changed_prom |= _write(self.prom_config, render.prometheus_yml(
            cfg, str(self.targets_file.parent / "*.json"), str(self.rules_file.parent / "*.yml")))
        _write(self.targets_file, render.targets_json(cluster_ids, cfg))
        changed_am = _write(self.am_config, render.alertmanager_yml(alerts, cfg))
        prom, am = self._daemons(cfg)
        for daemon, port, changed in ((am, cfg.alertmanager_port, changed_am),
                                      (prom, cfg.prometheus_port, changed_prom)):
            pid = daemon.pid()
            if pid is not None and f"--web.listen-address=127.0.0.1:{port}" not in cmdline(pid):
                daemon.stop()  # moved to another port
                pid = None
            if pid is None:
                daemon.start()
                daemon.wait_ready(f"http://127.0.0.1:{port}/-/ready")
            elif changed:
                self._reload(daemon, port)

    @staticmethod
    def _reload(daemon: Daemon, port: int) -> None:
        try:
            r = httpx.post(f"http://127.0.0.1:{port}/-/reload", timeout=10)
        except httpx.HTTPError as e:
            raise DaemonError(f"{daemon.name} reload: {e}") from None
        if r.status_code != 200:
            raise DaemonError(f"{daemon.name} refused its configuration: {r.text.strip()[:300]}")

    def stop(self) -> None:
        """Both processes, by their recorded PIDs (whatever ports they were started with)."""
        for d in self._daemons(render.StackConfig("")):
            d.stop()

    def status(self, cfg: render.StackConfig) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for d, port in zip(self._daemons(cfg), (cfg.prometheus_port, cfg.alertmanager_port), strict=True):
            pid = d.pid()
            out[d.name] = {"pid": pid, "url": f"http://127.0.0.1:{port}", "running": pid is not None}
        return out
