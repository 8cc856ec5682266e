"""The `ssh` provider: existing machines that already run Docker, registered by SSH login.

opencs does not own these machines, so it never creates, powers or re-images them:
    register  log in, check that the engine answers, pin the host key, store the credentials
              (encrypted with the SecretBox) and open the tunnel
    reset     `docker swarm leave --force` and remove the containers the cluster made; nothing else
              (no re-imaging; no TLS endpoint on 2376 is configured on a foreign host: tls_port=None).
              With a node runtime of opencs's own (InstanceSpec.runtime: Kubernetes) it boots that
              on the host instead, under names of the instance's (sshnode.py); a reset back, or
              destroy, removes all of it from the host
    destroy   forget the host (its node removed, swarm leave, close the tunnel, delete the record)
    create, start, stop   refused with ProviderUnavailable
The control plane reaches the engine through `/run/opencs/<hash>/<id>.sock`, a unix socket tunnelled over
SSH to the host's Docker socket (sshtunnel.HostTunnel). Swarm traffic does not use the tunnel: swarm
joins advertise the host's own address (`private_ip`), so nodes talk to each other directly.

On-disk layout, `root_dir/<instance_id>/`:
    host.json    target, pinned host key, engine identity, credentials (Fernet token only); mode 0600
    (the tunnel socket, Instance.docker_host, 0600, lives under /run/opencs: socket paths are short)
"""

from __future__ import annotations

import builtins
import concurrent.futures
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncssh

from opencs import ids
from opencs.machine import HostShell, NodeRuntime, RuntimeSettings, ShellResult
from opencs.providers import localnet as net
from opencs.providers import sshnode
from opencs.providers.base import (
    Capabilities,
    Instance,
    InstanceNotFound,
    InstanceSpec,
    InstanceState,
    Provider,
    ProviderUnavailable,
)
from opencs.providers.local import _ID_RE, _write_private
from opencs.providers.sshtunnel import (
    DEFAULT_REMOTE_SOCKET,
    HostTunnel,
    LoopShell,
    LoopThread,
    SshAuth,
    SshError,
    SshTarget,
    connect,
    engine_get,
    explain_no_engine,
    host_key_text,
    parse_host_key,
    run_script,
    sftp_put,
    socket_answers,
)
from opencs.secretbox import SecretBox

log = logging.getLogger(__name__)


__all__ = ["DEFAULT_REMOTE_SOCKET", "SshError", "SshProvider"]


@dataclass
class _HostRecord:
    instance_id: str
    user: str
    host: str
    port: int
    private_ip: str  # the address the SSH connection reached; swarm advertises it
    remote_socket: str
    host_key: str  # OpenSSH public key, pinned for every later connection
    host_key_source: str  # "given" | "first-use"
    auth_kind: str  # "key" | "password" | "key+password" (never the secret itself)
    secret: str  # SecretBox token of the credentials
    hostname: str
    engine_id: str
    engine_version: str
    os: str
    arch: str
    registered_at: float
    node: dict[str, str] | None = None  # a node runtime booted on the host (sshnode.SshNode), if any

    @property
    def target(self) -> SshTarget:
        return SshTarget(self.user, self.host, self.port)


@dataclass
class _Probe:
    host_key: asyncssh.SSHKey
    peer_ip: str
    info: dict[str, Any]


class SshProvider(Provider):
    name = "ssh"
    # hosts opencs does not own: registered, never created, powered or re-imaged; their own engine
    # configuration (no opencs TLS port)
    capabilities = Capabilities(creates=False, registers=True, reimages=False, tls_endpoint=False)

    def __init__(self, root_dir: Path, box: SecretBox, *, runtime: NodeRuntime | None = None,
                 runtimes: dict[str, NodeRuntime] | None = None, connect_timeout: float = 10.0,
                 ping_timeout: float = 5.0) -> None:
        self.root_dir = Path(root_dir).absolute()
        self.box = box
        self.runtime = runtime  # the cluster engine's node software on these hosts (leave/clean on reset)
        # node runtimes opencs boots on a host itself (InstanceSpec.runtime: Kubernetes), sshnode.py
        self.runtimes = dict(runtimes or {})
        self.connect_timeout = connect_timeout
        self.ping_timeout = ping_timeout
        self._lock_path = self.root_dir / ".lock"
        self._lt: LoopThread | None = None
        self._lt_guard = threading.Lock()
        self._tunnels: dict[str, HostTunnel] = {}  # mutated on the loop thread only
        self._ilocks: dict[str, threading.RLock] = {}

    # --- registration ----------------------------------------------------------------------------

    def register(self, target: str, *, password: str | None = None, private_key: str | None = None,
                 known_host_key: str | None = None, remote_socket: str | None = None) -> Instance:
        """Check that we can log in and that the engine answers, then record the host and open its
        tunnel. Raises SshError (code + message naming what failed)."""
        remote_socket = remote_socket or DEFAULT_REMOTE_SOCKET
        tgt = SshTarget.parse(target)
        auth = SshAuth(password=password or None, private_key=private_key or None)
        if not remote_socket.startswith("/") or "\0" in remote_socket:
            raise SshError("InvalidParameter", f"remote_socket must be an absolute path: {remote_socket!r}")
        pinned = parse_host_key(known_host_key) if known_host_key else None
        budget = self.connect_timeout * 2 + 60  # login + engine probe + diagnosis, each with its own limit
        try:
            probe = self._loop().run(self._probe(tgt, auth, pinned, remote_socket), budget)
        except concurrent.futures.TimeoutError:
            raise SshError("SshUnreachable", f"{tgt}: no complete answer within {budget:.0f}s") from None
        info = probe.info
        sw = (info.get("Swarm") or {}).get("LocalNodeState") or "inactive"
        if sw != "inactive":
            # a foreign swarm's worker would look "joined" to the cluster code; leaving is the owner's call
            raise SshError("HostInSwarm", f"{tgt.host} already belongs to a swarm (state {sw}): run "
                                          "`docker swarm leave` on it first")
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.root_dir.chmod(0o700)
        with net.file_lock(self._lock_path):
            for other in self._records():
                same_engine = info.get("ID") and other.engine_id == info.get("ID")
                same_addr = (other.private_ip, other.port, other.remote_socket) == (
                    probe.peer_ip, tgt.port, remote_socket)
                if same_engine or same_addr:
                    raise SshError("InstanceAlreadyRegistered",
                                   f"{tgt.host}'s engine is already registered as {other.instance_id}")
            iid = ids.instance_id()
            while self._dir(iid).exists():
                iid = ids.instance_id()
            rec = _HostRecord(
                instance_id=iid, user=tgt.user, host=tgt.host, port=tgt.port, private_ip=probe.peer_ip,
                remote_socket=remote_socket, host_key=host_key_text(probe.host_key),
                host_key_source="given" if pinned else "first-use", auth_kind=auth.kind,
                secret=self.box.encrypt(auth.to_json()), hostname=str(info.get("Name") or tgt.host),
                engine_id=str(info.get("ID") or ""), engine_version=str(info.get("ServerVersion") or ""),
                os=str(info.get("OperatingSystem") or ""), arch=str(info.get("Architecture") or ""),
                registered_at=time.time(),
            )
            self._dir(iid).mkdir(mode=0o700)
            self._save(rec)
        log.info("ssh host %s registered as %s (engine %s)", tgt, iid, rec.engine_version)
        try:
            self._loop().run(self._ensure_tunnel(rec), 15)
        except Exception:
            self.destroy(iid)
            raise
        return self.inspect(iid)

    async def _probe(self, tgt: SshTarget, auth: SshAuth, pinned: asyncssh.SSHKey | None,
                     remote_socket: str) -> _Probe:
        conn = await connect(tgt, auth, pinned, self.connect_timeout)
        try:
            key = conn.get_server_host_key()
            assert key is not None
            peer = conn.get_extra_info("peername")
            try:
                info = await engine_get(conn, remote_socket, "/info", 20)
            except (asyncssh.Error, OSError, TimeoutError, SshError) as e:
                raise await explain_no_engine(conn, tgt, remote_socket, e) from None
            return _Probe(key, str(peer[0]) if peer else tgt.host, info)
        finally:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()

    # --- Provider interface -----------------------------------------------------------------------

    def check(self) -> None:
        return None  # pure Python (asyncssh): usable wherever opencs runs

    def create(self, spec: InstanceSpec) -> Instance:
        raise ProviderUnavailable("ssh hosts are registered, not created: opencs instances register --ssh …")

    def start(self, instance_id: str) -> Instance:
        self._load(instance_id)
        raise ProviderUnavailable(f"{instance_id} is an ssh host: opencs does not power it on or off")

    def stop(self, instance_id: str) -> Instance:
        self._load(instance_id)
        raise ProviderUnavailable(f"{instance_id} is an ssh host: opencs does not power it on or off")

    def reset(self, instance_id: str, spec: InstanceSpec) -> Instance:
        """What "re-imaging" can mean on a machine we do not own: leave the swarm and remove the
        containers the cluster made. Engine settings of `spec` (TLS on 2376, labels, registry mirror,
        limits) are NOT applied: that is the host's own dockerd configuration."""
        if spec.runtime:
            return self._boot_node(instance_id, spec)
        with self._ilock(instance_id):
            rec = self._load(instance_id)
            if rec.node is not None:
                self._remove_node(rec)
            if spec.tls is not None or spec.tls_factory is not None:
                log.info("ssh host %s: no TLS endpoint configured on a foreign host (tls_port=None)", instance_id)
            inst = self.inspect(instance_id)
            if inst.state != InstanceState.RUNNING:
                raise SshError("SshUnreachable", f"{instance_id} ({rec.target}): engine not reachable, cannot "
                                                 f"reset it: {inst.details.get('last_error') or 'no answer'}")
            if self.runtime is None:
                raise ProviderUnavailable("ssh provider: no node runtime configured to reset hosts with")
            self.runtime.release_host(inst.docker_host, remove_cluster_work=True, timeout=60)
        return self.inspect(instance_id)

    def destroy(self, instance_id: str) -> None:
        if not _ID_RE.match(instance_id):
            return
        with self._ilock(instance_id):
            try:
                rec = self._load(instance_id)
                if rec.node is not None:
                    self._remove_node(rec)
            except InstanceNotFound:
                pass
            except sshnode.TeardownFailed:
                raise  # the host answered: keep its record, so that a retry removes the rest
            except OSError as e:  # a dead host is forgotten all the same
                log.warning("ssh host %s: its node could not be removed (host unreachable): %s", instance_id, e)
            try:
                rec = self._load(instance_id)
                self._loop().run(self._ensure_tunnel(rec), 15)
                if self.runtime is not None:
                    self.runtime.release_host(f"unix://{self._sock(instance_id)}", remove_cluster_work=False,
                                              timeout=15)
            except InstanceNotFound:
                pass
            except Exception as e:  # a dead host is forgotten all the same
                log.info("ssh host %s: swarm leave skipped: %s", instance_id, e)
            if self._lt is not None:
                self._loop().run(self._drop_tunnel(instance_id), 15)
            # the record goes last, so that a failed destroy can be retried
            for p in sorted(self._dir(instance_id).glob("*"), key=lambda p: p.name == "host.json"):
                p.unlink(missing_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self._dir(instance_id).rmdir()
            net.remove_socket(self.root_dir, instance_id)

    def inspect(self, instance_id: str) -> Instance:
        rec = self._load(instance_id)
        try:
            self._loop().run(self._ensure_tunnel(rec), 15)
        except Exception as e:
            log.warning("ssh host %s: cannot open the tunnel socket: %s", instance_id, e)
        sock = self._sock(instance_id)
        node_info: dict[str, Any] = {}
        if rec.node is not None:
            node = sshnode.SshNode.of(rec.node)
            try:
                alive = sshnode.alive(self.host_shell(instance_id), node)
            except OSError:
                alive = False
            node_info = {"node_dir": node.dir, "cgroup": node.cgroup, "node_socket": node.socket,
                         "device": node.device, "runtime": node.runtime}
        else:
            # through the tunnel itself: this is exactly the path the cluster code will use
            alive = self.runtime is not None and self.runtime.answers(sock, timeout=self.ping_timeout)
        tunnel = self._tunnels.get(instance_id)  # read-only peek from this thread
        return Instance(
            instance_id=rec.instance_id,
            provider=self.name,
            private_ip=rec.private_ip,
            state=InstanceState.RUNNING if alive else InstanceState.UNHEALTHY,
            docker_host=f"unix://{sock}",
            tls_port=None,  # the host's own engine: no opencs TLS endpoint on 2376
            hostname=rec.hostname,
            details={
                "ssh": str(rec.target),
                "auth": rec.auth_kind,
                "remote_socket": rec.remote_socket,
                "unix_socket": str(sock),
                "host_key": asyncssh.import_public_key(rec.host_key).get_fingerprint("sha256"),
                "host_key_source": rec.host_key_source,
                "engine_id": rec.engine_id,
                "engine_version": rec.engine_version,
                "os": rec.os,
                "arch": rec.arch,
                "dir": str(self._dir(instance_id)),
                "tls": None,
                "tcp_endpoint": None,
                "last_error": None if alive else (tunnel.last_error if tunnel else None) or "engine does not answer",
                **node_info,
            },
        )

    def list(self) -> builtins.list[Instance]:
        iids = self._ids()
        if not iids:
            return []

        def one(iid: str) -> Instance | None:
            try:
                return self.inspect(iid)
            except InstanceNotFound:  # forgotten meanwhile
                return None

        # in parallel: one dead host must not add its timeout to every other host's
        with ThreadPoolExecutor(max_workers=min(8, len(iids))) as pool:
            return [i for i in pool.map(one, iids) if i is not None]

    def adopt(self) -> builtins.list[Instance]:
        """After a restart: serve every registered host's tunnel socket again (SSH dials on demand), and
        start a node of opencs's own that is not running again (reboot semantics, as the local provider)."""
        for rec in self._records():
            try:
                self._loop().run(self._ensure_tunnel(rec), 15)
                if rec.node is not None:
                    self._keep_up(rec.instance_id, sshnode.SshNode.of(rec.node))
            except Exception:
                log.exception("ssh host %s: cannot re-open its tunnel or start its node", rec.instance_id)
        return self.list()

    def close(self) -> None:
        """Close every tunnel and SSH connection and stop the loop thread (process shutdown, tests)."""
        with self._lt_guard:
            lt, self._lt = self._lt, None
        if lt is None:
            return
        with contextlib.suppress(Exception):
            lt.run(self._drop_all(), 15)
        lt.stop()
        self._tunnels.clear()  # tunnels belong to the stopped loop; a later call starts afresh

    def host_shell(self, instance_id: str) -> HostShell:
        self._load(instance_id)  # InstanceNotFound for a host that is not registered
        return LoopShell(instance_id, self._loop, lambda script, timeout: self._run(instance_id, script, timeout),
                         lambda files: self._put(instance_id, files))

    # --- a node runtime of opencs's own on the host (sshnode.py) ---------------------------------

    def _boot_node(self, instance_id: str, spec: InstanceSpec) -> Instance:
        rt = self.runtimes.get(spec.runtime)
        if rt is None:
            raise ProviderUnavailable(f"the ssh provider has no {spec.runtime!r} node runtime")
        with self._ilock(instance_id):
            rec = self._load(instance_id)
            if rec.node is not None:  # re-imaging: the old node goes first
                self._remove_node(rec)
            shell = self.host_shell(instance_id)
            try:
                m = sshnode.machine(instance_id, rec.private_ip, rec.hostname, sshnode.device_of(shell, rec.private_ip))
                plan = rt.boot_plan(m, RuntimeSettings(
                    labels=dict(spec.labels), registry_mirror=spec.registry_mirror,
                    insecure_registries=list(spec.insecure_registries), registry_auth=spec.registry_auth))
                node = sshnode.SshNode.made(spec.runtime, m, plan)
                rec.node = asdict(node)
                self._save(rec)  # first: a failed boot is removed by these names
                sshnode.boot(shell, m, plan, node)
                sshnode.wait_up(shell, node, lambda: self._answers(instance_id, node.socket))
            except OSError as e:
                with contextlib.suppress(OSError):
                    self._remove_node(rec)
                raise SshError("NodeBootFailed", f"{instance_id} ({rec.target}): {e}") from None
        return self.inspect(instance_id)

    def _keep_up(self, instance_id: str, node: sshnode.SshNode) -> None:
        with self._ilock(instance_id):
            if sshnode.keep_up(self.host_shell(instance_id), node, lambda: self._answers(instance_id, node.socket)):
                log.warning("ssh host %s: its %s node was not running: started again", instance_id, node.runtime)

    def _remove_node(self, rec: _HostRecord) -> None:
        """Stop the node runtime on the host and remove everything it made there (sshnode.teardown)."""
        assert rec.node is not None
        sshnode.teardown(self.host_shell(rec.instance_id), sshnode.SshNode.of(rec.node))
        rec.node = None
        self._save(rec)

    def _answers(self, instance_id: str, remote_socket: str) -> bool:
        """The runtime accepts a connection on its socket on the host (a direct-streamlocal channel)."""
        async def probe() -> bool:
            return await socket_answers(await self._tunnels[instance_id].connection(), remote_socket)

        try:
            return self._loop().run(probe(), self.ping_timeout + 10)
        except (SshError, concurrent.futures.TimeoutError, KeyError):
            return False

    async def _put(self, instance_id: str, files: Mapping[str, tuple[bytes, int]]) -> None:
        """Files over one SFTP session: each written beside its place, then renamed over it."""
        await sftp_put(await self._connection(instance_id), files)

    async def _run(self, instance_id: str, script: str, timeout: float) -> ShellResult:
        """One command over the host's kept SSH connection."""
        return await run_script(await self._connection(instance_id), script, timeout)

    async def _connection(self, instance_id: str) -> asyncssh.SSHClientConnection:
        """The host's kept SSH connection (the tunnel's: dialled again if it dropped)."""
        await self._ensure_tunnel(self._load(instance_id))
        return await self._tunnels[instance_id].connection()

    # --- internals --------------------------------------------------------------------------------

    def _loop(self) -> LoopThread:
        with self._lt_guard:
            if self._lt is None:
                self._lt = LoopThread(f"opencs-ssh-{id(self):x}")
            return self._lt

    async def _ensure_tunnel(self, rec: _HostRecord) -> None:
        t = self._tunnels.get(rec.instance_id)
        if t is None:
            auth = SshAuth.from_json(self.box.decrypt(rec.secret))
            t = HostTunnel(rec.instance_id, rec.target, auth, asyncssh.import_public_key(rec.host_key),
                           rec.remote_socket, self._sock(rec.instance_id), self.connect_timeout)
            self._tunnels[rec.instance_id] = t
        await t.listen()

    async def _drop_tunnel(self, iid: str) -> None:
        t = self._tunnels.pop(iid, None)
        if t is not None:
            await t.close()

    async def _drop_all(self) -> None:
        for iid in builtins.list(self._tunnels):
            await self._drop_tunnel(iid)

    def _ilock(self, iid: str) -> threading.RLock:
        with self._lt_guard:
            return self._ilocks.setdefault(iid, threading.RLock())

    def _dir(self, iid: str) -> Path:
        return self.root_dir / iid

    def _sock(self, iid: str) -> Path:
        return net.socket_path(self.root_dir, iid)  # short: unix socket paths are at most 107 bytes

    def _ids(self) -> builtins.list[str]:
        if not self.root_dir.is_dir():
            return []
        return sorted(p.name for p in self.root_dir.iterdir() if _ID_RE.match(p.name) and (p / "host.json").exists())

    def _records(self) -> builtins.list[_HostRecord]:
        out = []
        for iid in self._ids():
            with contextlib.suppress(InstanceNotFound):
                out.append(self._load(iid))
        return out

    def _load(self, iid: str) -> _HostRecord:
        if not _ID_RE.match(iid):
            raise InstanceNotFound(iid)
        try:
            raw = json.loads((self._dir(iid) / "host.json").read_text())
        except FileNotFoundError:
            raise InstanceNotFound(iid) from None
        return _HostRecord(**raw)

    def _save(self, rec: _HostRecord) -> None:
        path = self._dir(rec.instance_id) / "host.json"
        tmp = path.with_suffix(".tmp")
        _write_private(tmp, json.dumps(asdict(rec), indent=2, sort_keys=True), 0o600)
        os.replace(tmp, path)
