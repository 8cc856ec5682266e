"""What one data directory claims on this host, so that several control planes can share it.

A data dir's local nodes, registry and listeners use host-wide names and addresses: the nodes'
bridge and subnet, the node name prefix (netns, veths and cgroups are `<prefix>n…`/`<prefix>v…`),
the registry and its token realm on the bridge's gateway, and a block of loopback ports each for the
clusters' master_url endpoints and the router's frontends. Two data dirs with the same defaults
would fight over all of them, so each is *allocated* once per data dir and *recorded*:

* in the data dir, `host-claims.json` (what a restarted server reuses, what `opencs teardown` removes);
* in a host-wide index, `/var/lib/opencs/host-claims/<hash of the data dir>.json`
  (`OPENCS_HOST_CLAIMS_DIR`), which is how one data dir sees what the others hold.

Allocation (under a host-wide flock) takes the first slot `i` of the pool — subnet = the i-th /24 of
`10.213.0.0/16`, prefix `ocs` then `ocs1`, `ocs2`…, bridge `<prefix>0` — that no live claim of another
data dir overlaps and that the host does not already use (an interface of that name, an address or
route overlapping the subnet, netns/links/cgroups of the prefix), the first 100-port block of
17000-17999 (then 20000-23999) and of 18000-18999 (then 24000-27999) that is neither claimed nor
listened on, and a registry port (5000,
5002, …) that nothing listens on by wildcard. Slot 0 is exactly the old single-data-dir default, so
an existing data dir keeps its names. An explicit setting (flag, `OPENCS_LOCAL_SUBNET`, …) wins
over allocation and is not checked against the host, but overlapping another data dir's live claim is
a `ClaimConflict` at start-up.

A claim is *live* while its data dir still has a presence here: local nodes, its bridge, or a process
using it (a shared flock on `<data dir>/.in-use`, held by every server and worker). A claim with none
(its data dir deleted, or never used) is pruned, so killed test runs do not block anyone forever.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from opencs.providers import localnet as net

RECORD = "host-claims.json"
IN_USE = ".in-use"
INDEX_LOCK = Path("/run/lock/opencs-host-claims.lock")
PORT_BLOCK = 100


def index_dir() -> Path:
    return Path(os.environ.get("OPENCS_HOST_CLAIMS_DIR", "/var/lib/opencs/host-claims"))


class ClaimConflict(RuntimeError):
    """A setting overlaps what another data dir holds on this host (or nothing is left to allocate)."""


@dataclass(frozen=True)
class Pool:
    """Where automatic allocation picks from (OPENCS_LOCAL_POOL_PREFIX / OPENCS_LOCAL_POOL_SUBNET)."""

    prefix: str = field(default_factory=lambda: os.environ.get("OPENCS_LOCAL_POOL_PREFIX", "ocs"))
    subnets: str = field(default_factory=lambda: os.environ.get("OPENCS_LOCAL_POOL_SUBNET", "10.213.0.0/16"))
    # blocks of PORT_BLOCK ports: first the ranges of a single data dir before (17000-17999 and
    # 18000-18999), then 20000-23999 and 24000-27999 (below the kernel's ephemeral ports): 50 data dirs
    appapi_ranges: tuple[tuple[int, int], ...] = ((17000, 17999), (20000, 23999))
    routing_ranges: tuple[tuple[int, int], ...] = ((18000, 18999), (24000, 27999))
    registry_port: int = 5000

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,4}", self.prefix):
            raise ClaimConflict("pool prefix: 1-5 lowercase alphanumerics starting with a letter")
        if ipaddress.ip_network(self.subnets).prefixlen > 24:
            raise ClaimConflict(f"pool subnet {self.subnets}: at least a /24")

    def slot(self, i: int) -> tuple[str, str, str]:
        """(prefix, bridge, subnet) of slot i: digits after the base never match another slot's
        `<prefix>[nv]…` names, and slot 0 is the plain base (the old default: ocs, ocs0)."""
        prefix = self.prefix if i == 0 else f"{self.prefix}{i}"
        subnet = list(ipaddress.ip_network(self.subnets).subnets(new_prefix=24))[i]
        return prefix, f"{prefix}0", str(subnet)

    @staticmethod
    def blocks(ranges: tuple[tuple[int, int], ...]) -> list[int]:
        return [lo for a, b in ranges for lo in range(a, b + 1 - PORT_BLOCK + 1, PORT_BLOCK)]

    def slots(self) -> int:
        return int(min(2 ** (24 - ipaddress.ip_network(self.subnets).prefixlen), 1000))


@dataclass(frozen=True)
class HostClaims:
    """Everything host-wide one data dir holds (the record's content)."""

    data_dir: str
    bridge: str
    subnet: str
    prefix: str
    registry_port: int
    appapi_ports: tuple[int, int]
    routing_ports: tuple[int, int]
    explicit: tuple[str, ...] = ()  # fields given by settings rather than allocated

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    def describe(self) -> dict[str, Any]:
        """The record, with what follows from it spelled out (for people and `opencs teardown`)."""
        return {**asdict(self), "registry": f"{self.gateway}:{self.registry_port}",
                "registry_realm": f"{self.gateway}:{self.registry_port + 1}",
                "node_names": f"{self.prefix}n* (netns, cgroups), {self.prefix}v* (veths)",
                "iptables": f"FORWARD -i {self.bridge} -o {self.bridge} -j ACCEPT",
                "socket_dir": str(net.socket_dir(Path(self.data_dir) / "nodes"))}

    def conflicts(self, other: HostClaims) -> list[str]:
        return network_conflicts((self.prefix, self.bridge, self.subnet), other) + port_overlaps(
            self.port_ranges(), other.port_ranges())

    def port_ranges(self) -> dict[str, tuple[int, int]]:
        return {"appapi ports": self.appapi_ports, "routing ports": self.routing_ports}


def network_conflicts(mine: tuple[str, str, str], other: HostClaims) -> list[str]:
    """What of (prefix, bridge, subnet) another claim holds too."""
    prefix, bridge, subnet = mine
    out = []
    if bridge == other.bridge:
        out.append(f"bridge {bridge}")
    if ipaddress.ip_network(subnet).overlaps(ipaddress.ip_network(other.subnet)):
        out.append(f"subnet {subnet} overlaps {other.subnet}")
    if _prefixes_clash(prefix, other.prefix):
        out.append(f"node name prefix {prefix} (theirs {other.prefix})")
    return out


def port_overlaps(mine: dict[str, tuple[int, int]], theirs: dict[str, tuple[int, int]]) -> list[str]:
    return [f"{what} {lo}-{hi} overlap their {other} {olo}-{ohi}"
            for what, (lo, hi) in mine.items() for other, (olo, ohi) in theirs.items() if lo <= ohi and olo <= hi]


def _prefixes_clash(a: str, b: str) -> bool:
    """Names `<p>n<tag>`/`<p>v<tag>` of one prefix could be the other's (ocs vs ocsn: ocsnn… is both)."""
    short, long_ = sorted((a, b), key=len)
    return long_ == short or (long_.startswith(short) and long_[len(short)] in "nv")


# ---------------------------------------------------------------- the host as it is


@dataclass
class HostView:
    """What this host already uses (read once per allocation)."""

    links: set[str]
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]  # addresses' networks, routes (not default)
    listening: set[tuple[str, int]]  # (address, port) of listening TCP sockets
    prefix_in_use: Callable[[str, str], bool]

    @classmethod
    def read(cls) -> HostView:
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for dev in json.loads(net.run("ip", "-j", "-4", "addr").stdout or "[]"):
            for a in dev.get("addr_info", []):
                nets.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
        for r in json.loads(net.run("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]"):
            dst = r.get("dst", "default")
            if dst != "default" and r.get("type", "unicast") == "unicast":
                nets.append(ipaddress.ip_network(dst, strict=False))
        links = set(os.listdir("/sys/class/net"))
        names = links | set(os.listdir(net.NETNS_DIR) if net.NETNS_DIR.is_dir() else ())
        for h in net.hierarchies():  # a node's cgroup is /<prefix>n<tag> in every hierarchy
            with contextlib.suppress(OSError):
                names |= {e.name for e in os.scandir(h) if e.is_dir()}
        return cls(links, nets, listening_sockets(),
                   lambda prefix, bridge: any(net.node_name_re(prefix).match(n) for n in names))

    def port_listened(self, port: int, address: str | None = None) -> bool:
        wild = ("0.0.0.0", "::")
        return any(p == port and (address is None or a in wild or a == address) for a, p in self.listening)


def listening_sockets() -> set[tuple[str, int]]:
    """Listening TCP sockets of this network namespace (`ss`: netlink with a state filter, where
    /proc/net/tcp would list every TIME_WAIT socket of a busy host too)."""
    out: set[tuple[str, int]] = set()
    for line in net.run("ss", "-Hltn", check=False).stdout.splitlines():
        cols = line.split()
        if len(cols) >= 4:
            addr, _, port = cols[3].rpartition(":")
            addr = addr.strip("[]").split("%", 1)[0]  # [::]:80, 127.0.0.1%lo:53
            if port.isdigit():
                out.add(("0.0.0.0" if addr == "*" else addr.removeprefix("::ffff:"), int(port)))
    return out


# ---------------------------------------------------------------- the index


def _index_path(data_dir: Path) -> Path:
    return index_dir() / (hashlib.sha256(str(data_dir).encode()).hexdigest()[:16] + ".json")


def _load(path: Path) -> HostClaims | None:
    try:
        raw = json.loads(path.read_text())
        raw["appapi_ports"], raw["routing_ports"] = tuple(raw["appapi_ports"]), tuple(raw["routing_ports"])
        raw["explicit"] = tuple(raw.get("explicit", ()))
        return HostClaims(**{k: raw[k] for k in HostClaims.__dataclass_fields__ if k in raw})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(path: Path, claims: HostClaims) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(claims.describe(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def recorded(data_dir: Path) -> HostClaims | None:
    """The data dir's own record (None: never allocated, or released by teardown)."""
    return _load(Path(data_dir).resolve() / RECORD)


def in_use(data_dir: Path) -> bool:
    """Whether a server or worker holds the data dir (its shared flock on .in-use)."""
    path = Path(data_dir) / IN_USE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _has_nodes(data_dir: Path) -> bool:
    nodes = Path(data_dir) / "nodes"
    return nodes.is_dir() and any((p / "state.json").exists() for p in nodes.glob("i-*"))


def present(claims: HostClaims, *, users: bool = True) -> bool:
    """Whether the claim's data dir still has anything here that the claim protects (`users`:
    a process holding it counts; not for our own, which the claiming process holds already)."""
    d = Path(claims.data_dir)
    return _has_nodes(d) or net.link_exists(claims.bridge) or (users and in_use(d))


def legacy(data_dir: Path, want: Wanted) -> HostClaims:
    """What a data dir used before claims were recorded: the settings' values, else the single
    defaults of then (ocs0, 10.213.0.0/24, ocs, :5000, all of 17000-17999 and 18000-18999)."""
    return HostClaims(str(data_dir), want.bridge or "ocs0", want.subnet or "10.213.0.0/24", want.prefix or "ocs",
                      want.registry_port or 5000, want.appapi_ports or (17000, 17999),
                      want.routing_ports or (18000, 18999), want.given())


def live_claims(exclude: Path | None = None) -> list[HostClaims]:
    """Other data dirs' live claims; stale index entries are removed. Caller holds INDEX_LOCK."""
    out = []
    d = index_dir()
    for path in sorted(d.glob("*.json")) if d.is_dir() else []:
        c = _load(path)
        if c is None or (exclude is not None and Path(c.data_dir) == exclude):
            continue
        own = recorded(Path(c.data_dir))
        if own == c and present(c):
            out.append(c)
        else:  # its data dir is gone, was torn down or reallocated, or holds nothing here any more
            path.unlink(missing_ok=True)
    return out


@contextlib.contextmanager
def _index_locked() -> Iterator[None]:
    with net.file_lock(INDEX_LOCK):
        yield


# ---------------------------------------------------------------- allocation


@dataclass(frozen=True)
class Wanted:
    """What the settings say; None = allocate."""

    bridge: str | None = None
    subnet: str | None = None
    prefix: str | None = None
    registry_port: int | None = None
    appapi_ports: tuple[int, int] | None = None
    routing_ports: tuple[int, int] | None = None

    def given(self) -> tuple[str, ...]:
        return tuple(k for k, v in asdict(self).items() if v is not None)


def _slot_free(host: HostView, others: list[HostClaims], want: Wanted, cand: tuple[str, str, str]) -> bool:
    """Whether the allocated parts of (prefix, bridge, subnet) are free; given ones are not judged
    here (a given value that collides is reported by _check, naming the other data dir)."""
    prefix, bridge, subnet = cand
    sn = ipaddress.ip_network(subnet)
    if want.bridge is None and (bridge in host.links or any(o.bridge == bridge for o in others)):
        return False
    if want.subnet is None and any(sn.overlaps(n) for n in
                                   [*host.networks, *(ipaddress.ip_network(o.subnet) for o in others)]):
        return False
    return want.prefix is not None or not (any(_prefixes_clash(prefix, o.prefix) for o in others)
                                           or host.prefix_in_use(prefix, bridge))


def _ports_free(host: HostView, taken: list[dict[str, tuple[int, int]]], lo: int, hi: int) -> bool:
    return not any(port_overlaps({"ports": (lo, hi)}, t) for t in taken) and not any(
        lo <= port <= hi for _a, port in host.listening)


def allocate(data_dir: Path, want: Wanted, others: list[HostClaims], host: HostView, pool: Pool) -> HostClaims:
    """A claim for `data_dir`: the wanted values, the rest from the pool (first fit)."""
    bridge, subnet, prefix = want.bridge, want.subnet, want.prefix
    if None in (bridge, subnet, prefix):
        for i in range(pool.slots()):
            p, b, s = pool.slot(i)
            cand = (prefix or p, bridge or b, subnet or s)
            if _slot_free(host, others, want, cand):
                prefix, bridge, subnet = cand
                break
        else:
            raise ClaimConflict(f"no free node network left in {pool.subnets} (prefix {pool.prefix}): "
                                "set OPENCS_LOCAL_SUBNET/OPENCS_LOCAL_BRIDGE/OPENCS_LOCAL_PREFIX")
    assert bridge is not None and subnet is not None and prefix is not None
    ranges: dict[str, tuple[int, int]] = {}
    for what, pooled, given in (("appapi", pool.appapi_ranges, want.appapi_ports),
                                ("routing", pool.routing_ranges, want.routing_ports)):
        if given is not None:
            ranges[what] = given
            continue
        for lo in pool.blocks(pooled):
            taken = [*(o.port_ranges() for o in others), ranges]  # the appapi block picked a moment ago too
            if _ports_free(host, taken, lo, lo + PORT_BLOCK - 1):
                ranges[what] = (lo, lo + PORT_BLOCK - 1)
                break
        else:
            raise ClaimConflict(f"no free block of {PORT_BLOCK} {what} ports left in {pooled}")
    reg = want.registry_port
    if reg is None:
        gw = str(next(ipaddress.ip_network(subnet).hosts()))
        reg = next((p for p in range(pool.registry_port, pool.registry_port + 200, 2)
                    if not host.port_listened(p, gw) and not host.port_listened(p + 1, gw)), pool.registry_port)
    return HostClaims(str(data_dir), bridge, subnet, prefix, reg, ranges["appapi"], ranges["routing"], want.given())


def _check(claims: HostClaims, others: list[HostClaims]) -> None:
    for o in others:
        if found := claims.conflicts(o):
            raise ClaimConflict(
                f"data dir {claims.data_dir} collides with data dir {o.data_dir} on this host: "
                f"{'; '.join(found)}. Choose other settings, or remove the other one's nodes and "
                f"listeners with `opencs teardown --data-dir {o.data_dir}`")


def claim(data_dir: Path, want: Wanted, pool: Pool | None = None,
          host: Callable[[], HostView] = HostView.read) -> HostClaims:
    """The data dir's claims: its record when it has one (explicit settings replacing recorded
    values), else a new allocation; checked against every other live claim, then recorded. The
    caller holds a DataDirUse of the data dir already, so that the claim is live the moment it is
    recorded (two servers starting at once must not both find the other's claim unused)."""
    data_dir = Path(data_dir).resolve()
    with _index_locked():
        others = live_claims(exclude=data_dir)
        mine = recorded(data_dir)
        if mine is not None:
            mine = replace(mine, **{k: v for k, v in asdict(want).items() if v is not None}, explicit=want.given())
            if any(mine.conflicts(o) for o in others) and not present(mine, users=False):
                mine = None  # nothing of ours is here any more: allocate afresh rather than fail
        if mine is None and _has_nodes(data_dir):
            mine = legacy(data_dir, want)  # nodes from before records: their names are in their state files
        if mine is None:
            mine = allocate(data_dir, want, others, host(), pool or Pool())
        _check(mine, others)
        _write(data_dir / RECORD, mine)
        _write(_index_path(data_dir), mine)
        return mine


def release(data_dir: Path) -> HostClaims | None:
    """Forget the data dir's claims (after `opencs teardown` removed what they named)."""
    data_dir = Path(data_dir).resolve()
    with _index_locked():
        mine = recorded(data_dir)
        _index_path(data_dir).unlink(missing_ok=True)
        (data_dir / RECORD).unlink(missing_ok=True)
        return mine


def held_by_others(data_dir: Path, bridge: str) -> bool:
    """Whether another data dir's live claim names this bridge (teardown of an unrecorded dir)."""
    with _index_locked():
        return any(o.bridge == bridge for o in live_claims(exclude=Path(data_dir).resolve()))


class DataDirUse:
    """A shared flock on `<data dir>/.in-use` for the life of a process using the data dir: what
    keeps its claims live and what `opencs teardown` waits on. `last()` tells whether this process
    is the only user left (so that it stops the registry when it stops)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / IN_USE
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> bool:
        """Drop the lock; True if no other process holds the data dir."""
        if self._fd is None:
            return False
        os.close(self._fd)
        self._fd = None
        return not in_use(self.path.parent)


def unrecorded(data_dir: Path, want: Wanted, pool: Pool | None = None) -> HostClaims:
    """The claims of a process that cannot record any (not root: no local nodes either): the
    wanted values, else the pool's first slot and blocks, unchecked."""
    pool = pool or Pool()
    prefix, bridge, subnet = pool.slot(0)
    block = PORT_BLOCK - 1
    return HostClaims(str(data_dir), want.bridge or bridge, want.subnet or subnet, want.prefix or prefix,
                      want.registry_port or pool.registry_port,
                      want.appapi_ports or (pool.appapi_ranges[0][0], pool.appapi_ranges[0][0] + block),
                      want.routing_ports or (pool.routing_ranges[0][0], pool.routing_ranges[0][0] + block),
                      want.given())
