"""Simple routing (spec §13): HTTP requests to a cluster's ``routing_url`` go, by ``Host`` header, to
the containers of the services labelled ``aliyun.routing.port_<container port>: http://domain[;…]``.

One HAProxy (``haproxy.py``) serves every cluster: a frontend per cluster on its own port
(``Settings.routing_port_range``, kept in ``Cluster.spec["routing_port"]``; the URL in
``Cluster.spec["routing_url"]``), and a backend per routed domain whose servers are the running
tasks of the services naming that domain, reached at ``node IP : host-mode published port`` (the
nodes have no IPVS, so no VIPs and no routing mesh; ``compose/normalize.py`` publishes every routed
port in host mode, letting the engine choose the port when the template does not).

``RouterService`` computes the routes from the clusters' application engines (a ``RouteSource``:
routing-labelled ports and their running tasks) and the store (a ``RouteStore``: clusters to route,
blue-green splits), renders the config and has HAProxy reload only when the text changed. The
router loop (``opencs.loops.router``) runs it about once a second; ``Routes.sync()`` runs one pass
at once: project tasks call it so a deploy, a scale or a blue-green weight change is live when the
task says so. Nothing here speaks to an engine library or to SQL.

Domains: ``http://web.example.com`` or ``web.example.com`` match that host (port-less,
case-insensitive); a bare prefix ``web`` means ``web.<cluster_id>.opencs.local`` (the console's
"domain prefix"). Paths and ports in a label are ignored; several domains are separated by ``;``.
Blue-green (``services/projects/bluegreen.py``): services labelled ``opencs.release=green`` are a
project's new version; the release's slots (``{"blue": W, "green": W}``) split each routed domain of
the project between the two by HAProxy server weights.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from opencs import metrics
from opencs.routing.haproxy import HAProxy
from opencs.store.repos.leases import LeaseLost
from opencs.store.repos.routes import RoutedCluster

log = logging.getLogger("opencs.routing")

DEFAULT_DOMAIN = "opencs.local"  # bare prefixes: <prefix>.<cluster_id>.opencs.local
MAX_WEIGHT = 256  # HAProxy server weights are 0-256

_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


# ---------------------------------------------------------------- pure parts (unit-testable)


def parse_domains(value: str, cluster_id: str) -> list[str]:
    """``http://a.example.com;b.example.com/x`` → ['a.example.com', 'b.example.com']."""
    out: list[str] = []
    for part in re.split(r"[;,\s]+", str(value).strip()):
        if not part:
            continue
        p = part.lower()
        if "://" in p:
            scheme, _, p = p.partition("://")
            if scheme not in ("http", "https"):
                continue  # not HTTP: nothing this router can serve
        host = p.split("/", 1)[0].split(":", 1)[0].rstrip(".")
        labels = host.split(".")
        if not host or len(host) > 253 or not all(_LABEL_RE.match(x) for x in labels):
            continue
        if len(labels) == 1:
            host = f"{host}.{cluster_id.lower()}.{DEFAULT_DOMAIN}"
        if host not in out:
            out.append(host)
    return out


@dataclass(frozen=True)
class Server:
    name: str
    addr: str
    port: int
    weight: int
    project: str = ""
    service: str = ""
    release: str = "blue"


@dataclass
class Backend:
    domain: str
    servers: list[Server] = field(default_factory=list)


@dataclass
class Frontend:
    cluster_id: str
    port: int
    backends: list[Backend] = field(default_factory=list)


@dataclass(frozen=True)
class Endpoint:
    """One running task's way in for a routed port, before weights are known."""

    task_id: str
    addr: str
    port: int
    project: str
    service: str
    release: str


class TaskWay(Protocol):
    """One running task's address for a routed port (engines.apps.TaskAddress)."""

    @property
    def task_id(self) -> str: ...
    @property
    def addr(self) -> str: ...
    @property
    def port(self) -> int: ...


class RoutedPortLike(Protocol):
    """A routing-labelled container port of a service (engines.apps.RoutedPort)."""

    @property
    def project(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def release(self) -> str: ...
    @property
    def domains(self) -> str: ...
    @property
    def tasks(self) -> Sequence[TaskWay]: ...


def routes_from_ports(cluster_id: str, ports: Iterable[RoutedPortLike]) -> dict[str, list[Endpoint]]:
    """domain → endpoints (running tasks with a published port for the routed container port)."""
    out: dict[str, list[Endpoint]] = {}
    for rp in ports:
        domains = parse_domains(rp.domains, cluster_id)
        eps = [Endpoint(t.task_id, t.addr, t.port, rp.project, rp.service, rp.release) for t in rp.tasks]
        for d in domains:
            out.setdefault(d, []).extend(eps)
    return out


def weigh(endpoints: list[Endpoint], slots: dict[str, dict[str, int]]) -> list[Server]:
    """HAProxy servers with weights: each project of the domain gets an equal share, split among
    its tasks; a project in a blue-green release splits its share between its releases by
    ``slots[project]`` ({"blue": W, "green": W}). Weight 0 = no new requests (drained)."""
    eps = sorted(set(endpoints), key=lambda e: (e.project, e.release, e.service, e.task_id))
    projects = sorted({e.project for e in eps})
    raw: dict[Endpoint, float] = {}
    for p in projects:
        mine = [e for e in eps if e.project == p]
        split = slots.get(p)
        if not split:
            for e in mine:
                raw[e] = 100.0 / len(mine)
            continue
        for rel in {e.release for e in mine}:
            group = [e for e in mine if e.release == rel]
            share = max(0, int(split.get(rel, 0)))
            for e in group:
                raw[e] = share / len(group)
    top = max(raw.values(), default=0.0)
    out = []
    for e in eps:
        w = 0 if top <= 0 or raw[e] <= 0 else max(1, round(raw[e] * MAX_WEIGHT / top))
        out.append(Server(f"t_{e.task_id[:16]}", e.addr, e.port, w, e.project, e.service, e.release))
    return out


def _ident(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)


WATCH_SCRIPT = r"""#!/bin/sh
# opencs: stop this haproxy (our parent, the master) once the control plane that owns it has been
# gone for $2 seconds, so a killed control plane that never comes back leaves no process behind;
# a restarted one writes its own "PID starttime" into the owner file within that time and adopts it.
owner="$1"; grace="$2"; gone=0; nap=
# the master stops (or, on reload, replaces) this program with USR1/TERM: leave at once
trap '[ -n "$nap" ] && kill "$nap" 2>/dev/null; exit 0' USR1 TERM INT
while :; do
  sleep 5 & nap=$!
  wait "$nap"; nap=
  set -- $(cat "$owner" 2>/dev/null)
  if [ -n "$1" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20)" = "$2" ]; then
    gone=0
  else
    gone=$((gone + 5))
  fi
  if [ "$gone" -ge "$grace" ]; then
    echo "opencs: the control plane owning this haproxy is gone; stopping" >&2
    kill -TERM "$PPID"
    exit 0
  fi
done
"""
OWNER_GRACE = 60  # seconds a dead owner is given to come back (and adopt HAProxy)


def render(frontends: Iterable[Frontend], bind_host: str, watch: tuple[str, str] | None = None) -> str:
    """The whole haproxy.cfg (deterministic: same routes → same text → no reload). ``watch``:
    (script, owner file) of the master-managed program that stops an orphaned HAProxy."""
    lines = [
        "# generated by opencs (opencs.routing): every change is overwritten",
        "global",
        "    log stdout format raw local0 notice",
        "    hard-stop-after 30s",  # an old worker's long connections do not live forever
        "    maxconn 4096",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlognull",
        "    option forwardfor",
        "    timeout connect 3s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 5s",
        "    timeout queue 10s",
        # a task that just went away (scale-in, update, crash) costs a retry on another one,
        # not a failed request
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response junk-response",
        "    default-server inter 1s fall 2 rise 1",
    ]
    if watch is not None:
        lines += ["", "program opencs-owner-watch",
                  f'    command /bin/sh "{watch[0]}" "{watch[1]}" {OWNER_GRACE}']
    host = f"[{bind_host}]" if ":" in bind_host else bind_host
    for fe in sorted(frontends, key=lambda f: f.port):
        cid = _ident(fe.cluster_id)
        lines += ["", f"frontend fe_{cid}", f"    bind {host}:{fe.port}",
                  "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower",
                  # a response that never came may have had effects: only safe methods are sent again
                  "    http-request disable-l7-retry if !{ method GET HEAD OPTIONS }"]
        backends = sorted(fe.backends, key=lambda b: b.domain)
        for i, be in enumerate(backends):
            lines.append(f"    use_backend be_{cid}_{i} if {{ var(txn.host) -m str {be.domain} }}")
        lines += [f"    default_backend be_{cid}_unrouted", "", f"backend be_{cid}_unrouted",
                  '    http-request return status 404 content-type text/plain string '
                  '"no application is routed for this host\\n"']
        for i, be in enumerate(backends):
            lines += ["", f"backend be_{cid}_{i}", f"    # {be.domain}", "    balance roundrobin"]
            for s in sorted(be.servers, key=lambda s: s.name):
                lines.append(f"    server {s.name} {s.addr}:{s.port} weight {s.weight} check"
                             f"  # {s.service}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the service


class RouteStore(Protocol):
    """What the router reads and writes in the store (opencs.store.repos.routes)."""

    def routed_clusters(self) -> list[RoutedCluster]:
        """Running Swarm clusters that have members."""

    def release_slots(self, cluster_ids: list[str]) -> dict[str, dict[str, dict[str, int]]]:
        """cluster → project → {"blue": W, "green": W} of the blue-green releases in progress."""

    def save_route(self, cluster_id: str, port: int, url: str) -> None:
        """Persist the cluster's frontend port and routing_url (if the cluster still serves)."""


class RoutesUnavailable(Exception):
    """The cluster's engine did not answer (the router keeps the last routes)."""


class RouteSource(Protocol):
    def routed_ports(self, cluster_id: str) -> Sequence[RoutedPortLike]:
        """The cluster's routed ports now; RoutesUnavailable when no manager answers."""


@dataclass
class _ClusterScan:
    cluster_id: str
    routing_port: int | None
    slots: dict[str, dict[str, int]]


class RouterService:
    def __init__(self, store: RouteStore, source: RouteSource, data_dir: Path, *, bind_host: str = "127.0.0.1",
                 port_range: tuple[int, int] = (18000, 18999), interval: float = 1.0, owner: bool = True,
                 fence: Callable[[], AbstractContextManager[object]] | None = None,
                 on_pass: Callable[[float], None] | None = None) -> None:
        """``owner``: this process runs the loop and may start HAProxy; a process without the loop
        (``owner=False``) only re-applies routes to the HAProxy that is already running. ``fence``:
        the router lease's (opencs.tasks.leases), under which HAProxy and the store are written;
        ``on_pass(started)`` is told of each pass done (processes that do not hold the lease wait
        for it)."""
        self.fence = fence or nullcontext
        self.on_pass = on_pass
        self.store = store
        self.source = source
        self.interval = interval
        self.owner = owner
        self.bind_host = bind_host
        self.port_range = (int(port_range[0]), int(port_range[1]))
        self.haproxy = HAProxy(data_dir / "router")
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._endpoints: dict[str, dict[str, list[Endpoint]]] = {}  # last good routes per cluster
        self._frontends: dict[str, Frontend] = {}
        self._failing: dict[str, str] = {}  # cluster → last error (logged once)
        self._warned_missing = False
        self._owner_written = False

    # ------------------------------------------------------------ lifecycle

    def available(self) -> bool:
        if self.haproxy.available():
            return True
        if not self._warned_missing:
            log.warning("haproxy not found (%s): routing is off, routing_url stays empty; projects work without "
                        "it (apt-get install haproxy)", self.haproxy.binary)
            self._warned_missing = True
        return False

    def start(self) -> None:
        if self._thread is not None or not self.available():
            return
        self._stop.clear()
        self._owner_written = False  # (again) this process's HAProxy: a holder before it may have adopted it
        self._thread = threading.Thread(target=self._loop, name="opencs-router", daemon=True)
        self._thread.start()

    def stop(self, *, stop_haproxy: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        if stop_haproxy:
            with self._lock:
                self.haproxy.stop()

    def _write_owner(self) -> None:
        d = self.haproxy.dir
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        pid = os.getpid()
        start = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
        (d / "owner").write_text(f"{pid} {start}\n")
        script = d / "owner-watch.sh"
        if not script.exists() or script.read_text() != WATCH_SCRIPT:
            script.write_text(WATCH_SCRIPT)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
                metrics.loop_pass("router", True)  # loop health on /metrics (issue 12 item 1)
            except Exception:  # keep routing alive whatever one pass hit
                log.exception("routing pass failed")
                metrics.loop_pass("router", False)
            self._stop.wait(self.interval)

    # ------------------------------------------------------------ one pass

    def sync(self) -> str:
        """Converge HAProxy to the swarms and the store now; returns what HAProxy did
        (started | reloaded | unchanged | stopped | off | fenced: the router lease is another's).
        The routes are computed first; HAProxy and the store are written under the fence."""
        if not self.available():
            return "off"
        started = time.time()
        try:
            with self._lock:
                action = self._sync()
        except LeaseLost as e:
            log.warning("routing: not applied: %s", e)
            return "fenced"
        if self.on_pass is not None:
            self.on_pass(started)
        return action

    def _sync(self) -> str:
        scans = self._scan()
        if not scans:
            self._frontends = {}
            if self.owner and self.haproxy.recorded_pid() is not None:
                with self.fence():
                    self.haproxy.stop()  # nothing to serve: a config without frontends would not start
                return "stopped"
            return "off"
        serving = self._serving_ports()
        taken = {sc.routing_port for sc in scans if sc.routing_port is not None}
        frontends: dict[str, Frontend] = {}
        for sc in scans:
            port = self._port(sc, serving, taken)
            if port is None:
                continue
            eps = self._cluster_endpoints(sc)
            backends = [Backend(d, weigh(e, sc.slots)) for d, e in sorted(eps.items())]
            frontends[sc.cluster_id] = Frontend(sc.cluster_id, port, backends)
        if not frontends:
            return "off"
        if not self.owner and self.haproxy.recorded_pid() is None:
            return "off"  # starting HAProxy is the owner's job (it adopts/loops)
        d = self.haproxy.dir
        with self.fence():
            if self.owner and not self._owner_written:
                self._write_owner()
                self._owner_written = True
            watch = (str(d / "owner-watch.sh"), str(d / "owner"))
            action = self.haproxy.apply(render(frontends.values(), self.bind_host, watch))
            self._frontends = frontends
            for sc in scans:
                fe = frontends.get(sc.cluster_id)
                if fe is not None:
                    self._persist(sc, fe.port)
        if action != "unchanged":
            log.info("routing: haproxy %s (%d cluster(s), %d domain(s))", action, len(frontends),
                     sum(len(f.backends) for f in frontends.values()))
        return action

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until no HAProxy worker of a previous config is left (so nothing is sent any more
        by weights/servers that a sync just removed)."""
        if not self.available() or self.haproxy.recorded_pid() is None:
            return True
        return self.haproxy.wait_drained(timeout)

    def frontend(self, cluster_id: str) -> Frontend | None:
        return self._frontends.get(cluster_id)

    def url(self, port: int) -> str:
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    # ------------------------------------------------------------ store and swarm

    def _scan(self) -> list[_ClusterScan]:
        clusters = self.store.routed_clusters()
        slots = self.store.release_slots([c.cluster_id for c in clusters]) if clusters else {}
        return [_ClusterScan(c.cluster_id, c.routing_port, slots.get(c.cluster_id, {})) for c in clusters]

    def _cluster_endpoints(self, sc: _ClusterScan) -> dict[str, list[Endpoint]]:
        try:
            eps = routes_from_ports(sc.cluster_id, self.source.routed_ports(sc.cluster_id))
        except RoutesUnavailable as e:
            # no manager answered: keep serving the last routes rather than dropping the traffic
            err = str(e) or "no running manager"
            if self._failing.get(sc.cluster_id) != err:
                log.warning("routing %s: cannot read the swarm (%s); keeping the last routes", sc.cluster_id, err)
                self._failing[sc.cluster_id] = err
            return self._endpoints.get(sc.cluster_id, {})
        self._endpoints[sc.cluster_id] = eps
        if self._failing.pop(sc.cluster_id, None):
            log.info("routing %s: the swarm answers again", sc.cluster_id)
        return eps

    def _serving_ports(self) -> set[int]:
        text = self.haproxy.running_config() or ""
        return {int(m) for m in re.findall(r"^\s+bind \S+:(\d+)$", text, re.M)}

    def _bindable(self, port: int) -> bool:
        family = socket.AF_INET6 if ":" in self.bind_host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.bind_host, port))
            except OSError as e:
                if e.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                    log.warning("routing: cannot bind %s:%d: %s", self.bind_host, port, e)
                return False
        return True

    def _port(self, sc: _ClusterScan, serving: set[int], taken: set[int]) -> int | None:
        """The cluster's persisted port (kept across restarts), or the first free one of the range."""
        lo, hi = self.port_range
        port = sc.routing_port
        if isinstance(port, int) and lo <= port <= hi and (port in serving or self._bindable(port)):
            return port
        for p in range(lo, hi + 1):
            if p not in taken and p not in serving and self._bindable(p):
                if isinstance(port, int):
                    log.warning("routing %s: port %d is not usable; moving to %d", sc.cluster_id, port, p)
                taken.add(p)
                sc.routing_port = p
                return p
        log.error("routing %s: no free port in %d-%d", sc.cluster_id, lo, hi)
        return None

    def _persist(self, sc: _ClusterScan, port: int) -> None:
        self.store.save_route(sc.cluster_id, port, self.url(port))
