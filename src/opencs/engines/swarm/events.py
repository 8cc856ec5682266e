"""Container deaths of a Swarm node from the engine's event API (`docker events --since --until`,
filtered to die and oom): one bounded call per node and pass, no stream held open."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from typing import Any

from docker.errors import DockerException

from opencs.compose.normalize import NAMESPACE_LABEL
from opencs.engines.apps import EngineUnreachable
from opencs.engines.container_events import ContainerDeath
from opencs.engines.swarm import client
from opencs.engines.swarm.usage import SERVICE_NAME_LABEL
from opencs.engines.usage import NodeRef


class SwarmDeathReader:
    def deaths(self, node: NodeRef, since: float, until: float) -> list[ContainerDeath]:
        try:
            with closing(client(node.endpoint, timeout=10)) as c:
                raw = list(c.api.events(since=f"{since:.6f}", until=f"{until:.6f}", decode=True,
                                        filters={"type": "container", "event": ["die", "oom"]}))
                oom = {e.get("id") for e in raw if e.get("Action") == "oom"}
                # the oom event is not always sent (cgroup v1 notifications): the container's state says
                oom |= {e.get("id") for e in raw if e.get("Action") == "die" and e.get("id") not in oom
                        and (e.get("Actor") or {}).get("Attributes", {}).get("exitCode") == "137"
                        and _oom_killed(c, str(e.get("id")))}
        except (DockerException, OSError) as e:
            raise EngineUnreachable(str(e)) from None
        return [_death(e, e.get("id") in oom) for e in raw if e.get("Action") == "die"]

    def retain(self, nodes: Sequence[NodeRef]) -> None:
        """Nothing is kept between passes: one client per call."""


def _oom_killed(c: Any, cid: str) -> bool:
    try:
        return bool(c.api.inspect_container(cid)["State"].get("OOMKilled"))
    except DockerException:
        return False  # removed already


def _death(e: dict[str, Any], oom: bool) -> ContainerDeath:
    attrs: dict[str, str] = (e.get("Actor") or {}).get("Attributes") or {}
    try:
        code = int(attrs.get("exitCode", "-1"))
    except ValueError:
        code = -1
    at = e.get("timeNano", 0) / 1e9 or float(e.get("time", 0))
    return ContainerDeath(at, attrs.get("name", str(e.get("id", ""))[:12]), attrs.get(NAMESPACE_LABEL, ""),
                          attrs.get(SERVICE_NAME_LABEL, ""), code, oom)
