"""What an engine says happened to its containers (issue 12 item 4): deaths with their exit code,
and whether the kernel's OOM killer was the cause. Readers are per cluster type."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from opencs.engines.usage import NodeRef

SIGNALS = {137: "SIGKILL", 143: "SIGTERM", 139: "SIGSEGV", 134: "SIGABRT"}


@dataclass(frozen=True)
class ContainerDeath:
    at: float  # unix time
    container: str  # name
    project: str  # aliyun.project (the stack namespace)
    service_id: str  # <project>_<service>
    exit_code: int
    oom_killed: bool
    engine_reason: str = ""  # the engine's own word for it (Kubernetes: Error, OOMKilled, Completed...)
    restarts: int | None = None  # how often the engine has restarted the container (None: it does not count)

    @property
    def reason(self) -> str:
        if self.oom_killed:
            text = f"exit code {self.exit_code}: killed by the kernel's OOM killer (memory limit)"
        elif self.exit_code in SIGNALS:
            text = f"exit code {self.exit_code}: killed by {SIGNALS[self.exit_code]}"
        else:
            text = f"exit code {self.exit_code}"
        if self.engine_reason and self.engine_reason != "OOMKilled":
            text += f" ({self.engine_reason})"
        if self.restarts:
            text += f", restarted {self.restarts} time{'s' if self.restarts > 1 else ''} so far"
        return text


class DeathReader(Protocol):
    def deaths(self, node: NodeRef, since: float, until: float) -> list[ContainerDeath]:
        """Deaths in [since, until) from the engine's event stream, each once; EngineUnreachable if it does
        not answer. `since` of a reader's first call is when the watcher started: nothing older."""
        ...

    def retain(self, nodes: Sequence[NodeRef]) -> None:
        """After each pass, the nodes it asked: what is kept for others goes (as UsageReader.retain)."""
