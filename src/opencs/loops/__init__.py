"""Reconcile loops: each owns its state, started and stopped by the composition root.

A loop converges what the store wants with what the world has (the endpoint manager's listeners,
the router's HAProxy configuration, the health monitor's view of the nodes). It is handed only what
it needs by the composition root and nothing else starts or stops it.
"""

from __future__ import annotations

from typing import Protocol


class Loop(Protocol):
    """A background duty of a server process."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None:
        """Stop and release what the loop owns (threads, listeners, child processes by PID)."""
