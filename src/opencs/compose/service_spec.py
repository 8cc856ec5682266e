"""Compose service definitions → Engine API ServiceSpecs (API 1.41), the half of the stack builder
that translates one service: container spec, task template, endpoint, update and rollback."""

from __future__ import annotations

import re
import shlex
from typing import Any

from opencs.compose import values as V
from opencs.compose.load import ComposeError, ComposeFile, fmt_path
from opencs.compose.models import (
    DEFAULT_MONITOR_NS,
    DEFAULT_NETWORK,
    IMAGE_LABEL,
    MAX_SERVICE_NAME,
    NAMESPACE_LABEL,
    PROJECT_LABEL,
    ROUTING_LABEL_PREFIX,
    SERVICE_LABEL,
    NetworkModel,
    Options,
    ServiceModel,
    VolumeModel,
    int_label,
    truthy,
)
from opencs.compose.restart import restart_policy


class ServiceSpecs:
    """Compose service definitions → Engine API ServiceSpecs (the service half of the builder)."""

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
        self._refuse_unsupported(name, d, P)
        labels = V.as_dict(d.get("labels"))
        aliyun = {k: v for k, v in labels.items() if k.startswith("aliyun.")}
        deploy = d.get("deploy") or {}
        image = d["image"]
        mode, replicas, ext, latest = self._extensions(d, aliyun, deploy, P)
        deps, link_aliases = self._dependencies(d, aliyun)
        cs = self._container_spec(name, d, labels, aliyun, image, vols, P)
        tt = self._task_template(name, d, deploy, cs, nets, link_aliases)
        endpoint, ports, published = self._endpoint(name, d, deploy, aliyun, P)

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

    def _refuse_unsupported(self, name: str, d: dict[str, Any], P: tuple[str, str]) -> None:
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


    def _extensions(self, d: dict[str, Any], aliyun: dict[str, str], deploy: dict[str, Any],
                    P: tuple[str, str]) -> tuple[str, int | None, dict[str, Any], bool]:
        """The Container Service labels: mode and replicas, logs, latest_image (spec §13)."""
        ext: dict[str, Any] = {}
        for k, v in aliyun.items():
            ext[k[len("aliyun."):]] = v
        mode = deploy.get("mode", "replicated")
        if truthy(aliyun.get("aliyun.global", "")):
            mode = "global"
        replicas: int | None
        if mode == "global":
            replicas = None
        elif "replicas" in deploy:
            replicas = int(deploy["replicas"])
        elif "scale" in d:
            replicas = int(d["scale"])
        elif "aliyun.scale" in aliyun:
            replicas = int_label(aliyun["aliyun.scale"], self.path(*P, "labels", "aliyun.scale"), "aliyun.scale")
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
        latest = truthy(aliyun.get("aliyun.latest_image", "")) or d.get("pull_policy") == "always"
        if latest:
            ext["latest_image"] = True
        return mode, replicas, ext, latest

    @staticmethod
    def _dependencies(d: dict[str, Any], aliyun: dict[str, str]) -> tuple[list[str], list[tuple[str, str]]]:
        """depends_on, links and aliyun.depends; and the link aliases the targets answer to."""
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
        return deps, link_aliases

    def _container_spec(self, name: str, d: dict[str, Any], labels: dict[str, str], aliyun: dict[str, str],
                        image: str, vols: dict[str, VolumeModel], P: tuple[str, str]) -> dict[str, Any]:
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
        cs.update(self._container_extras(name, d, P))
        hc = self.healthcheck(name, d, aliyun)
        if hc:
            cs["Healthcheck"] = hc
        mounts = self.mounts(name, d, vols)
        if mounts:
            cs["Mounts"] = mounts
        return cs

    def _container_extras(self, name: str, d: dict[str, Any], P: tuple[str, str]) -> dict[str, Any]:
        """DNS, extra hosts, capabilities, sysctls and ulimits of the container spec."""
        cs: dict[str, Any] = {}
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
        return cs

    def _task_template(self, name: str, d: dict[str, Any], deploy: dict[str, Any], cs: dict[str, Any],
                       nets: dict[str, NetworkModel], link_aliases: list[tuple[str, str]]) -> dict[str, Any]:
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
        return tt

    def _endpoint(self, name: str, d: dict[str, Any], deploy: dict[str, Any], aliyun: dict[str, str],
                  P: tuple[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]], list[tuple[int, str, str]]]:
        """Published ports (host mode without IPVS) and the endpoint mode."""
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
        return endpoint, ports, published

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
                out[api] = int_label(aliyun[key], self.path("services", name, "labels", key), key) * 10**9
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
        return restart_policy(d, deploy)

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
            par = int_label(aliyun["aliyun.rolling_updates.parallelism"],
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

