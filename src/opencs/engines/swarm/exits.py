"""What the containers of a swarm service did when they exited: per slot (per node for a global
service) the newest task, and from those whether the service runs, completed (a one-shot command
that exited 0 and is not restarted) or failed (exited non-zero and the restart policy gave up).

Pure functions over the Engine API's task dicts; reading a container's last log lines goes through
the node's own engine (the swarm keeps the exited container of a task it does not restart).
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from docker.errors import DockerException

from opencs.engines.swarm import client

CURRENT = ("running", "ready")  # desired states of the tasks the swarm wants running now
EXITED_OK = "complete"
EXITED_BAD = ("failed", "rejected")
REMOVED = "remove"  # desired state of a task a scale-down (or a removal) takes away


def scaled_away(t: dict[str, Any]) -> bool:
    """Taken away on purpose: how its container ended (killed after the grace period, or marked
    failed by a network clean-up race of the engine) is no outcome of the service."""
    return t.get("DesiredState") == REMOVED
LOG_LINES = 5


def timestamp(ts: str) -> float:
    """An Engine API timestamp (nanoseconds, Z) as seconds since the epoch (0 when unreadable)."""
    if not ts:
        return 0.0
    for fmt, n in (("%Y-%m-%dT%H:%M:%S.%f", 26), ("%Y-%m-%dT%H:%M:%S", 19)):
        try:
            return datetime.strptime(ts[:n].rstrip("Z"), fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return 0.0


def _state(t: dict[str, Any]) -> str:
    return str((t.get("Status") or {}).get("State", ""))


def _same_spec(t: dict[str, Any], template: dict[str, Any] | None) -> bool:
    """Did the task run the service's task template as it is now? An exit under an older spec is
    no outcome of the current one (the swarm is about to replace that task)."""
    if template is None:
        return True
    spec = t.get("Spec") or {}
    return bool(spec.get("ContainerSpec") == template.get("ContainerSpec")
                and spec.get("ForceUpdate", 0) == template.get("ForceUpdate", 0))


def newest_by_slot(tasks: list[dict[str, Any]], *, by_node: bool,
                   template: dict[str, Any] | None = None) -> dict[Any, dict[str, Any]]:
    """The newest task of each slot that ran or runs the service's command now. Tasks shut down by
    an update (state "shutdown") or taken away by a scale-down are not outcomes of a slot."""
    out: dict[Any, dict[str, Any]] = {}
    for t in tasks:
        current = t.get("DesiredState") in CURRENT
        if not current and (_state(t) not in (EXITED_OK, *EXITED_BAD) or not _same_spec(t, template)
                            or scaled_away(t)):
            continue
        key = t.get("NodeID") if by_node else t.get("Slot")
        old = out.get(key)
        if old is None or timestamp(t.get("CreatedAt", "")) > timestamp(old.get("CreatedAt", "")):
            out[key] = t
    return out


def _completed(t: dict[str, Any]) -> bool:
    return t.get("DesiredState") not in CURRENT and _state(t) == EXITED_OK


def completed_slots(tasks: list[dict[str, Any]], *, by_node: bool, template: dict[str, Any] | None = None) -> int:
    """How many slots ran their command to the end (exit 0, not restarted)."""
    return sum(1 for t in newest_by_slot(tasks, by_node=by_node, template=template).values() if _completed(t))


@dataclass(frozen=True)
class Outcome:
    """running | completed | failed | "" (none of these: starting, restarting, updating...)."""

    state: str
    task: dict[str, Any] | None = None  # the failed (or, completed: the last) task
    attempts: int = 0  # tasks of the failed slot that exited non-zero


def outcome(tasks: list[dict[str, Any]], want: int, *, by_node: bool,
            template: dict[str, Any] | None = None) -> Outcome:
    """Whether the service's slots settled: every slot running or exited for good (under the
    service's current task `template`)."""
    slots = newest_by_slot(tasks, by_node=by_node, template=template)
    failed = [t for t in slots.values() if t.get("DesiredState") not in CURRENT and _state(t) in EXITED_BAD]
    if failed:
        t = max(failed, key=lambda x: timestamp(x.get("CreatedAt", "")))
        key = t.get("NodeID") if by_node else t.get("Slot")
        attempts = sum(1 for x in tasks if (x.get("NodeID") if by_node else x.get("Slot")) == key
                       and _state(x) in EXITED_BAD)
        return Outcome("failed", t, attempts)
    if len(slots) < want:
        return Outcome("")
    states = [("running" if t.get("DesiredState") in CURRENT and _state(t) == "running" else
               "completed" if _completed(t) else "")
              for t in slots.values()]
    if not states or "" in states:
        return Outcome("")
    if "running" in states:
        return Outcome("running")
    return Outcome("completed", max(slots.values(), key=lambda x: timestamp(x.get("CreatedAt", ""))))


def exit_code(t: dict[str, Any]) -> int | None:
    code = ((t.get("Status") or {}).get("ContainerStatus") or {}).get("ExitCode")
    return int(code) if isinstance(code, int) else None


def container_id(t: dict[str, Any]) -> str:
    return str(((t.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID") or "")


def last_log_lines(docker_host: str, cid: str, lines: int = LOG_LINES) -> list[str]:
    """The container's last lines of output (stdout and stderr); [] when the node does not answer."""
    if not docker_host or not cid:
        return []
    try:
        with closing(client(docker_host, timeout=10)) as c:
            raw = c.api.logs(cid, stdout=True, stderr=True, tail=lines)
    except (DockerException, OSError):
        return []
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return [ln for ln in text.splitlines() if ln.strip()][-lines:]


def failure_text(name: str, o: Outcome, logs: list[str]) -> str:
    """'service bad: exit code 1 after 3 attempts, not restarted again; last log lines: ...'."""
    t = o.task or {}
    code = exit_code(t)
    err = str((t.get("Status") or {}).get("Err") or (t.get("Status") or {}).get("Message") or _state(t))
    what = f"exit code {code}" if code is not None else err
    tries = f" after {o.attempts} attempt{'s' if o.attempts != 1 else ''}" if o.attempts else ""
    msg = f"service {name}: {what}{tries}, not restarted again"
    if code is not None and err and "exit" not in err:  # the engine's reason says more than the code
        msg += f" ({err})"
    if logs:
        msg += "; last log lines: " + " | ".join(logs)
    return msg
