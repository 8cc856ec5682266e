"""Events of a cluster and its projects (issue 12 item 4): task stages, node health changes,
containers that died (OOM kills included), scaling decisions with their cause. Written by the
services that see them happen, read by GET /clusters/{id}/events (and followed as server-sent
events), kept `retention` long.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import timedelta
from typing import Any

from opencs.store.db import utcnow
from opencs.store.models import Event
from opencs.store.repos.events import EventRepo

log = logging.getLogger("opencs.events")
KINDS = ("task", "node", "container", "scaling")
PRUNE_EVERY = 300.0  # seconds between two prunes (done by whoever records)


def view(e: Event) -> dict[str, Any]:
    return {"id": e.event_id, "cluster_id": e.cluster_id, "project": e.project, "kind": e.kind,
            "reason": e.reason, "message": e.message, "time": e.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


def alert_cause(body: bytes) -> str | None:
    """The cause an Alertmanager webhook call carries: its firing alerts' summaries."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("alerts"), list):
        return None
    parts = []
    for a in doc["alerts"]:
        if isinstance(a, dict) and a.get("status") == "firing":
            ann, labels = a.get("annotations") or {}, a.get("labels") or {}
            parts.append(f"alert {labels.get('alertname', '?')}: {ann.get('summary', '')}".strip())
    return "; ".join(parts)[:1000] if parts else None


class EventLog:
    def __init__(self, repo: EventRepo, retention_seconds: float = 7 * 86400) -> None:
        self.repo = repo
        self.retention = timedelta(seconds=retention_seconds)
        self._last_prune = 0.0
        self._lock = threading.Lock()

    def record(self, cluster_id: str | None, kind: str, reason: str, message: str, project: str = "") -> None:
        """Best effort: an event that cannot be written is logged, never raised into the caller."""
        if not cluster_id:
            return
        try:
            self.repo.add(Event(cluster_id=cluster_id, project=project[:64], kind=kind, reason=reason[:64],
                                message=message[:4000], at=utcnow()))
            self._maybe_prune()
        except Exception as e:  # the operation it describes has happened: do not fail it now
            log.warning("event %s/%s of %s not recorded: %s", kind, reason, cluster_id, e)

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_prune < PRUNE_EVERY:
                return
            self._last_prune = now
        self.repo.prune(utcnow() - self.retention)

    def list(self, cluster_id: str, *, after: int = 0, project: str | None = None, kind: str | None = None,
             limit: int = 100) -> list[dict[str, Any]]:
        rows = (self.repo.after(cluster_id, after, project, kind, limit) if after
                else self.repo.newest(cluster_id, project, kind, limit))
        return [view(e) for e in rows]

    def task_observer(self, task: Any, stage: str, state: str, message: str) -> None:
        """TaskEngine's observer: a stage ended (or the whole task, stage "")."""
        project = task.target_id if task.target_type == "project" else ""
        what = f"stage {stage}" if stage else "task"
        reason = f"{'Stage' if stage else 'Task'}{state.capitalize()}"
        text = f"{task.task_type} {task.task_id}: {what} {state}" + (f": {message}" if message else "")
        self.record(task.cluster_id, "task", reason, text, project)
