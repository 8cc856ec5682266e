"""A validated Compose template → a Swarm stack model (what ``docker stack deploy`` would create).

* One overlay network per project (``<project>_default``) plus the template's own networks.
* Without IPVS in the nodes' kernel (no VIP load balancing, no ingress routing mesh) services use
  ``endpoint_mode: dnsrr`` and host-mode published ports; the caller tells us which (``ipvs``).
* Alibaba labels (spec §13): ``aliyun.scale`` (replicas), ``aliyun.global``, ``aliyun.depends``,
  ``aliyun.latest_image``, ``aliyun.rolling_updates[.parallelism]``, ``aliyun.probe.*`` (health
  check), ``aliyun.logs*``; every ``aliyun.*`` label (``aliyun.routing.port_*``, ``aliyun.lb.*``,
  ``aliyun.monitoring.*`` …) is also kept as a *service* label for the routing/monitoring parts.
* Service specs use the Engine API's ServiceSpec shape (API 1.41) so the engine adapter can send
  them as they are; the config hash is computed there.
"""

from __future__ import annotations

from typing import Any

from opencs.compose import values as V
from opencs.compose.load import ComposeFile, load
from opencs.compose.models import (  # re-exported: the names callers import from here
    DEFAULT_NETWORK,
    HASH_LABEL,
    IMAGE_LABEL,
    MAX_SERVICE_NAME,
    NAMESPACE_LABEL,
    PROJECT_LABEL,
    PROJECT_NAME_RE,
    ROUTING_LABEL_PREFIX,
    SERVICE_LABEL,
    NetworkModel,
    Options,
    ServiceModel,
    StackModel,
    VolumeModel,
    validate_project_name,
)
from opencs.compose.schema import validate
from opencs.compose.service_spec import ServiceSpecs

__all__ = ["HASH_LABEL", "IMAGE_LABEL", "MAX_SERVICE_NAME", "NAMESPACE_LABEL", "PROJECT_LABEL", "PROJECT_NAME_RE",
           "ROUTING_LABEL_PREFIX", "SERVICE_LABEL", "NetworkModel", "Options", "ServiceModel", "StackModel",
           "VolumeModel", "build_stack", "normalize", "validate_project_name"]


class _Builder(ServiceSpecs):
    """The whole template: networks, volumes, every service, dependency levels."""

    def networks(self) -> dict[str, NetworkModel]:
        out: dict[str, NetworkModel] = {}
        declared = dict(self.cf.networks) if self.cf.major >= 2 else {}
        declared.setdefault(DEFAULT_NETWORK, None)
        for key, conf in declared.items():
            conf = conf or {}
            ext = conf.get("external")
            labels = V.as_dict(conf.get("labels"))
            if ext:
                ext_name = ext.get("name") if isinstance(ext, dict) else None
                out[key] = NetworkModel(key, ext_name or conf.get("name") or key, external=True)
                continue
            opts = {k: str(v) for k, v in (conf.get("driver_opts") or {}).items()}
            if "encrypted" in opts:
                self.warn(f"network {key}: 'encrypted' overlays are not supported by the nodes' kernel; "
                          "the option was dropped")
                opts.pop("encrypted")
            ipam = None
            if conf.get("ipam"):
                ipam = {
                    "Driver": conf["ipam"].get("driver", "default"),
                    "Config": [{k.capitalize() if k != "ip_range" else "IPRange": v for k, v in c.items()}
                               for c in conf["ipam"].get("config", [])],
                }
            out[key] = NetworkModel(
                key=key,
                name=conf.get("name") or f"{self.project}_{key}",
                driver_opts=opts,
                attachable=bool(conf.get("attachable", True)),
                internal=bool(conf.get("internal", False)),
                labels={**labels, NAMESPACE_LABEL: self.project, PROJECT_LABEL: self.project},
                ipam=ipam,
            )
        return out

    def volumes(self) -> dict[str, VolumeModel]:
        out: dict[str, VolumeModel] = {}
        for key, conf in (self.cf.volumes if self.cf.major >= 2 else {}).items():
            conf = conf or {}
            ext = conf.get("external")
            if ext:
                ext_name = (ext.get("name") if isinstance(ext, dict) else None) or conf.get("name") or key
                out[key] = self._cluster_or_external(key, ext_name)
                continue
            driver = conf.get("driver", "local")
            if driver in ("nas", "ossfs"):
                raise self.err(
                    f"driver {driver!r} needs a cluster volume: create it with POST /volumes/create and "
                    "reference it with 'external: true'", "volumes", key, "driver",
                )
            out[key] = VolumeModel(
                key=key,
                name=conf.get("name") or f"{self.project}_{key}",
                driver=driver,
                driver_opts={k: str(v) for k, v in (conf.get("driver_opts") or {}).items()},
                labels={**V.as_dict(conf.get("labels")), NAMESPACE_LABEL: self.project, PROJECT_LABEL: self.project},
            )
        return out

    # ------------------------------------------------------------ services

    # ------------------------------------------------------------ all

    def levels(self, services: dict[str, ServiceModel]) -> list[list[str]]:
        for s in services.values():
            for dep in s.depends_on:
                if dep not in services:
                    raise self.err(f"depends on unknown service {dep!r}", "services", s.name)
                if dep == s.name:
                    raise self.err("depends on itself", "services", s.name)
        remaining = {n: set(s.depends_on) for n, s in services.items()}
        levels: list[list[str]] = []
        done: set[str] = set()
        while remaining:
            ready = sorted(n for n, deps in remaining.items() if deps <= done)
            if not ready:
                cyc = ", ".join(sorted(remaining))
                raise self.err(f"circular dependency between services: {cyc}", "services")
            levels.append(ready)
            done.update(ready)
            for n in ready:
                del remaining[n]
        return levels

    def build(self) -> StackModel:
        nets = self.networks()
        vols = self.volumes()
        services: dict[str, ServiceModel] = {}
        for name, d in self.cf.services.items():
            services[name] = self.service(name, d, nets, vols)
        # link aliases are names the *target* answers to on the shared networks
        for d in self.cf.services.values():
            for link in d.get("links") or []:
                target, _, alias = link.partition(":")
                if alias and target in services:
                    for att in services[target].spec["TaskTemplate"]["Networks"]:
                        if alias not in att["Aliases"]:
                            att["Aliases"].append(alias)
        seen: dict[tuple[int, str], str] = {}
        for s in services.values():
            for port, proto, _ in s.published:
                if (port, proto) in seen and seen[(port, proto)] != s.name:
                    raise self.err(f"published port {port}/{proto} is also published by service "
                                   f"{seen[(port, proto)]!r}", "services", s.name, "ports")
                seen[(port, proto)] = s.name
        levels = self.levels(services)
        if not self.opts.ipvs and any(s.published for s in services.values()):
            self.warn("the nodes' kernel has no IPVS (no swarm VIPs, no ingress routing mesh): services use "
                      "endpoint_mode dnsrr and publish their ports in host mode on the nodes running them")
        used_nets = {a["Target"] for s in services.values() for a in s.spec["TaskTemplate"]["Networks"]}
        nets = {k: n for k, n in nets.items() if n.name in used_nets or k != DEFAULT_NETWORK}
        ordered = {n: services[n] for lvl in levels for n in lvl}
        return StackModel(project=self.project, version=self.cf.version, services=ordered, networks=nets,
                          volumes=vols, levels=levels, warnings=self.warnings, ipvs=self.opts.ipvs)


def normalize(project: str, cf: ComposeFile, opts: Options | None = None) -> StackModel:
    validate_project_name(project)
    validate(cf)
    return _Builder(project, cf, opts or Options()).build()


def build_stack(project: str, template: str, environment: dict[str, Any] | None = None,
                opts: Options | None = None) -> StackModel:
    """Template text → StackModel; the project's environment (plus COMPOSE_PROJECT_NAME) fills variables."""
    validate_project_name(project)
    variables = {"COMPOSE_PROJECT_NAME": project, **(environment or {})}
    cf = load(template, variables)
    return normalize(project, cf, opts)
