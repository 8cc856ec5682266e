"""What /proc says about a process: the checks every helper process opencs runs by PID relies on
(the bundled registry, HAProxy) before it signals anything."""

from __future__ import annotations

from pathlib import Path


def _stat_state(path: Path) -> str | None:
    try:
        stat = path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces or ')', so split on the last ')'
    return stat.rpartition(")")[2].split()[0]


def proc_state(pid: int) -> str | None:
    """Single-letter state from /proc/PID/stat, None if no such process."""
    return _stat_state(Path(f"/proc/{pid}/stat"))


def alive(pid: int) -> bool:
    """True until every thread of the process has exited.

    A zombie has exited and only waits for its parent to reap it -- but the thread-group leader
    shows Z as soon as it is done while its other threads still tear down and hold the process's
    files (a Go program's listening socket, say), so a zombie leader counts as alive until no
    thread of its group runs."""
    state = proc_state(pid)
    if state is None or state == "X":
        return False
    if state != "Z":
        return True
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return False
    return any(_stat_state(t / "stat") not in (None, "Z", "X") for t in tasks)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]
