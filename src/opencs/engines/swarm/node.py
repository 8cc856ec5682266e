"""The node runtime of Swarm clusters: a Docker engine on each machine (moved out of the local
provider, which now only makes machines). The provider runs the BootPlan inside the machine at
every boot; the plan's first process becomes dockerd."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound

from opencs.machine import BootPlan, MachineInfo, RuntimeSettings

log = logging.getLogger(__name__)

TLS_PORT = 2376
API_VERSION = "1.41"
# containers a cluster made on a host: swarm tasks, and anything opencs labels with its ids
_CLUSTER_LABELS = ("com.docker.swarm.service.id", "opencs.cluster", "opencs.instance")


def ping_unix(sock_path: str, timeout: float = 1.0) -> bool:
    """GET /_ping over the engine's unix socket (no client library: this runs in tight loops)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(sock_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            buf = b""
            while chunk := s.recv(4096):
                buf += chunk
    except OSError:
        return False
    return buf.startswith(b"HTTP/1.") and b" 200 " in buf.split(b"\r\n", 1)[0] and buf.endswith(b"OK")


class DockerEngine:
    """dockerd per machine: own data-root (the "system disk"), own /etc/docker (engine key, so
    a distinct engine ID per node), private exec-root and containerd state, its containers in the
    machine's cgroup, the API on the machine's unix socket and, with TLS, on tcp://IP:2376."""

    name = "docker"
    state_dirs = ("data", "etc-docker")
    log_name = "dockerd.log"
    required_binaries = ("dockerd", "containerd")

    def __init__(self, storage_driver: str = "overlay2", prefer_offline_images: bool = False) -> None:
        self.storage_driver = storage_driver
        self.prefer_offline_images = prefer_offline_images

    def tls_port(self, settings: RuntimeSettings) -> int | None:
        return TLS_PORT if settings.tls_files else None

    def daemon_json(self, settings: RuntimeSettings) -> dict[str, Any]:
        cfg: dict[str, Any] = {}
        if settings.labels:
            cfg["labels"] = [f"{k}={v}" for k, v in sorted(settings.labels.items())]
        if settings.registry_mirror:
            cfg["registry-mirrors"] = [settings.registry_mirror]
        if settings.insecure_registries:
            cfg["insecure-registries"] = list(settings.insecure_registries)
        return cfg

    def dockerd_args(self, m: MachineInfo, settings: RuntimeSettings) -> list[str]:
        args = [
            "--data-root", str(m.dir / "data"),
            "--exec-root", "/run/docker",
            "--pidfile", "/run/docker/dockerd.pid",  # private tmpfs: never a stale pidfile after a crash
            "-H", f"unix://{m.api_socket}",
            "--config-file", str(m.dir / "daemon.json"),
            "--storage-driver", self.storage_driver,
            "--cgroup-parent", f"/{m.cgroup}",
        ]  # fmt: skip
        if tls := settings.tls_files:
            args += [
                "-H", f"tcp://{m.ip}:{TLS_PORT}", "--tlsverify",
                "--tlscacert", tls["ca"], "--tlscert", tls["cert"], "--tlskey", tls["key"],
            ]  # fmt: skip
        return args

    def boot_plan(self, machine: MachineInfo, settings: RuntimeSettings) -> BootPlan:
        env = {"DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"} if self.prefer_offline_images else {}
        return BootPlan(
            argv=["dockerd", *self.dockerd_args(machine, settings)],
            env=env,
            # private exec-root and shim-socket dir: nodes must not see each other's runtime state
            tmpfs=["/run/docker", "/run/containerd"],
            binds={"/etc/docker": "etc-docker"},  # own engine key (distinct engine ID per node), certs.d
            files={"daemon.json": json.dumps(self.daemon_json(settings), indent=2)},
            log_name=self.log_name,
        )

    def answers(self, api_socket: Path, timeout: float = 1.0) -> bool:
        return ping_unix(str(api_socket), timeout)

    def release_host(self, endpoint: str, remove_cluster_work: bool, timeout: float = 60.0) -> None:
        """`docker swarm leave --force` and, if asked, remove the containers the cluster made."""
        c = docker.DockerClient(base_url=endpoint, version=API_VERSION, timeout=int(timeout))
        c.api.trust_env = False
        with contextlib.closing(c):
            if (c.info().get("Swarm") or {}).get("LocalNodeState", "inactive") != "inactive":
                c.api.leave_swarm(force=True)
            if not remove_cluster_work:
                return
            for label in _CLUSTER_LABELS:
                for ct in c.containers.list(all=True, filters={"label": label}):
                    try:
                        ct.remove(force=True, v=True)
                    except NotFound:
                        pass  # swarm removed its task meanwhile
                    except APIError as e:
                        if e.status_code != 409:  # 409: swarm is removing it right now
                            raise
