"""Operations on the containers and volumes of one node, through that node's own engine."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

from docker.errors import APIError, DockerException, NotFound

from opencs.compose.normalize import NAMESPACE_LABEL
from opencs.engines.apps import AppEngineError
from opencs.engines.swarm import client
from opencs.engines.swarm.observe import NodeInfo, _parallel
from opencs.engines.swarm.stack import StackError, _explain

log = logging.getLogger("opencs.stack")


def kernel_has_filesystem(fstype: str) -> bool | None:
    """Is ``fstype`` (nfs, fuse, …) in this kernel's /proc/filesystems? None if unknowable."""
    try:
        text = Path("/proc/filesystems").read_text()
    except OSError:
        return None
    names = {line.split()[-1] for line in text.splitlines() if line.strip()}
    return fstype in names


# ---------------------------------------------------------------- container operations on their nodes


def signal_containers(targets: list[tuple[NodeInfo, str]], signal: str) -> list[str]:
    """Send ``signal`` to each (node, container id) through that node's own engine. Returns errors."""

    def one(item: tuple[NodeInfo, str]) -> str:
        node, cid = item
        try:
            with closing(client(node.docker_host, timeout=10)) as c:
                c.api.kill(cid, signal=signal)
            return ""
        except NotFound:
            return ""  # gone meanwhile
        except APIError as e:
            if e.status_code == 409:  # not running
                return ""
            return f"{node.ip} {cid[:12]}: {_explain(e)}"
        except (DockerException, OSError) as e:
            return f"{node.ip} {cid[:12]}: {e}"

    return [e for e in _parallel(one, targets) if e]


def container_logs(node: NodeInfo, cid: str, tail: int) -> str:
    """The last lines of a container's output, from its own node's engine."""
    try:
        with closing(client(node.docker_host, timeout=15)) as c:
            raw = c.api.logs(cid, stdout=True, stderr=True, timestamps=True, tail=tail)
    except NotFound:
        raise AppEngineError(f"container {cid[:12]} is gone", "ContainerNotFound") from None
    except (DockerException, OSError) as e:
        raise AppEngineError(f"{node.ip} {cid[:12]}: {e}", "EngineUnreachable") from None
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def stop_containers(targets: list[tuple[NodeInfo, str]], timeout: int) -> list[str]:
    def one(item: tuple[NodeInfo, str]) -> str:
        node, cid = item
        try:
            with closing(client(node.docker_host, timeout=timeout + 30)) as c:
                c.api.stop(cid, timeout=timeout)
            return ""
        except NotFound:
            return ""
        except (DockerException, OSError) as e:
            return f"{node.ip} {cid[:12]}: {e}"

    return [e for e in _parallel(one, targets) if e]


# ---------------------------------------------------------------- volumes on nodes


def remove_project_volumes(nodes: list[NodeInfo], project: str, timeout: float = 30.0) -> list[str]:
    """Remove the stack's volumes on every node; returns what could not be removed."""

    def one(n: NodeInfo) -> list[str]:
        errs: list[str] = []
        end = time.time() + timeout
        try:
            with closing(client(n.docker_host, timeout=20)) as c:
                vols = c.api.volumes(filters={"label": f"{NAMESPACE_LABEL}={project}"}).get("Volumes") or []
                for v in vols:
                    while True:
                        try:
                            c.api.remove_volume(v["Name"])
                            break
                        except NotFound:
                            break
                        except APIError as e:
                            if e.status_code == 409 and time.time() < end:
                                time.sleep(0.5)  # a container is still being removed
                                continue
                            errs.append(f"{n.ip} {v['Name']}: {_explain(e)}")
                            break
        except (DockerException, OSError) as e:
            errs.append(f"{n.ip}: {e}")
        return errs

    return [e for errs in _parallel(one, nodes) for e in errs]


def volume_summaries(docker_host: str) -> tuple[str, list[dict[str, Any]], dict[str, list[dict[str, str]]]]:
    """(engine hostname, volumes, volume name → containers using it) of one node."""
    with closing(client(docker_host, timeout=10)) as c:
        hostname = c.api.info().get("Name", "")
        vols = c.api.volumes().get("Volumes") or []
        refs: dict[str, list[dict[str, str]]] = {}
        for ct in c.api.containers(all=True):
            for m in ct.get("Mounts") or []:
                if m.get("Type") == "volume" and m.get("Name"):
                    refs.setdefault(m["Name"], []).append(
                        {"Name": (ct.get("Names") or [""])[0].lstrip("/"), "ID": ct["Id"]})
        return hostname, vols, refs


def create_volume(docker_host: str, name: str, driver: str, options: dict[str, str],
                  labels: dict[str, str]) -> dict[str, Any]:
    with closing(client(docker_host, timeout=30)) as c:
        return dict(c.api.create_volume(name, driver=driver, driver_opts=options or None, labels=labels))


def remove_volume(docker_host: str, name: str) -> None:
    with closing(client(docker_host, timeout=30)) as c, suppress(NotFound):
        c.api.remove_volume(name)


def probe_mount(docker_host: str, volume: str, image: str = "busybox", timeout: float = 60.0) -> None:
    """Mount ``volume`` in a throw-away container on that node; raises StackError with the engine's
    own mount error. The probe container is always removed."""
    with closing(client(docker_host, timeout=int(timeout))) as c:
        cid = None
        try:
            try:
                c.api.inspect_image(image)
            except NotFound:
                c.api.pull(image, tag=None if ":" in image or "@" in image else "latest")
            host_config = c.api.create_host_config(binds={volume: {"bind": "/mnt/probe", "mode": "rw"}},
                                                   network_mode="none")
            cid = c.api.create_container(image, ["true"], host_config=host_config,
                                         labels={"opencs.probe": "volume"})["Id"]
            c.api.start(cid)
            c.api.wait(cid, timeout=timeout)
        except APIError as e:
            raise StackError(_explain(e), "VolumeMountFailed") from None
        except (DockerException, OSError) as e:
            raise StackError(f"mount probe failed: {e}", "VolumeMountFailed") from None
        finally:
            if cid:
                try:
                    c.api.remove_container(cid, force=True)
                except (DockerException, OSError):
                    log.warning("could not remove probe container %s on %s", cid, docker_host)


class NodeLogStream:
    """One container's log stream from its node's engine (timestamps on: they order the merge).
    close() shuts the engine connection, which ends a follow that is waiting for output."""

    def __init__(self, node: NodeInfo, cid: str, follow: bool, tail: int | None, since: float | None) -> None:
        self._client = client(node.docker_host, timeout=24 * 3600 if follow else 30)
        self._label = f"{node.ip} {cid[:12]}"
        try:
            self._chunks = self._client.api.logs(cid, stdout=True, stderr=True, stream=True, follow=follow,
                                                 timestamps=True, tail="all" if tail is None else tail,
                                                 since=since)
        except NotFound:
            self.close()
            raise AppEngineError(f"container {cid[:12]} is gone", "ContainerNotFound") from None
        except (DockerException, OSError) as e:
            self.close()
            raise AppEngineError(f"{self._label}: {e}", "EngineUnreachable") from None

    def __iter__(self) -> Iterator[bytes]:
        buf = b""
        try:
            for chunk in self._chunks:
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    yield line + b"\n"
        except (DockerException, OSError, ValueError):
            pass  # closed under us, or the engine went away: the stream ends
        finally:
            self.close()
        if buf:
            yield buf + b"\n"

    def close(self) -> None:
        with suppress(Exception):
            self._client.close()
