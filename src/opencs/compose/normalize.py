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

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from opencs.compose import values as V
from opencs.compose.load import ComposeError, ComposeFile, fmt_path, load
from opencs.compose.schema import validate

NAMESPACE_LABEL = "com.docker.stack.namespace"
IMAGE_LABEL = "com.docker.stack.image"
PROJECT_LABEL = "opencs.project"
SERVICE_LABEL = "opencs.service"
HASH_LABEL = "opencs.config-hash"
ROUTING_LABEL_PREFIX = "aliyun.routing.port_"  # aliyun.routing.port_<container port>: domains
DEFAULT_NETWORK = "default"
PROJECT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
MAX_SERVICE_NAME = 63  # swarm service names are DNS labels

DEFAULT_MONITOR_NS = 5 * 10**9


@dataclass
class NetworkModel:
    key: str  # name in the template
    name: str  # name on the engine
    external: bool = False
    driver: str = "overlay"
    driver_opts: dict[str, str] = field(default_factory=dict)
    attachable: bool = True
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    ipam: dict[str, Any] | None = None


@dataclass
class VolumeModel:
    key: str
    name: str
    external: bool = False
    driver: str = "local"
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    cluster_volume: bool = False  # created with POST /volumes/create


@dataclass
class ServiceModel:
    name: str  # in the template
    full_name: str  # <project>_<name> (the swarm service and the API's service id)
    image: str
    spec: dict[str, Any]  # Engine API ServiceSpec
    mode: str  # replicated | global
    replicas: int | None
    depends_on: list[str]
    definition: dict[str, Any]
    extensions: dict[str, Any]
    published: list[tuple[int, str, str]]  # (published port, protocol, mode)
    latest_image: bool = False


@dataclass
class StackModel:
    project: str
    version: str
    services: dict[str, ServiceModel]
    networks: dict[str, NetworkModel]
    volumes: dict[str, VolumeModel]
    levels: list[list[str]]  # dependency order: level 0 first
    warnings: list[str] = field(default_factory=list)
    ipvs: bool = True

    @property
    def order(self) -> list[str]:
        return [s for lvl in self.levels for s in lvl]

    def host_ports(self) -> list[tuple[int, str, str]]:
        """(published port, protocol, service) of every published port."""
        return [(p, proto, s.name) for s in self.services.values() for p, proto, _ in s.published]


@dataclass
class Options:
    ipvs: bool = True
    # name → {"driver": engine driver, "options": {...}, "labels": {...}} of the cluster's volumes
    cluster_volumes: dict[str, dict[str, Any]] = field(default_factory=dict)


def validate_project_name(name: Any) -> str:
    if not isinstance(name, str) or not PROJECT_NAME_RE.match(name):
        raise ComposeError(
            f"invalid project name {name!r}: 1-64 letters, digits and '-', not starting with '-'",
            "name", "InvalidParameter.Name",
        )
    return name


def _truthy(v: Any) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def _int_label(v: str, path: str, what: str) -> int:
    try:
        n = int(str(v).strip())
    except ValueError:
        raise ComposeError(f"{what} must be an integer, got {v!r}", path, "InvalidTemplate.Label") from None
    if n < 0:
        raise ComposeError(f"{what} must not be negative, got {n}", path, "InvalidTemplate.Label")
    return n


class _Builder:
    def __init__(self, project: str, cf: ComposeFile, opts: Options) -> None:
        self.project = project
        self.cf = cf
        self.opts = opts
        self.warnings: list[str] = list(cf.warnings)

    def err(self, msg: str, *path: Any, code: str = "InvalidTemplate") -> ComposeError:
        return ComposeError(msg, self.path(*path), code)

    def path(self, *path: Any) -> str:
        """The path as the user wrote it: v1 templates have their services at the top level."""
        parts = list(path)
        if self.cf.major == 1 and len(parts) > 1 and parts[0] == "services":
            parts = parts[1:]
        return fmt_path(parts)

    def warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)

    # ------------------------------------------------------------ networks and volumes

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

    def _cluster_or_external(self, key: str, name: str) -> VolumeModel:
        cv = self.opts.cluster_volumes.get(name)
        if cv:
            return VolumeModel(key, name, external=True, driver=cv["driver"],
                               driver_opts=dict(cv.get("options") or {}), labels=dict(cv.get("labels") or {}),
                               cluster_volume=True)
        return VolumeModel(key, name, external=True)

    # ------------------------------------------------------------ services

    def service(self, name: str, d: dict[str, Any], nets: dict[str, NetworkModel],
                vols: dict[str, VolumeModel]) -> ServiceModel:
        P = ("services", name)
        full = f"{self.project}_{name}"
        if len(full) > MAX_SERVICE_NAME:
            raise self.err(f"the service id {full!r} is longer than {MAX_SERVICE_NAME} characters "
                           "(project name + '_' + service name)", *P)
        if "image" not in d:
            if "build" in d:
                raise self.err("'build' is not supported on a cluster: build and push the image to a registry, "
                               "then use 'image'", *P, "build")
            raise self.err("'image' is required", *P)
        for key, why in (("env_file", "there are no files next to a template: use 'environment'"),
                         ("volumes_from", "use a named volume shared by the services"),
                         ("secrets", "secrets are not supported yet"),
                         ("configs", "configs are not supported yet")):
            if d.get(key):
                raise self.err(f"'{key}' is not supported: {why}", *P, key)
        nm = d.get("network_mode")
        if nm and nm not in ("bridge", "default"):
            raise self.err(f"network_mode {nm!r} is not supported by swarm services: use 'networks'",
                           *P, "network_mode")
        ignored = [k for k in ("build", "container_name", "privileged", "devices", "pid", "ipc", "security_opt",
                               "shm_size", "cgroup_parent", "mac_address", "cpu_shares", "cpu_quota", "cpuset",
                               "memswap_limit", "external_links", "domainname", "oom_score_adj",
                               "oom_kill_disable", "isolation", "userns_mode", "platform", "network_mode")
                   if k in d]
        if ignored:
            self.warn(f"service {name}: ignored option(s) a swarm service cannot honour: {', '.join(ignored)}")

        labels = V.as_dict(d.get("labels"))
        aliyun = {k: v for k, v in labels.items() if k.startswith("aliyun.")}
        deploy = d.get("deploy") or {}
        image = d["image"]

        # ---- extensions (Container Service labels)
        ext: dict[str, Any] = {}
        for k, v in aliyun.items():
            ext[k[len("aliyun."):]] = v
        mode = deploy.get("mode", "replicated")
        if _truthy(aliyun.get("aliyun.global", "")):
            mode = "global"
        replicas: int | None
        if mode == "global":
            replicas = None
        elif "replicas" in deploy:
            replicas = int(deploy["replicas"])
        elif "scale" in d:
            replicas = int(d["scale"])
        elif "aliyun.scale" in aliyun:
            replicas = _int_label(aliyun["aliyun.scale"], self.path(*P, "labels", "aliyun.scale"), "aliyun.scale")
        else:
            replicas = 1
        ext["scale"] = replicas if replicas is not None else "global"
        logs: list[str] = []
        for k, v in aliyun.items():
            if k == "aliyun.logs":
                logs += [x.strip() for x in v.split(",") if x.strip()]
            elif k.startswith("aliyun.logs."):
                logs.append(v)
        if logs:
            ext["logs"] = logs
        latest = _truthy(aliyun.get("aliyun.latest_image", "")) or d.get("pull_policy") == "always"
        if latest:
            ext["latest_image"] = True

        # ---- dependencies
        deps: list[str] = []
        dep_raw = d.get("depends_on") or []
        deps += list(dep_raw) if isinstance(dep_raw, list) else list(dep_raw.keys())
        link_aliases: list[tuple[str, str]] = []
        for link in d.get("links") or []:
            target, _, alias = link.partition(":")
            deps.append(target)
            if alias and alias != target:
                link_aliases.append((target, alias))
        if "aliyun.depends" in aliyun:
            deps += [x.strip() for x in aliyun["aliyun.depends"].split(",") if x.strip()]
        deps = list(dict.fromkeys(deps))

        # ---- container spec
        cs: dict[str, Any] = {"Image": image}
        container_labels = {k: v for k, v in labels.items()}
        container_labels[NAMESPACE_LABEL] = self.project
        container_labels[PROJECT_LABEL] = self.project
        container_labels[SERVICE_LABEL] = name
        cs["Labels"] = container_labels
        try:
            ep = V.as_command(d.get("entrypoint"))
            cmd = V.as_command(d.get("command"))
        except ValueError as e:
            raise self.err(str(e), *P, "command") from None
        if ep is not None:
            cs["Command"] = ep  # ServiceSpec Command = entrypoint, Args = command
        if cmd is not None:
            cs["Args"] = cmd
        env = V.as_list_of_kv(d.get("environment"))
        if env:
            cs["Env"] = env
        if d.get("working_dir"):
            cs["Dir"] = d["working_dir"]
        if d.get("user") is not None:
            cs["User"] = str(d["user"])
        if d.get("hostname"):
            cs["Hostname"] = d["hostname"]
        if d.get("stop_grace_period"):
            cs["StopGracePeriod"] = V.parse_duration(d["stop_grace_period"])
        if d.get("stop_signal"):
            cs["StopSignal"] = d["stop_signal"]
        for key, api in (("tty", "TTY"), ("stdin_open", "OpenStdin"), ("read_only", "ReadOnly"), ("init", "Init")):
            if key in d:
                cs[api] = bool(d[key])
        dns = {"Nameservers": V.as_list(d.get("dns")), "Search": V.as_list(d.get("dns_search")),
               "Options": V.as_list(d.get("dns_opt"))}
        if any(dns.values()):
            cs["DNSConfig"] = {k: v for k, v in dns.items() if v}
        hosts = d.get("extra_hosts")
        if hosts:
            pairs = hosts.items() if isinstance(hosts, dict) else [h.split(":", 1) if ":" in h else (h, "")
                                                                   for h in hosts]
            out_hosts = []
            for i, (h, ip) in enumerate(pairs):
                if not ip:
                    raise self.err(f"invalid extra_hosts entry {h!r}: use HOST:IP", *P, "extra_hosts", i)
                out_hosts.append(f"{ip} {h}")
            cs["Hosts"] = out_hosts
        if d.get("cap_add"):
            cs["CapabilityAdd"] = [c if c.startswith("CAP_") else f"CAP_{c}" for c in d["cap_add"]]
        if d.get("cap_drop"):
            cs["CapabilityDrop"] = [c if c.startswith("CAP_") else f"CAP_{c}" for c in d["cap_drop"]]
        if d.get("sysctls"):
            cs["Sysctls"] = V.as_dict(d["sysctls"])
        if d.get("ulimits"):
            cs["Ulimits"] = [
                {"Name": k, "Soft": v, "Hard": v} if isinstance(v, int) else {"Name": k, "Soft": v["soft"],
                                                                                "Hard": v["hard"]}
                for k, v in d["ulimits"].items()
            ]
        hc = self.healthcheck(name, d, aliyun)
        if hc:
            cs["Healthcheck"] = hc
        mounts = self.mounts(name, d, vols)
        if mounts:
            cs["Mounts"] = mounts

        # ---- task template
        tt: dict[str, Any] = {"ContainerSpec": cs, "ForceUpdate": 0}
        res = self.resources(name, d, deploy)
        if res:
            tt["Resources"] = res
        rp = self.restart(d, deploy)
        if rp:
            tt["RestartPolicy"] = rp
        placement: dict[str, Any] = {}
        pl = deploy.get("placement") or {}
        if pl.get("constraints"):
            placement["Constraints"] = list(pl["constraints"])
        if pl.get("preferences"):
            placement["Preferences"] = [{"Spread": {"SpreadDescriptor": p["spread"]}} for p in pl["preferences"]]
        if pl.get("max_replicas_per_node"):
            placement["MaxReplicas"] = int(pl["max_replicas_per_node"])
        if placement:
            tt["Placement"] = placement
        log = d.get("logging") or ({"driver": d["log_driver"], "options": d.get("log_opt") or {}}
                                   if d.get("log_driver") else None)
        if log and log.get("driver"):
            tt["LogDriver"] = {"Name": log["driver"],
                               "Options": {k: str(v) for k, v in (log.get("options") or {}).items() if v is not None}}
        tt["Networks"] = self.attachments(name, d, nets, link_aliases)

        # ---- endpoint
        published: list[tuple[int, str, str]] = []
        ports: list[dict[str, Any]] = []
        for i, p in enumerate(d.get("ports") or []):
            for ps in V.parse_port(p):
                if ps.host_ip and ps.host_ip not in ("0.0.0.0", "::"):
                    raise self.err(f"binding a published port to host address {ps.host_ip} is not supported "
                                   "by swarm services (ports are published on every address of a node)",
                                   *P, "ports", i)
                pmode = ps.mode or ("ingress" if self.opts.ipvs else "host")
                if pmode == "ingress" and not self.opts.ipvs:
                    self.warn(f"service {name}: port {ps.target} is published in host mode: the nodes' kernel has "
                              "no IPVS, so the swarm routing mesh (ingress) cannot work")
                    pmode = "host"
                entry: dict[str, Any] = {"Protocol": ps.protocol, "TargetPort": ps.target, "PublishMode": pmode}
                if ps.published is not None:
                    entry["PublishedPort"] = ps.published
                    published.append((ps.published, ps.protocol, pmode))
                ports.append(entry)
        # a routed container port (aliyun.routing.port_N, spec §13) needs a way in for the router:
        # if the template does not publish N, the engine picks a host port per task (host mode, no
        # PublishedPort) and the router reads it from the task's status
        for rport in self.routing_ports(name, aliyun):
            if not any(p["TargetPort"] == rport and p["Protocol"] == "tcp" for p in ports):
                ports.append({"Protocol": "tcp", "TargetPort": rport, "PublishMode": "host"})
        ep_mode = deploy.get("endpoint_mode") or ("vip" if self.opts.ipvs else "dnsrr")
        if ep_mode == "vip" and not self.opts.ipvs:
            self.warn(f"service {name}: endpoint_mode dnsrr instead of vip: the nodes' kernel has no IPVS "
                      "(the service name resolves to the containers' addresses)")
            ep_mode = "dnsrr"
        if ep_mode == "dnsrr" and any(p["PublishMode"] == "ingress" for p in ports):
            raise self.err("ports published in ingress mode cannot be used with endpoint_mode dnsrr",
                           *P, "ports")
        endpoint: dict[str, Any] = {"Mode": ep_mode}
        if ports:
            endpoint["Ports"] = ports

        # ---- update / rollback
        host_mode = any(p["PublishMode"] == "host" and "PublishedPort" in p for p in ports)
        upd = self.update_config(name, deploy.get("update_config") or {}, aliyun, host_mode, rollback=False)
        rb = self.update_config(name, deploy.get("rollback_config") or {}, {}, host_mode, rollback=True)

        svc_labels = V.as_dict(deploy.get("labels"))
        svc_labels.update(aliyun)
        svc_labels.update({NAMESPACE_LABEL: self.project, IMAGE_LABEL: image, PROJECT_LABEL: self.project,
                           SERVICE_LABEL: name})
        spec: dict[str, Any] = {
            "Name": full,
            "Labels": svc_labels,
            "TaskTemplate": tt,
            "Mode": {"Global": {}} if mode == "global" else {"Replicated": {"Replicas": replicas}},
            "UpdateConfig": upd,
            "RollbackConfig": rb,
            "EndpointSpec": endpoint,
        }
        return ServiceModel(name=name, full_name=full, image=image, spec=spec, mode=mode, replicas=replicas,
                            depends_on=deps, definition=d, extensions=ext, published=published, latest_image=latest)

    def routing_ports(self, name: str, aliyun: dict[str, str]) -> list[int]:
        out = []
        for k in aliyun:
            if k.startswith(ROUTING_LABEL_PREFIX):
                n = k[len(ROUTING_LABEL_PREFIX):]
                if not n.isdigit() or not 1 <= int(n) <= 65535:
                    raise self.err(f"the label must name a container port (e.g. aliyun.routing.port_80), not {n!r}",
                                   "services", name, "labels", k, code="InvalidTemplate.Label")
                out.append(int(n))
        return out

    def healthcheck(self, name: str, d: dict[str, Any], aliyun: dict[str, str]) -> dict[str, Any] | None:
        P = ("services", name, "healthcheck")
        hc = d.get("healthcheck")
        if hc is None and any(k.startswith("aliyun.probe.") for k in aliyun):
            return self.probe(name, aliyun)
        if not hc:
            return None
        if hc.get("disable"):
            return {"Test": ["NONE"]}
        out: dict[str, Any] = {}
        t = hc.get("test")
        if isinstance(t, str):
            out["Test"] = ["CMD-SHELL", t]
        elif isinstance(t, list):
            if not t or t[0] not in ("CMD", "CMD-SHELL", "NONE"):
                raise self.err("test must start with CMD, CMD-SHELL or NONE", *P, "test")
            out["Test"] = list(t)
        for k, api in (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod")):
            if hc.get(k):
                out[api] = V.parse_duration(hc[k])
        if "retries" in hc:
            out["Retries"] = int(hc["retries"])
        return out

    def probe(self, name: str, aliyun: dict[str, str]) -> dict[str, Any]:
        """aliyun.probe.url (http://container:PORT/path, tcp://container:PORT) or aliyun.probe.cmd."""
        out: dict[str, Any] = {}
        url = aliyun.get("aliyun.probe.url", "")
        cmd = aliyun.get("aliyun.probe.cmd", "")
        if url:
            m = re.match(r"^(https?|tcp)://[^/:]+(?::(\d+))?(/.*)?$", url)
            if not m:
                raise self.err(f"invalid probe url {url!r}: use http://container:PORT/PATH or tcp://container:PORT",
                               "services", name, "labels", "aliyun.probe.url")
            scheme, port, path = m.group(1), m.group(2), m.group(3) or "/"
            if scheme == "tcp":
                if not port:
                    raise self.err("a tcp probe needs a port", "services", name, "labels", "aliyun.probe.url")
                out["Test"] = ["CMD-SHELL", f"nc -z 127.0.0.1 {port} || exit 1"]
            else:
                port = port or ("443" if scheme == "https" else "80")
                target = shlex.quote(f"{scheme}://127.0.0.1:{port}{path}")
                out["Test"] = ["CMD-SHELL", f"wget -q -O /dev/null {target} || exit 1"]
        elif cmd:
            out["Test"] = ["CMD-SHELL", cmd]
        else:
            return {}
        for key, api in (("aliyun.probe.timeout_seconds", "Timeout"),
                         ("aliyun.probe.initial_delay_seconds", "StartPeriod")):
            if key in aliyun:
                out[api] = _int_label(aliyun[key], self.path("services", name, "labels", key), key) * 10**9
        return out

    def mounts(self, name: str, d: dict[str, Any], vols: dict[str, VolumeModel]) -> list[dict[str, Any]]:
        P = ("services", name, "volumes")
        out: list[dict[str, Any]] = []
        targets: set[str] = set()
        vdriver = d.get("volume_driver")
        for i, raw in enumerate(d.get("volumes") or []):
            v = V.parse_volume(raw)
            if v.target in targets:
                raise self.err(f"duplicate mount point {v.target}", *P, i)
            targets.add(v.target)
            m: dict[str, Any] = {"Type": v.type, "Target": v.target}
            if v.read_only:
                m["ReadOnly"] = True
            if v.type == "bind":
                m["Source"] = v.source
                if v.propagation:
                    m["BindOptions"] = {"Propagation": v.propagation}
            elif v.type == "tmpfs":
                if v.tmpfs_size is not None:
                    m["TmpfsOptions"] = {"SizeBytes": v.tmpfs_size}
            elif v.source:
                vm = vols.get(v.source)
                if vm is None:
                    if v.source in self.opts.cluster_volumes:
                        vm = self._cluster_or_external(v.source, v.source)
                    elif self.cf.major == 1:
                        if vdriver in ("nas", "ossfs"):
                            raise self.err(f"volume {v.source!r} with driver {vdriver!r} must first be created "
                                           "with POST /volumes/create", *P, i)
                        vm = VolumeModel(v.source, f"{self.project}_{v.source}", driver=vdriver or "local",
                                         labels={NAMESPACE_LABEL: self.project, PROJECT_LABEL: self.project})
                        vols[v.source] = vm
                    else:
                        raise self.err(f"named volume {v.source!r} is not declared under the top-level 'volumes' "
                                       "key (nor created with POST /volumes/create)", *P, i)
                m["Source"] = vm.name
                vo: dict[str, Any] = {}
                if v.nocopy:
                    vo["NoCopy"] = True
                if vm.labels:
                    vo["Labels"] = dict(vm.labels)
                if not vm.external or vm.cluster_volume:
                    # every node creates the volume the same way when a task lands there
                    vo["DriverConfig"] = {"Name": vm.driver, "Options": dict(vm.driver_opts)} if vm.driver_opts \
                        else {"Name": vm.driver}
                if vo:
                    m["VolumeOptions"] = vo
            out.append(m)
        tmpfs = d.get("tmpfs")
        for i, t in enumerate(V.as_list(tmpfs)):
            path, _, optstr = t.partition(":")
            if path in targets:
                raise self.err(f"duplicate mount point {path}", "services", name, "tmpfs", i)
            targets.add(path)
            m = {"Type": "tmpfs", "Target": path}
            for o in [x for x in optstr.split(",") if x]:
                k, _, val = o.partition("=")
                if k == "size":
                    m["TmpfsOptions"] = {"SizeBytes": V.parse_bytes(val)}
            out.append(m)
        return out

    def resources(self, name: str, d: dict[str, Any], deploy: dict[str, Any]) -> dict[str, Any]:
        res = deploy.get("resources") or {}
        lim, rsv = res.get("limits") or {}, res.get("reservations") or {}
        out: dict[str, Any] = {}
        limits: dict[str, Any] = {}
        cpus = lim.get("cpus", d.get("cpus"))
        if cpus is not None:
            limits["NanoCPUs"] = V.parse_cpus(cpus)
        mem = lim.get("memory", d.get("mem_limit"))
        if mem is not None:
            limits["MemoryBytes"] = V.parse_bytes(mem)
        if lim.get("pids"):
            limits["Pids"] = int(lim["pids"])
        reserv: dict[str, Any] = {}
        if rsv.get("cpus") is not None:
            reserv["NanoCPUs"] = V.parse_cpus(rsv["cpus"])
        rmem = rsv.get("memory", d.get("mem_reservation"))
        if rmem is not None:
            reserv["MemoryBytes"] = V.parse_bytes(rmem)
        if limits:
            out["Limits"] = limits
        if reserv:
            out["Reservations"] = reserv
        return out

    def restart(self, d: dict[str, Any], deploy: dict[str, Any]) -> dict[str, Any]:
        rp = deploy.get("restart_policy")
        if rp:
            out: dict[str, Any] = {"Condition": rp.get("condition", "any")}
            if rp.get("delay"):
                out["Delay"] = V.parse_duration(rp["delay"])
            if rp.get("max_attempts") is not None:
                out["MaxAttempts"] = int(rp["max_attempts"])
            if rp.get("window"):
                out["Window"] = V.parse_duration(rp["window"])
            return out
        r = d.get("restart")
        if r is None:
            return {}
        if r == "no":
            return {"Condition": "none"}
        if r.startswith("on-failure"):
            _, _, n = r.partition(":")
            return {"Condition": "on-failure", **({"MaxAttempts": int(n)} if n else {})}
        return {"Condition": "any"}

    def attachments(self, name: str, d: dict[str, Any], nets: dict[str, NetworkModel],
                    link_aliases: list[tuple[str, str]]) -> list[dict[str, Any]]:
        raw = d.get("networks")
        wanted: dict[str, list[str]] = {}
        if raw is None or self.cf.major == 1:
            wanted[DEFAULT_NETWORK] = []
        elif isinstance(raw, list):
            wanted = {n: [] for n in raw}
        else:
            wanted = {n: list((c or {}).get("aliases") or []) for n, c in raw.items()}
        out = []
        for key, aliases in wanted.items():
            if key not in nets:
                raise self.err(f"network {key!r} is not declared under the top-level 'networks' key",
                               "services", name, "networks")
            out.append({"Target": nets[key].name, "Aliases": list(dict.fromkeys([name, *aliases]))})
        return out

    def update_config(self, name: str, uc: dict[str, Any], aliyun: dict[str, str], host_mode: bool,
                      *, rollback: bool) -> dict[str, Any]:
        if rollback:
            par = int(uc.get("parallelism", 0))
        elif "parallelism" in uc:
            par = int(uc["parallelism"])
        elif "aliyun.rolling_updates.parallelism" in aliyun:
            par = _int_label(aliyun["aliyun.rolling_updates.parallelism"],
                             self.path("services", name, "labels", "aliyun.rolling_updates.parallelism"),
                             "aliyun.rolling_updates.parallelism")
        else:
            par = 1
        order = uc.get("order") or ("stop-first" if host_mode else "start-first")
        if order == "start-first" and host_mode:
            self.warn(f"service {name}: update order start-first with host-mode ports needs a free node for the "
                      "new container before the old one stops")
        out: dict[str, Any] = {
            "Parallelism": par,
            "FailureAction": uc.get("failure_action", "pause" if rollback else "rollback"),
            "Monitor": V.parse_duration(uc["monitor"]) if uc.get("monitor") else DEFAULT_MONITOR_NS,
            "Order": order,
        }
        if uc.get("delay"):
            out["Delay"] = V.parse_duration(uc["delay"])
        if uc.get("max_failure_ratio") is not None:
            out["MaxFailureRatio"] = float(uc["max_failure_ratio"])
        return out

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
