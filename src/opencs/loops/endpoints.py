"""The endpoint manager: one mTLS listener (master_url) per live Swarm cluster, kept in line with the store,
and one per Kubernetes cluster (opencs.appapi.kube_frontend: the kubeconfig's server, in front of
kube-apiserver) when the process is given its KubeBackends.

A daemon thread runs an asyncio loop. About once a second it reads the clusters and their
managers from the store, starts a ClusterFrontend for each cluster that is running, scaling or
updating and has nodes (or is launching and already has a swarm manager), stops the ones of
clusters that went away (deleting, deleted, failed, stopped) and writes
`Cluster.master_url = https://<advertised host>:<port>`. The cluster tasks call `sync()` before
they mark a cluster running, so master_url is set when DescribeCluster first says "running".

Persisted per cluster so that master_url and the certificate survive restarts:
  * `appapi_port`: the port, chosen once from the configured range;
  * `appapi_tls`: the endpoint's server certificate (issued by the cluster CA) and its key,
    encrypted with the SecretBox. Re-issued when the advertised host changes, the CA changes or it
    comes within 30 days of expiry.

This loop owns the listeners and nothing else. Several processes may share one database: the loop
runs in the one holding the `endpoints` lease (opencs.loops.leased), which binds the same recorded
ports on takeover, so master_url does not change; `fence` (the lease's) guards every bind and every
write of a port or master_url.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from opencs import metrics
from opencs.appapi.asgi_bridge import AppHost, ASGIApp
from opencs.appapi.frontend import ClusterFrontend
from opencs.appapi.guard import AppApiGuard
from opencs.appapi.kube_frontend import KubeFrontend
from opencs.appapi.tlsstream import client_context, server_context
from opencs.pki.ca import CertAuthority, not_after, verify_chain
from opencs.secretbox import SecretBox
from opencs.store.repos.endpoints import EndpointRepo, EndpointTarget

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("opencs.appapi")

REISSUE_BEFORE = _dt.timedelta(days=30)
# A persisted port that stays taken (by another program) this long is given up for a new one.
REALLOCATE_AFTER = 10.0
# A periodic pass reads every cluster and node only when the store's change mark moved, or this
# long after the last full read (the mark misses the rare write stamped older than the newest one).
FULL_SCAN_AFTER = 10.0

AppFactory = Callable[[], ASGIApp]


class KubeBackends(Protocol):
    """What the listener of a Kubernetes cluster needs of its engine."""

    @property
    def cluster_types(self) -> tuple[str, ...]:
        """The clusters' types in the store (dedicated and managed)."""
        ...

    def apiservers(self, cluster_id: str) -> list[str]:
        """The apiserver's https:// URLs (the HA load balancer's); [] while it has none."""
        ...

    def front_proxy(self, cluster_id: str) -> tuple[str, str, str]:
        """(the CA the apiserver's certificate is verified with, a front-proxy-client certificate, its key)."""
        ...


@dataclass(frozen=True)
class EndpointSettings:
    bind_host: str = "127.0.0.1"  # where the listeners bind
    advertise_host: str = ""  # host in master_url and the certificate; default bind_host
    port_range: tuple[int, int] = (17000, 17999)  # one port per cluster, kept across restarts
    interval: float = 1.0


class EndpointManager:
    name = "endpoints"

    def __init__(self, settings: EndpointSettings, repo: EndpointRepo, box: SecretBox, app_factory: AppFactory,
                 guard: AppApiGuard | None = None,
                 fence: Callable[[], AbstractContextManager[object]] | None = None,
                 on_pass: Callable[[float], None] | None = None, kube: KubeBackends | None = None) -> None:
        self.repo = repo
        self.kube = kube
        self.on_pass = on_pass  # told of each reconcile pass done (when it began): others wait for it
        self.fence = fence or nullcontext  # raises LeaseLost once another process holds the duty
        self.box = box
        self.guard = guard  # who may call (per-user certificates, policies, audit); None: the CA decides
        self.interval = settings.interval
        self._app_factory = app_factory
        self.bind_host: str = settings.bind_host
        self.advertise_host: str = settings.advertise_host or settings.bind_host
        self.port_range: tuple[int, int] = (int(settings.port_range[0]), int(settings.port_range[1]))
        if self.advertise_host in ("0.0.0.0", "::", ""):
            log.warning("appapi_host %r is no address clients can use: set appapi_advertise_host", self.bind_host)
        self._app: AppHost | None = None
        self._frontends: dict[str, ClusterFrontend] = {}
        self._bind_failures: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        # the change mark of the store when the last full pass began and left nothing to retry, and
        # when (monotonic); None: the next pass reads everything
        self._settled: tuple[tuple[Any, ...], float] | None = None

    # ------------------------------------------------------------ public

    def start(self, timeout: float = 30.0) -> None:
        """Start the loop thread; returns once the first reconcile pass is done."""
        if self._thread is not None:
            return
        # made here, not in the loop, so that stop() works even before the loop got going
        self._stopping, self._lock = asyncio.Event(), asyncio.Lock()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name="opencs-appapi", daemon=True)
        self._thread.start()
        ready.wait(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """Close every listener and connection, then the loop."""
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if thread is None:
            return
        if stopping is not None:
            if loop is None:
                stopping.set()  # the loop has not started: nothing else touches the event yet
            else:
                with contextlib.suppress(RuntimeError):  # loop already closed
                    loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("appapi thread did not stop within %.0fs", timeout)
        self._thread = None
        self._loop = None

    def sync(self, timeout: float = 60.0) -> None:
        """One reconcile pass now (from another thread), e.g. right after a cluster changed."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._stopping is None or self._stopping.is_set():
            raise RuntimeError("the endpoint manager is not running")
        asyncio.run_coroutine_threadsafe(self._reconcile(), loop).result(timeout)

    def port(self, cluster_id: str) -> int | None:
        f = self._frontends.get(cluster_id)
        return f.port if f else None

    def url(self, port: int) -> str:
        host = self.advertise_host
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return f"https://{host}:{port}"

    @property
    def clusters(self) -> list[str]:
        return list(self._frontends)

    # ------------------------------------------------------------ loop

    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready))
        except Exception:
            log.exception("appapi loop failed")
        finally:
            ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        assert self._stopping is not None
        try:
            await self._start_app()
            try:
                await self._reconcile()
            except Exception:
                log.exception("appapi reconcile failed")
            ready.set()
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.interval)
                if self._stopping.is_set():
                    break
                try:
                    await self._reconcile(periodic=True)
                    metrics.loop_pass(self.name, True)
                except Exception:
                    metrics.loop_pass(self.name, False)
                    log.exception("appapi reconcile failed")
        finally:
            for cid in list(self._frontends):
                await self._frontends.pop(cid).stop()
            if self._app is not None:
                await self._app.shutdown()

    async def _start_app(self) -> None:
        # Whatever goes wrong with the app, the Docker API part of every endpoint still serves.
        try:
            app = self._app_factory()
        except ModuleNotFoundError as e:
            if e.name != "opencs.appapi.app":
                log.exception("Application API app cannot be loaded: /projects, /services, /volumes answer 503")
            else:
                log.warning("opencs.appapi.app is not installed: /projects, /services, /volumes answer 503")
            return
        except Exception:
            log.exception("Application API app cannot be created: /projects, /services, /volumes answer 503")
            return
        host = AppHost(app)
        try:
            await host.startup()
        except Exception:
            log.exception("Application API app failed to start: /projects, /services, /volumes answer 503")
            return
        self._app = host

    async def _reconcile(self, periodic: bool = False) -> None:
        started = time.time()
        if await self._reconcile_once(periodic) and self.on_pass is not None:
            await asyncio.to_thread(self.on_pass, started)

    async def _reconcile_once(self, periodic: bool = False) -> bool:
        """One pass; False when a periodic one found the store's change mark where the last full
        pass left it (at 10,000 clusters reading every cluster and node once a second was a
        third of the time the API's process held the GIL). A skipped pass is not reported to
        on_pass: processes waiting for the endpoints to see their write wait for a full one."""
        assert self._lock is not None
        async with self._lock:
            mark = await asyncio.to_thread(self.repo.change_mark)
            settled = self._settled
            if (periodic and settled is not None and settled[0] == mark
                    and time.monotonic() - settled[1] < FULL_SCAN_AFTER):
                return False
            self._settled = None
            began = time.monotonic()
            targets = await asyncio.to_thread(self._scan)
            taken: set[int] | None = None  # read when an endpoint is to start: most passes start none
            retry = any(t.cluster_type not in ("swarm",) for t in targets.values())  # apiservers: not in the store
            for cid in [c for c in self._frontends if c not in targets]:
                log.info("appapi %s: stopping the endpoint on port %d", cid, self._frontends[cid].port)
                await self._frontends.pop(cid).stop()
            for cid, t in targets.items():
                f = self._frontends.get(cid)
                if f is None:
                    # a launching cluster once its swarm exists: the create task is about to finish
                    if not t.has_nodes or (t.state == "launching" and not t.managers):
                        continue
                    if t.cluster_type != "swarm" and not t.managers:  # no apiserver endpoint yet
                        continue
                    try:
                        if taken is None:
                            taken = await asyncio.to_thread(self.repo.ports_taken)
                        f = await self._start_frontend(t, taken)
                    except Exception:
                        log.exception("appapi %s: cannot start the endpoint", cid)
                        retry = True
                        continue
                    if f is None:
                        retry = True
                        continue
                    self._frontends[cid] = f
                    taken.add(f.port)
                f.set_managers(t.managers)
                url = self.url(f.port)
                if t.master_url != url:
                    await asyncio.to_thread(self._set_master_url, cid, url)
            if not retry:
                self._settled = (mark, began)
            return True

    async def _start_frontend(self, t: EndpointTarget, taken: set[int]) -> ClusterFrontend | None:
        cid = t.cluster_id
        kube = t.cluster_type != "swarm"
        ctx, port, upstream = await asyncio.to_thread(self._prepare, cid, kube)
        lo, hi = self.port_range
        failing_since = self._bind_failures.get(cid)
        if port is not None and lo <= port <= hi and (
            failing_since is None or time.monotonic() - failing_since < REALLOCATE_AFTER
        ):
            candidates = [port]  # keep master_url stable
        else:
            candidates = [p for p in range(lo, hi + 1) if p not in taken]
        await asyncio.to_thread(self._fenced)  # bind only while this process holds the duty
        for p in candidates:
            if upstream is not None:
                f: ClusterFrontend = KubeFrontend(cid, ctx, upstream, t.managers, self.bind_host, p, self.guard)
            else:
                f = ClusterFrontend(cid, ctx, self._app, t.managers, self.bind_host, p, self.guard)
            try:
                await f.start()
            except OSError as e:
                if p == port and len(candidates) == 1:
                    if failing_since is None:
                        self._bind_failures[cid] = time.monotonic()
                        log.warning("appapi %s: port %d is taken (%s); retrying", cid, p, e)
                    return None
                continue
            if p != port:
                try:
                    await asyncio.to_thread(self._persist_port, cid, p)
                except BaseException:
                    await f.stop()
                    raise
                if port is not None:
                    log.warning("appapi %s: moved from port %d to %d", cid, port, p)
            self._bind_failures.pop(cid, None)
            log.info("appapi %s: listening on %s:%d", cid, self.bind_host, p)
            return f
        log.error("appapi %s: no free port in %d-%d", cid, lo, hi)
        return None

    # ------------------------------------------------------------ store (worker threads)

    def _scan(self) -> dict[str, EndpointTarget]:
        kube = self.kube.cluster_types if self.kube is not None else ()
        targets = self.repo.scan(("swarm", *kube))  # one read of the clusters per pass
        if self.kube is not None:
            for cid, t in targets.items():
                if t.cluster_type in kube:
                    t.managers = self.kube.apiservers(cid)
        return targets

    def _sans(self) -> tuple[list[str], list[str]]:
        """(IPs, DNS names) for the server certificate: the advertised host and a concrete bind IP;
        issue_server adds 127.0.0.1 and localhost."""
        ips: list[str] = []
        dns: list[str] = []
        for h in (self.advertise_host, self.bind_host):
            try:
                ip = ipaddress.ip_address(h)
            except ValueError:
                if h and h not in dns:
                    dns.append(h)
                continue
            if not ip.is_unspecified and str(ip) not in ips:
                ips.append(str(ip))
        return ips, dns

    def _prepare(self, cluster_id: str, kube: bool = False
                 ) -> tuple[ssl.SSLContext, int | None, ssl.SSLContext | None]:
        """The SSL context (server certificate issued/stored on first use), the persisted port and,
        for a Kubernetes cluster, the client context toward its apiserver."""
        ips, dns = self._sans()
        sans = sorted(ips + dns)

        def renew(ca_pem: str, ca_key_enc: str, tls: dict[str, Any]) -> dict[str, Any] | None:
            if self._cert_ok(tls, ca_pem, sans):
                return None
            ca = CertAuthority(cert_pem=ca_pem, key_pem=self.box.decrypt(ca_key_enc))
            issued = ca.issue_server(f"opencs-appapi-{cluster_id}", ips=ips, dns_names=dns)
            log.info("appapi %s: issued the endpoint's server certificate", cluster_id)
            return {"cert": issued.cert_pem, "key_enc": self.box.encrypt(issued.key_pem), "sans": sans}

        try:
            got = self.repo.endpoint_tls(cluster_id, renew)
        except LookupError as e:
            raise RuntimeError(str(e)) from None
        cas = self.guard.client_cas(cluster_id) if self.guard is not None else None
        ctx = server_context(got.ca_pem, got.tls["cert"], self.box.decrypt(got.tls["key_enc"]), cas)
        upstream = client_context(*self.kube.front_proxy(cluster_id)) if kube and self.kube is not None else None
        return ctx, got.port, upstream

    @staticmethod
    def _cert_ok(tls: dict[str, Any], ca_pem: str, sans: list[str]) -> bool:
        cert = tls.get("cert")
        if not cert or not tls.get("key_enc") or tls.get("sans") != sans:
            return False
        if not verify_chain(cert, ca_pem):
            return False
        return not_after(cert) - _dt.datetime.now(_dt.UTC) > REISSUE_BEFORE

    def _fenced(self) -> None:
        with self.fence():
            pass

    def _persist_port(self, cluster_id: str, port: int) -> None:
        with self.fence():
            self.repo.persist_port(cluster_id, port)

    def _set_master_url(self, cluster_id: str, url: str) -> None:
        with self.fence():
            self.repo.set_master_url(cluster_id, url)
