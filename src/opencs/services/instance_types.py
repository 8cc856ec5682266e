"""ECS instance types → the resource limits a local node gets (its cgroup).

Known types from the spec's examples are listed; any other well-formed type is read as
``ecs.<family>.<size>``: the size gives vCPUs, the family letter the GiB of memory per vCPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class Resources:
    cpus: float
    memory_bytes: int


KNOWN = {
    "ecs.n1.tiny": Resources(1, 1 * GIB),
    "ecs.n1.small": Resources(1, 2 * GIB),
    "ecs.n1.medium": Resources(2, 4 * GIB),
    "ecs.n1.large": Resources(4, 8 * GIB),
    "ecs.m2.medium": Resources(4, 32 * GIB),
    "ecs.s3.large": Resources(4, 8 * GIB),
    "ecs.sn1.medium": Resources(2, 4 * GIB),
    "ecs.sn2.3xlarge": Resources(12, 48 * GIB),
    "ecs.hfc5.xlarge": Resources(4, 8 * GIB),
    "ecs.c5.xlarge": Resources(4, 8 * GIB),
}
_SIZES = {"tiny": 1, "micro": 1, "small": 1, "medium": 2, "large": 2, "xlarge": 4}
_MEM_PER_CPU = {"c": 2, "g": 4, "r": 8, "n": 2, "s": 2, "m": 8, "h": 2, "t": 1, "e": 2}
_RE = re.compile(r"^ecs\.([a-z][a-z0-9-]*)\.(tiny|micro|small|medium|large|xlarge|(\d{1,2})xlarge)$")


def resources_for(instance_type: str) -> Resources:
    """Raise ValueError with a readable reason for a malformed type."""
    if instance_type in KNOWN:
        return KNOWN[instance_type]
    m = _RE.match(instance_type)
    if not m:
        raise ValueError(f"{instance_type!r} is not an instance type like 'ecs.n1.small' or 'ecs.c5.2xlarge'")
    cpus = int(m.group(3)) * 4 if m.group(3) else _SIZES[m.group(2)]
    per = _MEM_PER_CPU.get(m.group(1)[0], 2)
    return Resources(float(cpus), cpus * per * GIB)
