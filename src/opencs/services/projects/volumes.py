"""Cluster data volumes of the Application API (spec §10.24–10.28), Docker-compatible shapes.

A cluster volume exists on every node with the same name and driver options, so a container finds
it wherever the swarm places it (and services referencing it carry the same driver config, so a
node that joins later creates it on first use).

Drivers:
* ``local`` — Docker's local driver (optionally with its ``type``/``o``/``device`` options).
* ``nas``   — an NFS mount through Docker's local driver: ``type=nfs``,
  ``o=addr=<host>,rw,nfsvers=…,noresvport``, ``device=:<path>``; the node that runs the container
  mounts it.
* ``ossfs`` — an OSS bucket through FUSE: needs an ``ossfs`` volume plugin on the engines.

A volume that needs a mount (nas, ossfs, local with options) is mount-probed on every node with a
throw-away container before the call succeeds: if the kernel/plugin cannot mount it, the volume is
removed again and the caller gets the engine's own error, never a volume that only pretends to work.
"""

from __future__ import annotations

import json
import logging
import re
import secrets as pysecrets
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from opencs.engines.apps import AppEngine, AppEngineError, AppNode, EngineUnreachable, VolumeDriverMissing, VolumeInfo
from opencs.errors import ApiError, BadRequest, Conflict
from opencs.errors import NotFound as ApiNotFound
from opencs.secretbox import SecretBox
from opencs.store.db import utcnow
from opencs.store.models import AppVolume
from opencs.store.repos.volumes import VolumeRepo

if TYPE_CHECKING:
    from opencs.services.projects.core import ProjectCore

log = logging.getLogger("opencs.volumes")

# the spec: letters, digits and '-'; Docker clients also use '_' and '.' (a compatible superset)
VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DRIVERS = ("local", "nas", "ossfs")
LABEL_KIND = "opencs.volume"
LABEL_DRIVER = "opencs.volume.driver"
NAS_KEYS = {"diskid", "host", "path", "mode", "vers"}
OSS_KEYS = {"bucket", "ak_id", "ak_secret", "url", "no_stat_cache", "other_opts"}
OSS_SECRET_KEYS = {"ak_secret"}
LOCAL_KEYS = {"type", "o", "device"}
_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                      r"[A-Za-z0-9])?)*$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_OTHER_OPTS_RE = re.compile(r"^(\s*-o\s+[^\s;&|`$<>]+)*\s*$")


class VolumeMountFailed(ApiError):
    """The request was valid but this cluster cannot mount such a volume."""

    status = 412
    code = "VolumeMountFailed"


def _str_opts(opts: Any) -> dict[str, str]:
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise BadRequest("Field 'driverOpts': must be an object of string values", code="InvalidParameter.DriverOpts")
    out = {}
    for k, v in opts.items():
        if isinstance(v, (dict, list)):
            raise BadRequest(f"Field 'driverOpts.{k}': must be a string", code="InvalidParameter.DriverOpts")
        out[str(k)] = "" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
    return out


def _unknown(opts: dict[str, str], allowed: set[str], driver: str) -> None:
    extra = sorted(set(opts) - allowed)
    if extra:
        raise BadRequest(f"Field 'driverOpts.{extra[0]}': not an option of the {driver} driver "
                         f"(allowed: {', '.join(sorted(allowed))})", code="InvalidParameter.DriverOpts")


def engine_spec(driver: str, opts: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(engine volume driver, engine driver options) of a validated cluster volume."""
    if driver == "nas":
        vers = opts.get("vers") or "4.0"
        return "local", {
            "type": "nfs",
            "o": f"addr={opts['host']},rw,nfsvers={vers},noresvport",
            "device": f":{opts['path']}",
        }
    if driver == "ossfs":
        return "ossfs", {k: v for k, v in opts.items() if v != ""}
    return "local", dict(opts)


def validate_options(driver: str, opts: dict[str, str]) -> dict[str, str]:
    """Check the driver options of spec §10.25 (NASOpts/OSSOpts) or Docker's local driver."""
    if driver == "nas":
        _unknown(opts, NAS_KEYS, "nas")
        for k in ("host", "path"):
            if not opts.get(k):
                raise BadRequest(f"Field 'driverOpts.{k}': required for the nas driver",
                                 code="InvalidParameter.DriverOpts")
        if not _HOST_RE.match(opts["host"]):
            raise BadRequest(f"Field 'driverOpts.host': {opts['host']!r} is not a host name or IPv4 address",
                             code="InvalidParameter.DriverOpts")
        if not opts["path"].startswith("/") or any(c in opts["path"] for c in ",\n\0"):
            raise BadRequest("Field 'driverOpts.path': an absolute directory of the NAS file system, e.g. /abc",
                             code="InvalidParameter.DriverOpts")
        mode = opts.get("mode") or "755"
        if not re.fullmatch(r"[0-7]{3,4}", mode):
            raise BadRequest(f"Field 'driverOpts.mode': {mode!r} is not an octal permission such as 755",
                             code="InvalidParameter.DriverOpts")
        if opts.get("vers") and opts["vers"] not in ("3", "4", "4.0", "4.1"):
            raise BadRequest("Field 'driverOpts.vers': one of 3, 4.0, 4.1", code="InvalidParameter.DriverOpts")
        return {**opts, "mode": mode}
    if driver == "ossfs":
        _unknown(opts, OSS_KEYS, "ossfs")
        for k in ("bucket", "ak_id", "ak_secret", "url"):
            if not opts.get(k):
                raise BadRequest(f"Field 'driverOpts.{k}': required for the ossfs driver",
                                 code="InvalidParameter.DriverOpts")
        if not _BUCKET_RE.match(opts["bucket"]):
            raise BadRequest(f"Field 'driverOpts.bucket': {opts['bucket']!r} is not an OSS bucket name "
                             "(3-63 lowercase letters, digits and '-')", code="InvalidParameter.DriverOpts")
        url = re.sub(r"^https?://", "", opts["url"]).rstrip("/")
        if not _HOST_RE.match(url):
            raise BadRequest(f"Field 'driverOpts.url': {opts['url']!r} is not an OSS endpoint such as "
                             "oss-cn-hangzhou.aliyuncs.com", code="InvalidParameter.DriverOpts")
        nsc = opts.get("no_stat_cache", "")
        if nsc not in ("", "true", "false"):
            raise BadRequest("Field 'driverOpts.no_stat_cache': \"true\" or \"false\"",
                             code="InvalidParameter.DriverOpts")
        if not _OTHER_OPTS_RE.match(opts.get("other_opts", "")):
            raise BadRequest("Field 'driverOpts.other_opts': a list of '-o option' mount options, e.g. "
                             "'-o allow_other -o default_permission=666'", code="InvalidParameter.DriverOpts")
        return opts
    _unknown(opts, LOCAL_KEYS, "local")
    return opts


class CreateVolume(BaseModel):
    """POST /volumes/create (spec §10.25; Docker's `Name`/`Driver`/`DriverOpts`/`Labels` too)."""

    model_config = ConfigDict(frozen=True)

    name: str
    driver: str
    options: dict[str, str]  # validated for the driver
    labels: dict[str, str]

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> CreateVolume:
        docker_style = "Name" in body or "Driver" in body or "DriverOpts" in body
        name = body.get("name", body.get("Name"))
        if name in (None, "") and docker_style:
            name = pysecrets.token_hex(32)  # `docker volume create` without a name
        driver = body.get("driver", body.get("Driver")) or "local"
        raw_opts = body.get("driverOpts", body.get("DriverOpts"))
        labels = body.get("labels", body.get("Labels")) or {}
        if not isinstance(name, str) or not VOLUME_NAME_RE.match(name):
            raise BadRequest(f"Field 'name': {name!r} is not a valid volume name (1-64 letters, digits and '-', "
                             "not starting with '-')", code="InvalidParameter.Name")
        if driver not in DRIVERS:
            raise BadRequest(f"Field 'driver': {driver!r} is not supported (use {', '.join(DRIVERS)})",
                             code="InvalidParameter.Driver")
        if not isinstance(labels, dict) or any(not isinstance(v, str) for v in labels.values()):
            raise BadRequest("Field 'labels': an object of string values", code="InvalidParameter.Labels")
        if any(str(k).startswith("opencs.") for k in labels):
            raise BadRequest("Field 'labels': the prefix 'opencs.' is reserved", code="InvalidParameter.Labels")
        return cls(name=name, driver=driver, options=validate_options(driver, _str_opts(raw_opts)),
                   labels={str(k): v for k, v in labels.items()})


class VolumeService:
    def __init__(self, repo: VolumeRepo, box: SecretBox, projects: ProjectCore) -> None:
        self.repo = repo
        self.box = box
        self.projects = projects

    # ------------------------------------------------------------ store

    def _row(self, cluster_id: str, name: str) -> AppVolume | None:
        return self.repo.get(cluster_id, name)

    def cluster_volumes(self, cluster_id: str) -> dict[str, dict[str, Any]]:
        """name → engine driver config (secrets decrypted) for the stack normalizer."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.repo.of_cluster(cluster_id):
            opts = dict(r.options or {})
            if r.secret_enc:
                opts.update(json.loads(self.box.decrypt(r.secret_enc)))
            drv, eopts = engine_spec(r.driver, opts)
            out[r.name] = {"driver": drv, "options": eopts,
                           "labels": {LABEL_KIND: "cluster", LABEL_DRIVER: r.driver, **(r.labels or {})}}
        return out

    # ------------------------------------------------------------ create

    def create(self, cluster_id: str, req: CreateVolume) -> dict[str, Any]:
        self.projects.usable_cluster(cluster_id)
        name, driver, opts, labels = req.name, req.driver, dict(req.options), dict(req.labels)
        if self._row(cluster_id, name) is not None:
            raise Conflict(f"volume {name!r} already exists", code="VolumeExists")
        engine = self.projects.engine(cluster_id)
        nodes = engine.nodes()
        if not nodes:
            raise Conflict("the cluster has no nodes", code="ErrorClusterStateConflict")
        for n in nodes:
            try:
                vols = engine.node_volumes(n).volumes
            except EngineUnreachable as e:
                raise ApiError(f"node {n.ip} is not reachable: {e.detail}", code="NodeUnreachable",
                               status=503) from None
            if any(v.name == name for v in vols):
                raise Conflict(f"a volume named {name!r} already exists on node {n.ip}", code="VolumeExists")

        eng_driver, eng_opts = engine_spec(driver, opts)
        eng_labels = {**labels, LABEL_KIND: "cluster", LABEL_DRIVER: driver}
        created: list[AppNode] = []
        results: dict[str, VolumeInfo] = {}
        hidden = [opts[k] for k in OSS_SECRET_KEYS if driver == "ossfs" and opts.get(k)]
        try:
            self._create_everywhere(engine, nodes, name, driver, (eng_driver, eng_opts, eng_labels), created,
                                    results)
        except ApiError as e:
            for value in hidden:  # an engine or plugin error may echo the options
                e.message = e.message.replace(value, "****")
            e.args = (e.message,)
            raise

        plain = {k: v for k, v in opts.items() if not (driver == "ossfs" and k in OSS_SECRET_KEYS)}
        secret = {k: v for k, v in opts.items() if driver == "ossfs" and k in OSS_SECRET_KEYS}
        self.repo.add(AppVolume(cluster_id=cluster_id, name=name, driver=driver, options=plain,
                                secret_enc=self.box.encrypt(json.dumps(secret)) if secret else None,
                                labels=dict(labels), created=utcnow()))
        first = results[nodes[0].node_id]
        return {"Name": name, "Driver": driver, "Mountpoint": first.mountpoint,
                "Labels": dict(labels) or None, "Scope": first.scope}

    def _create_everywhere(self, engine: AppEngine, nodes: list[AppNode], name: str, driver: str,
                           spec: tuple[str, dict[str, str], dict[str, str]], created: list[AppNode],
                           results: dict[str, VolumeInfo]) -> None:
        """Create the volume on every node and probe its mount; on any failure remove it again.
        `spec`: the engine's (driver, options, labels)."""
        eng_driver, eng_opts, eng_labels = spec
        try:
            for n in nodes:
                try:
                    results[n.node_id] = engine.create_volume(n, name, eng_driver, eng_opts, eng_labels)
                    created.append(n)
                except VolumeDriverMissing as e:
                    raise VolumeMountFailed(
                        f"the {driver} volume driver is not available on node {n.ip}: {e.message}. "
                        + self._hint(driver), code="VolumeDriverUnavailable") from None
                except EngineUnreachable:
                    raise
                except AppEngineError as e:
                    raise BadRequest(f"node {n.ip} refused the volume: {e.message}",
                                     code="VolumeCreateFailed") from None
            if driver != "local" or eng_opts:
                self._probe(engine, nodes, name, driver)
        except BaseException:
            for n in created:
                try:
                    engine.remove_volume(n, name)
                except AppEngineError as e:
                    log.warning("could not remove half-created volume %s on %s: %s", name, n.ip, e.message)
            raise

    @staticmethod
    def _hint(driver: str) -> str:
        if driver == "ossfs":
            return ("ossfs volumes need an 'ossfs' Docker volume plugin (FUSE) on every node, with access to the "
                    "bucket's OSS endpoint")
        return ""

    def _probe(self, engine: AppEngine, nodes: list[AppNode], name: str, driver: str) -> None:
        def one(n: AppNode) -> str:
            try:
                engine.probe_mount(n, name)
                return ""
            except AppEngineError as e:
                return f"node {n.ip}: {e.message}"

        with ThreadPoolExecutor(max_workers=min(8, len(nodes))) as pool:
            errors = [e for e in pool.map(one, nodes) if e]
        if not errors:
            return
        hint = ""
        if driver == "nas" and engine.lacks_filesystem("nfs"):
            hint = (" — this host's kernel has no NFS client ('nfs' is missing from /proc/filesystems), so NAS "
                    "volumes cannot be mounted on its nodes")
        elif driver == "ossfs":
            hint = " — " + self._hint(driver)
        raise VolumeMountFailed(f"volume {name!r} ({driver}) was not created: the mount failed on "
                                f"{'; '.join(errors)}{hint}")

    # ------------------------------------------------------------ read

    def _scan(self, cluster_id: str) -> list[dict[str, Any]]:
        engine = self.projects.engine(cluster_id)
        nodes = engine.nodes()

        def one(n: AppNode) -> list[dict[str, Any]]:
            try:
                found = engine.node_volumes(n)
            except AppEngineError as e:
                log.info("volumes of node %s: %s", n.ip, e.message)
                return []
            out = []
            for v in found.volumes:
                drv = v.labels.get(LABEL_DRIVER) or v.driver
                user = {k: val for k, val in v.labels.items() if not k.startswith("opencs.")}
                out.append({"Name": v.name, "Driver": drv, "Mountpoint": v.mountpoint,
                            "Labels": user or None, "Scope": v.scope, "Node": found.hostname or n.ip,
                            "Refs": [{"Name": r.name, "ID": r.container_id} for r in v.refs]})
            return out

        if not nodes:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(nodes))) as pool:
            return [v for vs in pool.map(one, nodes) for v in vs]

    def list(self, cluster_id: str) -> dict[str, Any]:
        self.projects.usable_cluster(cluster_id)
        vols = sorted(self._scan(cluster_id), key=lambda v: (v["Name"], v["Node"]))
        return {"Volumes": vols, "Warnings": None}

    def get(self, cluster_id: str, name: str) -> dict[str, Any]:
        self.projects.usable_cluster(cluster_id)
        found = [v for v in self._scan(cluster_id) if v["Name"] == name]
        if not found:
            raise ApiNotFound(f"volume {name!r} not found", code="VolumeNotFound")
        first = dict(found[0])
        first["Node"] = ",".join(sorted({v["Node"] for v in found}))
        first["Refs"] = [r for v in found for r in v["Refs"]]
        return first

    # ------------------------------------------------------------ delete

    def delete(self, cluster_id: str, name: str) -> None:
        self.projects.usable_cluster(cluster_id)
        found = [v for v in self._scan(cluster_id) if v["Name"] == name]
        row = self._row(cluster_id, name)
        if not found and row is None:
            raise ApiNotFound(f"volume {name!r} not found", code="VolumeNotFound")
        users = [f"{r['Name'] or r['ID'][:12]} on {v['Node']}" for v in found for r in v["Refs"]]
        if users:
            raise Conflict(f"volume {name!r} is in use by container(s): {', '.join(users)}", code="VolumeInUse")
        errors = []
        engine = self.projects.engine(cluster_id)
        for n in engine.nodes():
            try:
                engine.remove_volume(n, name)
            except EngineUnreachable as e:
                errors.append(f"node {n.ip}: {e.detail}")
            except AppEngineError as e:
                errors.append(f"node {n.ip}: {e.message}")
        if errors:
            raise Conflict(f"volume {name!r} could not be removed everywhere: {'; '.join(errors)}",
                           code="VolumeRemoveFailed")
        if row is not None:
            self.repo.delete(cluster_id, name)
