"""The `local` provider: every instance is a machine on this host.

Machine = its own network namespace (veth on a host bridge, an IP of `subnet`, no default route) +
a private mount+UTS namespace in which the cluster engine's node runtime (opencs.machine.NodeRuntime:
the Docker engine for Swarm) runs. Every process of the node (daemons, shims, containers) lives in
cgroup `/<netns name>` (the runtime is told to put its containers there), which is how stop/destroy/
crash recovery find them: by PID, never by process name.

On-disk layout, `root_dir/<instance_id>/`:
    state.json   IP, netns/veth/cgroup names, desired state, spec (TLS as file paths)
    (the runtime's API socket is /run/opencs/<hash of root_dir>/<id>.sock: unix socket paths are short)
    engine.pid   the runtime's PID (written by the launcher before it execs the runtime)
    tls/         the node's server certificate; the runtime's own files and dirs (its "system disk")
    registry-auth.json  the node's registry pull credential (0600), when the cluster engine gave one
"""

from __future__ import annotations

import builtins
import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from opencs import ids
from opencs.machine import BOOT_MOUNTS, MachineInfo, NodeRuntime, RegistryAuth, RuntimeSettings
from opencs.providers import localnet as net
from opencs.providers.base import (
    Capabilities,
    Instance,
    InstanceNotFound,
    InstanceSpec,
    InstanceState,
    Provider,
    ProviderUnavailable,
    TLSMaterial,
)

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^i-[a-z0-9]{20}$")
_STD_PATH = net.STD_PATH

# Runs as PID $$ inside the node's netns and fresh mount+UTS namespaces, then becomes the node
# runtime. Joining the cgroups comes first so that nothing of the node can escape them. Arguments:
# <n binds> (node path, source)..., <n tmpfs> (node path)..., then the runtime's argv.
_LAUNCH = r"""
set -e
for f in $OCS_CG_PROCS; do echo $$ > "$f"; done
echo $$ > "$OCS_DIR/engine.pid"
echo "$OCS_HOSTNAME" > /proc/sys/kernel/hostname
""" + BOOT_MOUNTS + r"""
# do not pin the other nodes' netns files
umount -l /run/netns 2>/dev/null || true
exec "$@"
"""

_check_cache: dict[str, str | None] = {}  # host property: computed once per process
_instance_locks: dict[tuple[str, str], threading.RLock] = {}
_instance_locks_guard = threading.Lock()


class LocalProviderError(RuntimeError):
    """A host operation failed (engine did not come up, command failed)."""


@dataclass
class _NodeState:
    instance_id: str
    ip: str
    prefixlen: int
    netns: str  # also the cgroup name in every hierarchy
    veth: str
    hostname: str
    desired: str  # "pending" (being created) | "running" | "stopped" | "destroying"
    created_at: float
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def cgroup(self) -> str:
        return self.netns


def _write_private(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)  # O_CREAT's mode does not apply to an existing file


class LocalProvider(Provider):
    name = "local"
    capabilities = Capabilities()

    def __init__(
        self,
        root_dir: Path,
        bridge: str = "ocs0",
        subnet: str = "10.213.0.0/24",
        prefix: str = "ocs",
        *,
        runtime: NodeRuntime | None = None,
        runtimes: dict[str, NodeRuntime] | None = None,
        start_timeout: float = 30.0,
        stop_grace: float = 10.0,
    ) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", prefix):
            raise ValueError("prefix: 1-8 lowercase alphanumerics starting with a letter")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", bridge):
            raise ValueError("bridge: an interface name of at most 15 characters")
        self.root_dir = Path(root_dir).absolute()
        self.bridge = bridge
        self.network = ipaddress.ip_network(subnet)
        if self.network.num_addresses < 4:
            raise ValueError("subnet too small")
        self.gateway_ip = next(self.network.hosts())
        self.prefix = prefix
        self.runtime = runtime  # what makes a machine a node; None: machines can be inspected/destroyed only
        # other cluster engines' node runtimes, by name (InstanceSpec.runtime; "" is `runtime`)
        self.runtimes = dict(runtimes or {})
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self._lock_path = self.root_dir / ".lock"

    # --- Provider interface -----------------------------------------------------------------------

    def check(self, runtime: str = "") -> None:
        rt = self.runtime if not runtime else self.runtimes.get(runtime)
        needs = rt.required_binaries if rt is not None else ()
        key = ",".join(needs)
        if key not in _check_cache:
            _check_cache[key] = net.probe_host(needs)
        if problem := _check_cache[key]:
            raise ProviderUnavailable(f"local provider unavailable: {problem}")

    def _runtime(self, name: str = "") -> NodeRuntime:
        rt = self.runtime if not name else self.runtimes.get(name)
        if rt is None:
            raise ProviderUnavailable(f"local provider unavailable: no node runtime {name or 'default'!r} configured")
        return rt

    def _runtime_of(self, st: _NodeState) -> NodeRuntime | None:
        name = str(st.spec.get("runtime") or "")
        return self.runtime if not name else self.runtimes.get(name)

    def create(self, spec: InstanceSpec) -> Instance:
        self.check(spec.runtime)
        self.root_dir.mkdir(parents=True, exist_ok=True)
        if spec.instance_id is not None and not _ID_RE.match(spec.instance_id):
            raise ValueError(f"instance_id must be 'i-' + 20 lowercase alphanumerics: {spec.instance_id!r}")
        with net.file_lock(self._lock_path):
            while True:  # a 10-char tag collision is astronomically unlikely, but names must be unique
                iid = spec.instance_id or ids.instance_id()
                netns, veth = net.node_names(self.prefix, iid)
                taken = [n for n in (netns, veth) if (net.NETNS_DIR / n).exists() or net.link_exists(n)]
                if self._dir(iid).exists():
                    taken.append(str(self._dir(iid)))
                if not taken:
                    break
                if spec.instance_id:  # the caller's id: never silently pick another one
                    raise LocalProviderError(f"{iid}: already in use on this host: {', '.join(taken)}")
            st = _NodeState(
                instance_id=iid,
                ip=self._free_ip(),
                prefixlen=self.network.prefixlen,
                netns=netns,
                veth=veth,
                hostname=iid,
                desired="pending",
                created_at=time.time(),
            )
            self._dir(iid).mkdir()
            st.spec = self._store_spec(st, spec, spec.tls)
            self._save(st)  # from here on destroy() can find and undo everything
        try:
            with self._ilock(iid):
                if spec.tls is None and spec.tls_factory is not None:
                    # outside the provider lock: the factory may generate keys
                    st.spec = self._store_spec(st, spec, spec.tls_factory(st.ip))
                    self._save(st)
                self._boot(st)
                st.desired = "running"
                self._save(st)
        except BaseException:
            self.destroy(iid)
            raise
        return self.inspect(iid)

    def start(self, instance_id: str) -> Instance:
        with self._ilock(instance_id):
            st = self._load(instance_id)
            if not self._engine_alive(st):
                self._boot(st)
            st.desired = "running"
            self._save(st)
        return self.inspect(instance_id)

    def stop(self, instance_id: str) -> Instance:
        with self._ilock(instance_id):
            st = self._load(instance_id)
            st.desired = "stopped"  # first: a concurrent adopt() must not restart it
            self._save(st)
            pid = self._pid(st)
            if self._engine_alive(st) and pid:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + self.stop_grace
                while net.pid_alive_in(pid, st.cgroup) and time.monotonic() < deadline:
                    time.sleep(0.05)
            net.cg_kill_all(st.cgroup)  # shims/containers that outlived the grace period
        return self.inspect(instance_id)

    def reset(self, instance_id: str, spec: InstanceSpec) -> Instance:
        with self._ilock(instance_id):
            st = self._load(instance_id)
            net.cg_kill_all(st.cgroup)  # like pulling the plug before re-imaging the disk
            d = self._dir(instance_id)
            if m := net.mounts_under(d):
                raise LocalProviderError(f"{instance_id}: mounts still present under {d}: {m}")
            old = self._runtime_of(st)  # re-imaging may change the runtime (attach): wipe both disks
            for sub in {*(old.state_dirs if old else ()), *self._runtime(spec.runtime).state_dirs, "tls"}:
                shutil.rmtree(d / sub, ignore_errors=True)
            tls = spec.tls or (spec.tls_factory(st.ip) if spec.tls_factory else None)
            st.spec = self._store_spec(st, spec, tls)
            st.desired = "pending"
            self._save(st)
            try:
                self._boot(st)
            finally:
                st.desired = "running"  # a failed boot then reads as unhealthy, and adopt() retries it
                self._save(st)
        return self.inspect(instance_id)

    def destroy(self, instance_id: str) -> None:
        if not _ID_RE.match(instance_id):
            return
        d = self._dir(instance_id)
        with self._ilock(instance_id):
            if d.is_dir():
                with net.file_lock(self._lock_path):  # create() makes the dir and state file under it
                    try:
                        st: _NodeState | None = self._load(instance_id)
                    except InstanceNotFound:
                        st = None  # an earlier destroy got as far as removing the state file
                if st is not None:
                    # first: a control plane restarted in the middle must not revive it (adopt)
                    st.desired = "destroying"
                    self._save(st)
                    net.cg_kill_all(st.cgroup)
                    net.cg_remove(st.cgroup)
                    net.delete_netns(st.netns, st.veth)
                if m := net.mounts_under(d):
                    raise LocalProviderError(f"{instance_id}: mounts still present under {d}: {m}")
                # the state file goes last so that a failed destroy can be retried
                for p in d.iterdir():
                    if p.name != "state.json":
                        if p.is_dir() and not p.is_symlink():
                            shutil.rmtree(p)
                        else:
                            p.unlink()
                (d / "state.json").unlink(missing_ok=True)
                d.rmdir()
            net.remove_socket(self.root_dir, instance_id)
        self.release_network()

    def release_network(self) -> None:
        """Remove the nodes' bridge once no instance uses it (also a half-made one that a killed
        control plane left before its first instance)."""
        with net.file_lock(self._lock_path):
            if not self._ids():
                net.remove_bridge(self.bridge)

    def inspect(self, instance_id: str) -> Instance:
        st = self._load(instance_id)
        return self._to_instance(st)

    def list(self) -> list[Instance]:
        out = []
        for iid in self._ids():
            with contextlib.suppress(InstanceNotFound):  # destroyed meanwhile
                out.append(self.inspect(iid))
        return out

    def adopt(self) -> builtins.list[Instance]:
        """Restart every node runtime that should run but is dead (reboot semantics)."""

        def revive(iid: str) -> None:
            try:
                with self._ilock(iid):
                    st = self._load(iid)
                    if st.desired in ("running", "pending") and not self._engine_alive(st):
                        log.warning("local instance %s: engine dead, restarting", iid)
                        self._boot(st)
                        st.desired = "running"
                        self._save(st)
            except Exception:
                log.exception("local instance %s: restart failed", iid)  # shows up as unhealthy

        if self.root_dir.is_dir():
            self.check()
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(revive, self._ids()))
        return self.list()

    # --- extras -----------------------------------------------------------------------------------

    def host_network(self) -> LocalProvider:
        return self  # the nodes' bridge: gateway_address, ensure_network()

    @property
    def gateway_address(self) -> str:
        return str(self.gateway_ip)

    def ensure_network(self) -> str:
        """Create the nodes' bridge if needed and return its address (where host services the
        nodes use, such as the bundled registry, listen)."""
        self.check()
        with net.file_lock(self._lock_path):
            net.ensure_bridge(self.bridge, f"{self.gateway_ip}/{self.network.prefixlen}")
        return str(self.gateway_ip)

    def node_pids(self, instance_id: str) -> builtins.list[int]:
        """Every process of the node (daemons, shims, containers)."""
        return net.cg_pids(self._load(instance_id).cgroup)

    def node_rss_bytes(self, instance_id: str) -> int:
        return net.rss_bytes(self.node_pids(instance_id))

    # --- internals --------------------------------------------------------------------------------

    def _dir(self, iid: str) -> Path:
        return self.root_dir / iid

    def _ilock(self, iid: str) -> threading.RLock:
        key = (str(self.root_dir), iid)
        with _instance_locks_guard:
            return _instance_locks.setdefault(key, threading.RLock())

    def _ids(self) -> builtins.list[str]:
        if not self.root_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.root_dir.iterdir() if _ID_RE.match(p.name) and (p / "state.json").exists()
        )

    def _load(self, iid: str) -> _NodeState:
        if not _ID_RE.match(iid):
            raise InstanceNotFound(iid)
        try:
            raw = json.loads((self._dir(iid) / "state.json").read_text())
        except FileNotFoundError:
            raise InstanceNotFound(iid) from None
        return _NodeState(**raw)

    def _save(self, st: _NodeState) -> None:
        path = self._dir(st.instance_id) / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(st), indent=2, sort_keys=True))
        os.replace(tmp, path)  # atomic: a crash never leaves half a state file

    def _free_ip(self) -> str:
        """Lowest free address after the bridge's; caller holds the provider lock."""
        used = {self._load(i).ip for i in self._ids()}
        for host in self.network.hosts():
            if host != self.gateway_ip and str(host) not in used:
                return str(host)
        raise LocalProviderError(f"no free address left in {self.network}")

    def _store_spec(self, st: _NodeState, spec: InstanceSpec, tls: TLSMaterial | None) -> dict[str, Any]:
        """Write the spec's files (TLS PEMs, keys 0600) and return its JSON form with file paths."""
        d = self._dir(st.instance_id)
        paths: dict[str, str] | None = None
        if tls is not None:
            tdir = d / "tls"
            tdir.mkdir(mode=0o700, exist_ok=True)
            paths = {"ca": str(tdir / "ca.pem"), "cert": str(tdir / "cert.pem"), "key": str(tdir / "key.pem")}
            _write_private(Path(paths["ca"]), tls.ca_pem, 0o644)
            _write_private(Path(paths["cert"]), tls.cert_pem, 0o644)
            _write_private(Path(paths["key"]), tls.key_pem, 0o600)
        auth = d / "registry-auth.json"  # the node's pull credential, 0600 like the TLS key
        if spec.registry_auth is not None:
            _write_private(auth, spec.registry_auth.to_json(), 0o600)
        else:
            auth.unlink(missing_ok=True)
        return {
            "tls": paths,
            "registry_auth": str(auth) if spec.registry_auth is not None else None,
            "labels": dict(spec.labels),
            "registry_mirror": spec.registry_mirror,
            "insecure_registries": list(spec.insecure_registries),
            "cpus": spec.cpus,
            "memory_bytes": spec.memory_bytes,
            "runtime": spec.runtime,
        }

    def _pid(self, st: _NodeState) -> int | None:
        try:
            return int((self._dir(st.instance_id) / "engine.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _engine_alive(self, st: _NodeState) -> bool:
        return net.pid_alive_in(self._pid(st), st.cgroup)

    def _sock(self, iid: str) -> Path:
        return net.socket_path(self.root_dir, iid)

    def _machine(self, st: _NodeState) -> MachineInfo:
        return MachineInfo(instance_id=st.instance_id, ip=st.ip, hostname=st.hostname, dir=self._dir(st.instance_id),
                           cgroup=st.cgroup, api_socket=self._sock(st.instance_id))

    @staticmethod
    def _settings(st: _NodeState) -> RuntimeSettings:
        spec = st.spec
        return RuntimeSettings(labels=dict(spec.get("labels") or {}), registry_mirror=spec.get("registry_mirror"),
                               insecure_registries=list(spec.get("insecure_registries") or []),
                               tls_files=spec.get("tls"), registry_auth=RegistryAuth.from_json(Path(a).read_text())
                               if (a := spec.get("registry_auth")) else None)

    def _answers(self, st: _NodeState, timeout: float = 1.0) -> bool:
        rt = self._runtime_of(st)
        return rt is not None and rt.answers(self._sock(st.instance_id), timeout)

    def _to_instance(self, st: _NodeState) -> Instance:
        alive = self._engine_alive(st)
        if alive and self._answers(st):
            state = InstanceState.RUNNING
        elif st.desired == "stopped" and not alive:
            state = InstanceState.STOPPED
        elif st.desired == "destroying":
            state = InstanceState.DESTROYED
        elif st.desired == "pending":
            state = InstanceState.PENDING
        else:
            state = InstanceState.UNHEALTHY
        rt = self._runtime_of(st)
        port = rt.tls_port(self._settings(st)) if rt is not None else None
        return Instance(
            instance_id=st.instance_id,
            provider=self.name,
            private_ip=st.ip,
            state=state,
            docker_host=f"unix://{self._sock(st.instance_id)}",
            tls_port=port,
            hostname=st.hostname,
            details={
                "unix_socket": str(self._sock(st.instance_id)),
                "tcp_endpoint": f"tcp://{st.ip}:{port}" if port else None,
                "dir": str(self._dir(st.instance_id)),
                "netns": st.netns,
                "veth": st.veth,
                "cgroup": st.cgroup,
                "bridge": self.bridge,
                "pid": self._pid(st) if alive else None,
                "labels": st.spec.get("labels", {}),
                "cpus": st.spec.get("cpus"),
                "memory_bytes": st.spec.get("memory_bytes"),
            },
        )

    def _boot(self, st: _NodeState) -> None:
        """(Re)start the node like a machine powering on. Caller holds the instance lock."""
        runtime = self._runtime(str(st.spec.get("runtime") or ""))
        d = self._dir(st.instance_id)
        # reboot semantics: shims and containers survive a kill -9 of the runtime and keep the old mount
        # ns, overlay netns and vxlan devices alive ("vxlan interface: file exists" after restart)
        net.cg_kill_all(st.cgroup)
        with net.file_lock(self._lock_path):
            net.ensure_bridge(self.bridge, f"{self.gateway_ip}/{self.network.prefixlen}")
            net.ensure_netns(st.netns, st.veth, self.bridge, f"{st.ip}/{st.prefixlen}")
        net.cg_create(st.cgroup)
        net.cg_set_limits(st.cgroup, st.spec.get("cpus"), st.spec.get("memory_bytes"))
        m = self._machine(st)
        plan = runtime.boot_plan(m, self._settings(st))
        for sub in runtime.state_dirs:
            (d / sub).mkdir(exist_ok=True)
        for rel, text in plan.files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            _write_private(d / rel, text, 0o600 if rel in plan.private else 0o644)
        (d / "engine.pid").unlink(missing_ok=True)
        self._sock(st.instance_id).unlink(missing_ok=True)

        env = {
            "PATH": os.environ.get("PATH", _STD_PATH) + ":" + _STD_PATH,
            "HOME": "/root",
            "LANG": "C.UTF-8",
            **plan.env,
            "OCS_DIR": str(d),
            "OCS_CG_PROCS": " ".join(str(net.CGROUP_ROOT / c / st.cgroup / "cgroup.procs") for c in net.NODE_CGROUPS),
            "OCS_HOSTNAME": st.hostname,
        }
        mounts = [str(len(plan.binds))]
        for node_path, sub in plan.binds.items():
            mounts += [node_path, str(d / sub)]
        mounts += [str(len(plan.tmpfs)), *plan.tmpfs]
        cmd = [
            "setsid", "--fork",  # detached: the runtime is reparented to init, never our zombie
            "unshare", "--mount", "--uts", "--propagation", "slave", "--",
            "nsenter", f"--net={net.NETNS_DIR / st.netns}", "--",
            "/bin/sh", "-c", _LAUNCH, "ocs-node", *mounts, *plan.argv,
        ]  # fmt: skip
        with open(d / plan.log_name, "ab") as logf:
            logf.write(f"--- boot {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            logf.flush()
            subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, check=True)
        try:
            self._wait_engine(st, Path(plan.argv[0]).name)
        except BaseException:
            net.cg_kill_all(st.cgroup)  # a half-started node must not keep running
            raise

    def _wait_engine(self, st: _NodeState, name: str) -> None:
        """Until the runtime (its first process `name`) answers, it dies, or start_timeout."""
        t0 = time.monotonic()
        while True:
            pid = self._pid(st)
            if pid is not None:
                if self._answers(st, timeout=2.0):
                    log.debug("local instance %s up in %.2fs", st.instance_id, time.monotonic() - t0)
                    return
                if not net.pid_alive_in(pid, st.cgroup):
                    raise LocalProviderError(f"{st.instance_id}: {name} exited: {self._log_tail(st)}")
            elif time.monotonic() - t0 > 10:
                raise LocalProviderError(f"{st.instance_id}: launcher did not start: {self._log_tail(st)}")
            if time.monotonic() - t0 > self.start_timeout:
                raise LocalProviderError(
                    f"{st.instance_id}: {name} did not answer in {self.start_timeout:.0f}s: "
                    + self._log_tail(st)
                )
            time.sleep(0.02)

    def _log_tail(self, st: _NodeState, lines: int = 5) -> str:
        try:
            rt = self._runtime_of(st)
            text = (self._dir(st.instance_id) / (rt.log_name if rt else "node.log")).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])




def local_provider_leftovers(prefix: str, bridge: str, root_dir: Path | None = None) -> list[str]:
    """Everything a LocalProvider with this prefix/bridge left on the host (empty = clean): links,
    netns, cgroups, processes, mounts (under root_dir too, if given), iptables rules, instance dirs."""
    return net.leftovers(prefix, bridge, root_dir)
