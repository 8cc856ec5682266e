"""What /proc says about a process: the checks every helper process opencs runs by PID relies on
(the bundled registry, HAProxy) before it signals anything."""

from __future__ import annotations

from pathlib import Path


def proc_state(pid: int) -> str | None:
    """Single-letter state from /proc/PID/stat, None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces or ')', so split on the last ')'
    return stat.rpartition(")")[2].split()[0]


def alive(pid: int) -> bool:
    # a zombie has exited: it only waits for its parent (init) to reap it
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]
