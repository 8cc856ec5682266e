"""Usage of one cgroup (v1 hierarchies, as this host has them) and of a network namespace.

Reading a few small kernel files costs ~0.1 ms per group, an order of magnitude below one call to
an engine's stats API (which also makes the engine sample for about a second): bench/metrics.py
measures both. Every function takes the roots so that unit tests can point them at a fake tree.
"""

from __future__ import annotations

from pathlib import Path

from opencs.engines.usage import Usage

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
_UNLIMITED = 1 << 62  # v1 reports "no limit" as a page-aligned LONG_MAX


def _read(path: Path) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def _int(path: Path) -> int:
    return int(_read(path).strip() or 0)


def exists(rel: str, root: Path = CGROUP_ROOT) -> bool:
    return (root / "cpuacct" / rel).is_dir()


def first_pid(rel: str, root: Path = CGROUP_ROOT) -> int | None:
    """A process of the group itself (not of a child group), e.g. to find its network namespace."""
    try:
        head = _read(root / "pids" / rel / "cgroup.procs").split(None, 1)
    except OSError:
        return None
    return int(head[0]) if head else None


def net_bytes(pid: int | None, proc: Path = PROC) -> tuple[int, int]:
    """(received, transmitted) bytes over every interface but loopback of `pid`'s network namespace."""
    if pid is None:
        return 0, 0
    try:
        lines = _read(proc / str(pid) / "net" / "dev").splitlines()[2:]
    except OSError:
        return 0, 0  # the process just ended
    rx = tx = 0
    for line in lines:
        name, _, data = line.partition(":")
        if name.strip() == "lo":
            continue
        f = data.split()
        rx += int(f[0])
        tx += int(f[8])
    return rx, tx


def _blkio(path: Path) -> tuple[int, int]:
    read = write = 0
    try:
        text = _read(path)
    except OSError:
        return 0, 0  # no blkio group (nothing of the group did I/O yet)
    for line in text.splitlines():
        f = line.split()
        if len(f) == 3 and f[1] == "Read":
            read += int(f[2])
        elif len(f) == 3 and f[1] == "Write":
            write += int(f[2])
    return read, write


def blkio_bytes(rel: str, root: Path = CGROUP_ROOT) -> tuple[int, int]:
    """(read, written) bytes of the group `rel` on block devices, children included; 0, 0 if none yet."""
    return _blkio(root / "blkio" / rel / "blkio.throttle.io_service_bytes_recursive")


def memory_limit(rel: str, root: Path = CGROUP_ROOT) -> int | None:
    """The group's memory limit in bytes; None if unlimited or the group is gone."""
    try:
        limit = _int(root / "memory" / rel / "memory.limit_in_bytes")
    except (OSError, ValueError):
        return None
    return None if limit >= _UNLIMITED else limit


def _inactive_file(stat: str) -> int:
    for line in stat.splitlines():
        if line.startswith("total_inactive_file "):
            return int(line.split()[1])
    return 0


def usage(rel: str, *, net_pid: int | None = None, root: Path = CGROUP_ROOT, proc: Path = PROC) -> Usage:
    """Usage of the group `rel` (e.g. `ocsn1234/<container id>`), children included (v1 counts them
    hierarchically). Raises OSError when the group is gone."""
    mem = root / "memory" / rel
    used = _int(mem / "memory.usage_in_bytes")
    limit = _int(mem / "memory.limit_in_bytes")
    rx, tx = net_bytes(net_pid, proc)
    rd, wr = blkio_bytes(rel, root)
    return Usage(
        cpu_seconds=_int(root / "cpuacct" / rel / "cpuacct.usage") / 1e9,
        memory_bytes=used,
        memory_working_set_bytes=max(0, used - _inactive_file(_read(mem / "memory.stat"))),
        memory_limit_bytes=None if limit >= _UNLIMITED else limit,
        net_rx_bytes=rx, net_tx_bytes=tx, blkio_read_bytes=rd, blkio_write_bytes=wr,
    )
