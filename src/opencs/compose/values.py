"""Parsers for Compose value syntaxes: ports, volumes, durations, byte sizes, CPUs.

Each raises ValueError with a message meant for the user; the schema's format checkers and the
normalizer share them, so a value that validates always normalizes.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

# ---------------------------------------------------------------- ports


@dataclass(frozen=True)
class PortSpec:
    target: int
    published: int | None
    protocol: str = "tcp"
    mode: str | None = None  # None = the platform default (ingress, or host without IPVS)
    host_ip: str = ""


_PORT_RE = re.compile(
    r"^(?:(?:(?P<ip>\[[0-9a-fA-F:]+\]|[0-9.]+):)?(?P<pub>\d+(?:-\d+)?)?:)?(?P<tgt>\d+(?:-\d+)?)(?:/(?P<proto>[a-z]+))?$"
)


def _port(n: str | int, what: str) -> int:
    v = int(n)
    if not 1 <= v <= 65535:
        raise ValueError(f"{what} port {v} is out of range 1-65535")
    return v


def _range(s: str, what: str) -> list[int]:
    if "-" in s:
        a, b = s.split("-", 1)
        lo, hi = _port(a, what), _port(b, what)
        if hi < lo:
            raise ValueError(f"{what} port range {s} is reversed")
        return list(range(lo, hi + 1))
    return [_port(s, what)]


def parse_port(value: Any) -> list[PortSpec]:
    """'8080', '80:8080', '127.0.0.1:80:8080/udp', '8000-8001:9000-9001', 8080 or a long-form dict."""
    if isinstance(value, dict):
        pub = value.get("published")
        return [PortSpec(
            target=_port(value["target"], "container"),
            published=_port(pub, "published") if pub not in (None, "") else None,
            protocol=value.get("protocol", "tcp"),
            mode=value.get("mode"),
            host_ip=value.get("host_ip", "") or "",
        )]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"invalid port {value!r}")
    s = str(value).strip()
    m = _PORT_RE.match(s)
    if not m:
        raise ValueError(
            f"invalid port {s!r}: use CONTAINER, HOST:CONTAINER or IP:HOST:CONTAINER, optionally with /tcp or /udp"
        )
    proto = m.group("proto") or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"invalid protocol {proto!r} in port {s!r}")
    targets = _range(m.group("tgt"), "container")
    pubs = _range(m.group("pub"), "published") if m.group("pub") else []
    if pubs and len(pubs) != len(targets):
        if len(targets) == 1:
            # "8000-8010:80": any one free port of the range; a swarm cannot do that
            raise ValueError(f"port {s!r}: a published range needs a container range of the same size")
        raise ValueError(f"port {s!r}: published and container ranges differ in size")
    ip = (m.group("ip") or "").strip("[]")
    return [PortSpec(target=t, published=pubs[i] if pubs else None, protocol=proto, host_ip=ip)
            for i, t in enumerate(targets)]


# ---------------------------------------------------------------- volumes


@dataclass(frozen=True)
class VolumeSpec:
    type: str  # volume | bind | tmpfs
    source: str  # "" for an anonymous volume
    target: str
    read_only: bool = False
    nocopy: bool = False
    propagation: str = ""
    tmpfs_size: int | None = None


_NAMED = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_VOL_MODES = {"ro", "rw", "z", "Z", "nocopy", "shared", "rshared", "slave", "rslave", "private", "rprivate",
              "consistent", "cached", "delegated"}


def parse_volume(value: Any) -> VolumeSpec:
    if isinstance(value, dict):
        t = value["type"]
        return VolumeSpec(
            type=t,
            source=value.get("source", "") or "",
            target=value["target"],
            read_only=bool(value.get("read_only", False)),
            nocopy=bool((value.get("volume") or {}).get("nocopy", False)),
            propagation=(value.get("bind") or {}).get("propagation", "") or "",
            tmpfs_size=parse_bytes((value.get("tmpfs") or {})["size"]) if (value.get("tmpfs") or {}).get("size")
            is not None else None,
        )
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"invalid volume {value!r}")
    parts = value.split(":")
    if len(parts) == 1:
        src, tgt, mode = "", parts[0], ""
    elif len(parts) == 2:
        if parts[1] and (parts[1] in _VOL_MODES or "," in parts[1]) and not parts[1].startswith("/"):
            raise ValueError(f"invalid volume {value!r}: missing the container path")
        src, tgt, mode = parts[0], parts[1], ""
    elif len(parts) == 3:
        src, tgt, mode = parts
    else:
        raise ValueError(f"invalid volume {value!r}: use [SOURCE:]TARGET[:MODE]")
    if not tgt.startswith("/"):
        raise ValueError(f"invalid volume {value!r}: the container path {tgt!r} must be absolute")
    modes = [m for m in mode.split(",") if m]
    bad = [m for m in modes if m not in _VOL_MODES]
    if bad:
        raise ValueError(f"invalid volume {value!r}: unknown mode {bad[0]!r}")
    if not src:
        kind = "volume"
    elif src.startswith(("/", ".", "~")):
        kind = "bind"
        if not src.startswith("/"):
            raise ValueError(f"invalid volume {value!r}: a host path must be absolute on a cluster "
                             "(there is no project directory on the nodes)")
    elif _NAMED.match(src):
        kind = "volume"
    else:
        raise ValueError(f"invalid volume {value!r}: {src!r} is neither a volume name nor an absolute path")
    prop = next((m for m in modes if m.endswith(("shared", "slave", "private"))), "")
    return VolumeSpec(type=kind, source=src, target=tgt, read_only="ro" in modes, nocopy="nocopy" in modes,
                      propagation=prop)


# ---------------------------------------------------------------- durations, sizes, cpus

_DUR_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DUR_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_duration(value: Any) -> int:
    """Go duration ('1m30s', '500ms', '10s') or a number of seconds → nanoseconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: negative")
        return int(value * 10**9)
    s = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return int(float(s) * 10**9)
    pos, total = 0, 0.0
    for m in _DUR_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DUR_NS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"invalid duration {value!r}: use e.g. 10s, 1m30s, 500ms")
    return int(total)


_BYTES_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.I)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_bytes(value: Any) -> int:
    """'512m', '1g', '100k', 1048576 → bytes (binary units, like docker)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value!r}: negative")
        return value
    m = _BYTES_RE.match(str(value).strip())
    if not m:
        raise ValueError(f"invalid size {value!r}: use e.g. 512m, 1g, 100k or a number of bytes")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_cpus(value: Any) -> int:
    """'0.5', 1.5 → NanoCPUs."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"invalid cpus {value!r}: use a number such as 0.5") from None
    if isinstance(value, bool) or v <= 0:
        raise ValueError(f"invalid cpus {value!r}: must be a positive number")
    return int(v * 10**9)


def as_command(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as e:
            raise ValueError(f"cannot split command {value!r}: {e}") from None
    return [str(x) for x in value]


def as_list_of_kv(value: Any, sep: str = "=") -> list[str]:
    """environment / labels / sysctls in list or dict form → ['K=V', …] (dict None values → 'K')."""
    from opencs.compose.load import env_value

    if value is None:
        return []
    if isinstance(value, dict):
        return [k if v is None else f"{k}{sep}{env_value(v)}" for k, v in value.items()]
    return [str(x) for x in value]


def as_dict(value: Any, sep: str = "=") -> dict[str, str]:
    """list ['a=b', 'c'] or dict → {a: b, c: ''}."""
    from opencs.compose.load import env_value

    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): env_value(v) for k, v in value.items()}
    out: dict[str, str] = {}
    for item in value:
        k, _, v = str(item).partition(sep)
        out[k] = v
    return out


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(x) for x in value]
