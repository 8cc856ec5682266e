"""What an engine says happened to its containers (issue 12 item 4): deaths with their exit code,
and whether the kernel's OOM killer was the cause. Readers are per cluster type."""

from __future__ import annotations

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

    @property
    def reason(self) -> str:
        if self.oom_killed:
            return f"exit code {self.exit_code}: killed by the kernel's OOM killer (memory limit)"
        if self.exit_code in SIGNALS:
            return f"exit code {self.exit_code}: killed by {SIGNALS[self.exit_code]}"
        return f"exit code {self.exit_code}"


class DeathReader(Protocol):
    def deaths(self, node: NodeRef, since: float, until: float) -> list[ContainerDeath]:
        """Deaths in [since, until) from the engine's event stream; EngineUnreachable if it does not answer."""
