"""The composition root: builds one opencs process once and hands each part only what it needs.

Only the edges import this module (the CLI, the benchmarks, the tests). Everything below it receives
its collaborators through its constructor; nothing reaches back into the process state.

    settings ─▶ store (Database, repositories) ─▶ secrets (SecretBox) ─▶ providers ─▶ cluster drivers
             ─▶ services (keys, clusters, instances, projects, triggers) ─▶ task registry + engine
             ─▶ loops (endpoint manager, router, health monitor, usage collector), started by `start()`
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from opencs import metrics
from opencs.api.app import NODE_PATHS, create_app
from opencs.api.authorize import Authorizer
from opencs.appapi.app import create_appapi_app
from opencs.appapi.guard import AppApiGuard
from opencs.auth.verifier import RequestVerifier
from opencs.config import Settings
from opencs.engines.apps import AppEngines
from opencs.engines.container_events import DeathReader
from opencs.engines.driver import ClusterDriver
from opencs.engines.drivers import DriverSet
from opencs.engines.kubernetes import binary as kube_binary
from opencs.engines.kubernetes.driver import KubernetesDriver
from opencs.engines.kubernetes.frontproxy import FrontProxyBackends
from opencs.engines.kubernetes.runtime import KubernetesNodeRuntime
from opencs.engines.swarm.apps import SwarmAppEngines, SwarmMember
from opencs.engines.swarm.driver import SwarmDriver
from opencs.engines.swarm.node import DockerEngine
from opencs.loops import Loop
from opencs.loops.endpoints import AppFactory, EndpointManager, EndpointSettings
from opencs.loops.health import HealthLoop
from opencs.loops.leased import LeasedLoop
from opencs.loops.monitoring import MonitoringLoop
from opencs.loops.node_api import NodeApiListener, node_endpoint, node_listen
from opencs.loops.registry_notifications import RegistryNotificationsLoop
from opencs.loops.router import EngineRoutes, RouterLoop
from opencs.loops.usage import ExportLoop, UsageLoop
from opencs.machine import NodeRuntime
from opencs.monitoring.render import StackConfig
from opencs.monitoring.stack import MonitoringStack
from opencs.providers import hostclaims
from opencs.providers.base import Provider
from opencs.registry.pause import PAUSE_REPOSITORY, PAUSE_TAG
from opencs.registry.realm import RealmListener
from opencs.registry.service import RegistryService
from opencs.routing.haproxy import HAProxy
from opencs.routing.router import RouterService
from opencs.routing.routes import Routes
from opencs.secretbox import SecretBox
from opencs.services import cluster_tasks
from opencs.services.accounts import AccountService
from opencs.services.alerts import AlertRuleService
from opencs.services.attach_scripts import AttachScriptService
from opencs.services.audit import AuditService
from opencs.services.cluster_certs import ClusterCertService
from opencs.services.cluster_tasks import ClusterTaskDeps
from opencs.services.clusters import ClusterService
from opencs.services.console_sessions import ConsoleSessions
from opencs.services.container_events import DeathWatcher
from opencs.services.events import EventLog
from opencs.services.failed_signins import FailedSignIns
from opencs.services.influxdb_addon import InfluxExport
from opencs.services.instances import InstanceService
from opencs.services.keys import KeyService
from opencs.services.login_profiles import LoginProfiles
from opencs.services.monitor import HealthService
from opencs.services.monitoring import MonitoringService, PlaneAddress
from opencs.services.nodes import ClusterBook, EngineMachines, Machines
from opencs.services.ownership import ResourceOwners
from opencs.services.passwords import PasswordHashes
from opencs.services.projects import ProjectService
from opencs.services.projects import bluegreen as project_bluegreen
from opencs.services.projects import tasks as project_tasks
from opencs.services.registry_access import NodeCredentials, RegistryAccess
from opencs.services.registry_logins import RegistryLogins
from opencs.services.triggers import TriggerService
from opencs.services.usage import UsageService
from opencs.store.db import Database, migrate
from opencs.store.repos.accounts import AccountRepo
from opencs.store.repos.alerts import AlertRuleRepo
from opencs.store.repos.attach_tokens import AttachTokenRepo
from opencs.store.repos.audit import AuditRepo
from opencs.store.repos.certs import CertRepo
from opencs.store.repos.clusters import ClusterRepo
from opencs.store.repos.console_sessions import ConsoleSessionRepo
from opencs.store.repos.endpoints import EndpointRepo
from opencs.store.repos.events import EventRepo
from opencs.store.repos.failed_signins import FailedSignInRepo
from opencs.store.repos.instances import InstanceRepo
from opencs.store.repos.keys import KeyRepo
from opencs.store.repos.leases import LeaseRepo
from opencs.store.repos.login_profiles import LoginProfileRepo
from opencs.store.repos.members import MemberRepo
from opencs.store.repos.nonces import NonceStore
from opencs.store.repos.projects import ProjectRepo
from opencs.store.repos.routes import RouteRepo
from opencs.store.repos.tasks import TaskRepo
from opencs.store.repos.triggers import TriggerRepo
from opencs.store.repos.volumes import VolumeRepo
from opencs.tasks.engine import TaskEngine
from opencs.tasks.leases import DutyLease
from opencs.tasks.registry import TaskRegistry

log = logging.getLogger("opencs")

# the singleton duties: each runs in the one process (of all sharing the database) holding its lease;
# the usage collector is not one (each API process keeps the snapshot it serves, reading only)
DUTIES = ("health", "endpoints", "router", "monitoring", "container-events", "registry-notifications")


@dataclass
class ControlPlane:
    """What one process is made of. The edges read its services; `start()`/`close()` run its loops."""

    settings: Settings
    db: Database
    box: SecretBox
    keys: KeyService
    tasks: TaskEngine
    clusters: ClusterService
    instances: InstanceService
    verifier: RequestVerifier
    providers: dict[str, Provider]
    registry: RegistryService
    instance_repo: InstanceRepo
    cluster_driver: ClusterDriver
    health: HealthService
    app_engines: AppEngines
    routes: Routes
    accounts: AccountService = field(init=False)
    audit: AuditService = field(init=False)
    authorizer: Authorizer = field(init=False)
    triggers: TriggerService = field(init=False)
    cluster_certs: ClusterCertService = field(init=False)
    attach_scripts: AttachScriptService = field(init=False)
    registry_access: RegistryAccess = field(init=False)
    registry_logins: RegistryLogins = field(init=False)
    login_profiles: LoginProfiles = field(init=False)
    console_sessions: ConsoleSessions = field(init=False)  # the console's, shared by every process
    failed_signins: FailedSignIns = field(init=False)
    projects: ProjectService = field(init=False)
    alerts: AlertRuleService = field(init=False)
    monitoring: MonitoringService = field(init=False)
    events: EventLog = field(init=False)
    usage: UsageService | None = None  # container/node usage collector (None: off)
    influxdb: InfluxExport | None = None  # its InfluxDB add-on export (with usage)
    leases: dict[str, DutyLease] = field(default_factory=dict)  # this process's claim on each duty
    death_readers: dict[str, DeathReader] = field(default_factory=dict)  # by cluster type: container exits
    node_api: NodeApiListener | None = None  # the nodes' paths on their bridge (API on loopback only)
    loops: list[Loop] = field(default_factory=list)
    # transitional: services that still take the whole process read these (being removed)
    extras: dict[str, Any] = field(default_factory=dict)
    _appapi: Any = None
    router: RouterService | None = None
    _starter: threading.Thread | None = None
    _closing: threading.Event = field(default_factory=threading.Event)
    queue_gauge: metrics.QueueDepth | None = None  # this store's task queue on /metrics, dropped at close
    host_use: hostclaims.DataDirUse | None = None  # keeps the data dir's host claims live (opencs teardown)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Background work of a server process: re-adopt nodes, then task workers; and the loops.

        Re-adopting nodes can take seconds (engines restarted with reboot semantics), so it runs in
        the background and the API answers at once; task workers start once the nodes are back."""

        def reconcile_then_work() -> None:
            try:
                self.health.reconcile_inventory()
                local = self.providers.get("local")
                if local is not None and local.list():
                    self.registry.ensure()  # it stopped with the previous server; the nodes pull through it
            except Exception:
                log.exception("start-up reconciliation failed")
            if self.settings.workers > 0 and not self._closing.is_set():
                self.tasks.start(self.settings.workers)

        self._starter = threading.Thread(target=reconcile_then_work, name="opencs-reconcile", daemon=True)
        self._starter.start()
        for loop in self._make_loops():
            loop.start()
            self.loops.append(loop)

    def _make_loops(self) -> list[Loop]:
        loops: list[Loop] = []
        s = self.settings

        def leased(loop: Loop) -> Loop:
            return LeasedLoop(loop, self.leases[loop.name])

        if s.monitor_interval > 0:
            loops.append(leased(HealthLoop(self.health, s.monitor_interval)))
        if s.appapi:
            lease = self.leases["endpoints"]
            self._appapi = endpoint_manager(self, fence=lease.fence, on_pass=lease.mark_pass)
            loops.append(leased(self._appapi))
        if s.routing:
            lease = self.leases["router"]
            self.router = router_service(s, self.db, self.app_engines, owner=True, fence=lease.fence,
                                         on_pass=lease.mark_pass)
            # on PostgreSQL another process takes the duty over: leave it the running HAProxy to adopt
            loops.append(leased(RouterLoop(self.router, self.routes, stop_haproxy=self.db.is_sqlite)))
        if self.usage is not None:
            loops.append(UsageLoop(self.usage, s.usage_interval))
        if self.influxdb is not None:
            loops.append(ExportLoop(self.influxdb))
        loops.append(RealmListener(self.registry.realm_address, self.registry_access))
        if s.registry_notifications:
            loops.append(leased(RegistryNotificationsLoop(self.registry)))
        if self.node_api is not None:
            loops.append(self.node_api)
        loops.append(leased(MonitoringLoop(self.monitoring)))  # idle while the stack is not enabled
        if s.container_events_interval > 0:
            watcher = DeathWatcher(ClusterRepo(self.db), self.instance_repo, self.death_readers, self.events)
            loops.append(leased(UsageLoop(watcher, s.container_events_interval, name="container-events")))
        return loops

    def close(self) -> None:
        self._closing.set()
        if self._starter is not None:
            self._starter.join(60)
        for loop in reversed(self.loops):  # the router first: it stops its HAProxy by PID
            loop.stop()
        self.loops.clear()
        self._appapi = self.router = None
        self.tasks.stop()
        for name, prov in self.providers.items():
            try:
                prov.close()  # the ssh provider's tunnels and loop thread
            except Exception as e:  # one provider must not keep the store open
                log.warning("closing provider %s: %s", name, e)
        if self.host_use is not None and self.host_use.release():
            # the last process of this data dir: what only served the nodes through it stops with it
            # (the token realm is in-process, so a registry left alone could not serve a pull anyway)
            # on PostgreSQL the router leaves HAProxy to the next lease holder: with none left, it stops too
            router = HAProxy(self.settings.data_dir / "router")
            for what, stop in (("registry", self.registry.stop), ("monitoring stack", self.monitoring.stack.stop),
                               ("router", router.stop)):
                try:
                    stop()
                except Exception as e:  # the store must still close
                    log.warning("stopping the %s: %s", what, e)
        metrics.unwatch_queue(self.queue_gauge)  # a scrape must not reach a closed store
        self.db.close()


class _ProcessEndpoints:
    """EndpointSync of the process: its endpoint manager once start() made it (none before)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.plane: ControlPlane | None = None

    @property
    def owns_master_url(self) -> bool:
        return self.settings.appapi

    def sync(self) -> None:
        plane = self.plane
        if plane is None or plane._appapi is None:
            return
        lease = plane.leases.get("endpoints")
        if lease is None or lease.held():
            plane._appapi.sync()
        elif not lease.wait_pass(time.time(), 10.0):  # another process serves master_url: its next pass
            raise RuntimeError("no endpoint manager pass within 10s (is the endpoints lease holder running?)")


def endpoint_manager(plane: ControlPlane, app_factory: AppFactory | None = None,
                     fence: Callable[[], AbstractContextManager[object]] | None = None,
                     on_pass: Callable[[float], None] | None = None) -> EndpointManager:
    """The master_url loop of `plane`, serving the Application API app (or `app_factory`'s) and the
    Kubernetes clusters' checking endpoints."""
    s = plane.settings
    guard = AppApiGuard(plane.cluster_certs, s.regions[0] if s.regions else "*", plane.audit)
    return EndpointManager(
        EndpointSettings(s.appapi_host, s.appapi_advertise_host, s.appapi_port_range),
        EndpointRepo(plane.db), plane.box,
        app_factory or (lambda: create_appapi_app(plane.projects)),
        guard, fence, on_pass, FrontProxyBackends(plane.cluster_driver.api_url, plane.cluster_certs.cluster_ca),
    )


def router_service(s: Settings, db: Database, engines: AppEngines, *, owner: bool,
                   fence: Callable[[], AbstractContextManager[object]] | None = None,
                   on_pass: Callable[[float], None] | None = None) -> RouterService:
    return RouterService(RouteRepo(db), EngineRoutes(engines), s.data_dir, bind_host=s.routing_host,
                         port_range=s.routing_port_range, owner=owner, fence=fence, on_pass=on_pass)


def app_engines(db: Database, nodes: NodeCredentials | None = None) -> AppEngines:
    """Transitional: Swarm application engines over the store's member rows (the cluster drivers
    will provide them); they pull from the bundled registry with each cluster's node credential."""
    members = MemberRepo(db)

    def of(cluster_id: str) -> list[SwarmMember]:
        return [SwarmMember(m.node_id, m.ip, m.endpoint, m.role, m.state, m.details)
                for m in members.of_cluster(cluster_id)]

    return SwarmAppEngines(of, nodes.login if nodes is not None else None)


def make_providers(settings: Settings, box: SecretBox, runtime: NodeRuntime | None = None,
                   runtimes: dict[str, NodeRuntime] | None = None) -> dict[str, Provider]:
    """The providers of machines; `runtime` is what the cluster engine runs on them by default (Docker
    for Swarm), `runtimes` the other engines' node runtimes by name (Kubernetes: local and SSH hosts)."""
    from opencs.providers.ssh import SshProvider

    runtime = runtime or DockerEngine()
    providers: dict[str, Provider] = {  # existing hosts registered by SSH; always there (nothing to install)
        "ssh": SshProvider(settings.data_dir / "ssh", box, runtime=runtime, runtimes=runtimes)}
    if settings.local_nodes:
        from opencs.providers.local import LocalProvider

        providers["local"] = LocalProvider(settings.data_dir / "nodes", bridge=settings.local_bridge,
                                           subnet=settings.local_subnet, prefix=settings.local_prefix,
                                           runtime=runtime, runtimes=runtimes)
    return providers


def _registry_service(settings: Settings, providers: dict[str, Provider]) -> RegistryService:
    local = providers.get("local")
    # pushes are announced to this control plane (image-update triggers)
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    notify = f"http://{host}:{settings.port}/hook/registry" if settings.registry_notifications else None
    return RegistryService(settings.data_dir, settings.registry_port, local.host_network() if local else None,
                           notify_url=notify)


def _engines(settings: Settings, box: SecretBox, cluster_repo: ClusterRepo,
             instance_repo: InstanceRepo) -> tuple[DriverSet, dict[str, Provider], RegistryService]:
    """The cluster drivers by type (Swarm the default, Kubernetes), the providers that boot their
    node runtimes, and the bundled registry both pull through."""
    book = ClusterBook(cluster_repo, box)
    kube_runtime = KubernetesNodeRuntime(pause_image=f"{PAUSE_REPOSITORY}:{PAUSE_TAG}",
                                         oci_runtime=settings.kubernetes_oci_runtime)
    registry: list[RegistryService] = []  # made after the providers (it listens on their bridge)
    kube = KubernetesDriver(instance_repo, book, kube_runtime,
                            seed_images=lambda: registry[0].seed_kubernetes(kube_binary.bin_dir() / "coredns"),
                            etcd_fsync=settings.kubernetes_etcd_fsync)
    driver = DriverSet(SwarmDriver(instance_repo), [kube], book.cluster_type)
    providers = make_providers(settings, box, driver.node_runtime, runtimes=driver.runtimes)
    registry.append(_registry_service(settings, providers))
    return driver, providers, registry[0]


def plane_address(s: Settings) -> PlaneAddress:
    """How this host's Prometheus and Alertmanager reach the API: loopback where it listens there
    (so /metrics needs no token); over HTTPS, the public URL with the generated CA."""
    from opencs.pki.server_tls import is_loopback, is_wildcard, url_host

    if s.tls:
        host = url_host(s.public_url)
        ca = s.data_dir / "tls" / "ca.pem"
        address, base, ca_file = f"{host}:{s.port}", s.public_url, str(ca) if ca.exists() else None
    else:
        host = "127.0.0.1" if is_wildcard(s.host) or is_loopback(s.host) else s.host
        address, base, ca_file = f"{host}:{s.port}", f"http://{host}:{s.port}", None
    token_file = None
    if not is_loopback(host) and s.metrics_token:
        path = s.data_dir / "monitoring" / "metrics-token"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)
        path.write_text(s.metrics_token)
        token_file = str(path)
    cfg = StackConfig(address, "https" if s.tls else "http", ca_file, token_file, s.monitoring_interval,
                      s.monitoring_interval, s.usage_interval or s.monitoring_interval)
    return PlaneAddress(cfg, base)


def claim_host(s: Settings) -> hostclaims.DataDirUse | None:
    """Fill the settings left to allocation (bridge, subnet, prefix, registry and port ranges) from
    the data dir's host claims, recording them; the returned use keeps them live while we run."""
    want = hostclaims.Wanted(s.local_bridge or None, s.local_subnet or None, s.local_prefix or None,
                             s.registry_port or None, s.appapi_port_range if any(s.appapi_port_range) else None,
                             s.routing_port_range if any(s.routing_port_range) else None)
    use = None
    if os.geteuid() == 0:
        use = hostclaims.DataDirUse(s.data_dir)  # first: the claim is live once recorded
        try:
            c = hostclaims.claim(s.data_dir, want)
        except BaseException:
            use.release()
            raise
        log.info("host claims of %s: bridge %s, subnet %s, node prefix %s, registry :%d, ports %d-%d and %d-%d",
                 s.data_dir, c.bridge, c.subnet, c.prefix, c.registry_port, *c.appapi_ports, *c.routing_ports)
    else:  # no local nodes without root, and nowhere host-wide to record anything
        c = hostclaims.unrecorded(s.data_dir, want)
    s.local_bridge, s.local_subnet, s.local_prefix, s.registry_port = c.bridge, c.subnet, c.prefix, c.registry_port
    s.appapi_port_range, s.routing_port_range = c.appapi_ports, c.routing_ports
    return use


def build(settings: Settings) -> ControlPlane:
    """Claim the data dir's host resources, open the store (migrating it), the secrets and the
    providers, and wire every service."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)
    host_use = claim_host(settings)
    try:
        plane = _wire(settings)
    except BaseException:
        if host_use is not None:
            host_use.release()
        raise
    plane.host_use = host_use
    return plane


def _wire(settings: Settings) -> ControlPlane:
    db = Database(settings.resolved_database_url)
    migrate(db.engine)
    box = SecretBox.from_file(settings.resolved_secret_key_file)
    keys = KeyService(KeyRepo(db), box)
    cluster_repo, instance_repo = ClusterRepo(db), InstanceRepo(db)
    driver, providers, registry = _engines(settings, box, cluster_repo, instance_repo)
    node_credentials = NodeCredentials(registry.node_key(), registry.endpoint)
    machines = Machines(providers, instance_repo, cluster_repo, box, driver, registry.endpoint,
                        node_credentials.node_auth)
    kube = driver.for_type("Kubernetes")
    if isinstance(kube, KubernetesDriver):
        kube.use_machines(EngineMachines(machines))  # managed control planes, HA load balancers
        kube.use_shells(lambda name, iid: prov.host_shell(iid) if (prov := providers.get(name)) else None)
    endpoints = _ProcessEndpoints(settings)
    cluster_deps = ClusterTaskDeps(cluster_repo, instance_repo, machines, driver, registry, endpoints)
    handlers = TaskRegistry(cluster_tasks.task_handlers(cluster_deps))
    handlers.load_plugins(settings.task_plugins)
    task_repo = TaskRepo(db)
    tasks = TaskEngine(task_repo, handlers, lease_seconds=settings.task_lease_seconds)
    queue_gauge = metrics.watch_queue(task_repo.active_counts)
    clusters = ClusterService(cluster_repo, instance_repo, box, tasks, providers, driver, settings.max_cluster_size)
    instances = InstanceService(instance_repo, tasks, clusters)
    health = HealthService(providers, instance_repo, cluster_repo, driver)
    nonces = NonceStore(db, retain=timedelta(seconds=2 * settings.signature_window_seconds + 60))
    verifier = RequestVerifier(keys.active_secret, nonces, settings.signature_window_seconds,
                               cached_secret_for=keys.cached_secret)
    engines = app_engines(db, node_credentials)
    lease_repo = LeaseRepo(db)
    leases = {d: DutyLease(lease_repo, d, info={"api": settings.public_url}) for d in DUTIES}
    # a process that does not hold the router lease waits for the holder's next pass; it reads this
    # host's HAProxy (one data dir) to wait for old workers to drain
    routes = Routes((lambda: router_service(settings, db, engines, owner=False)) if settings.routing else None,
                    follow=leases["router"].wait_pass if settings.routing else None)
    plane = ControlPlane(settings, db, box, keys, tasks, clusters, instances, verifier, providers, registry,
                         instance_repo, driver, health, engines, routes, leases=leases,
                         queue_gauge=queue_gauge, death_readers=driver.by_type(lambda d: d.death_reader()))
    endpoints.plane = plane
    account_repo = AccountRepo(db)
    plane.accounts = AccountService(account_repo, keys)
    plane.audit = AuditService(AuditRepo(db))
    plane.cluster_certs = ClusterCertService(CertRepo(db), clusters, plane.accounts, box, driver,
                                             settings.client_cert_days)
    owners, region = ResourceOwners(account_repo, db.changes), settings.regions[0] if settings.regions else "*"
    plane.authorizer = Authorizer(plane.accounts, owners, region, plane.audit)
    hashes = PasswordHashes()
    plane.registry_logins = RegistryLogins(account_repo, plane.accounts, hashes)
    plane.login_profiles = LoginProfiles(LoginProfileRepo(db), plane.accounts, hashes)
    plane.console_sessions = ConsoleSessions(ConsoleSessionRepo(db))
    plane.failed_signins = FailedSignIns(FailedSignInRepo(db))
    plane.registry_access = RegistryAccess(plane.accounts, keys, owners, plane.audit, registry.signer,
                                           node_credentials, region, plane.registry_logins)
    plane.projects = ProjectService(ProjectRepo(db), VolumeRepo(db), tasks, plane.app_engines, routes, box)
    handlers.add_all([*project_tasks.task_handlers(plane.projects), *project_bluegreen.task_handlers(plane.projects)])
    if (listen := node_listen(settings, providers)) is not None:
        plane.node_api = NodeApiListener(listen, lambda: create_app(plane, only_paths=NODE_PATHS))
    node_base = plane.node_api.base if plane.node_api is not None else (lambda: "")
    # trigger URLs go to nodes' containers and alert receivers: the bridge while the API is on loopback
    plane.triggers = TriggerService(TriggerRepo(db), clusters, lambda: node_base() or settings.public_url,
                                    plane.projects, box, nonces, settings.trigger_signed_default)
    plane.attach_scripts = AttachScriptService(AttachTokenRepo(db), clusters, instance_repo, task_repo,
                                               lambda: node_endpoint(settings, providers, node_base))
    plane.alerts = AlertRuleService(AlertRuleRepo(db), plane.triggers, box)
    plane.events = EventLog(EventRepo(db), settings.events_retention)
    tasks.observers.append(plane.events.task_observer)
    health.on_change.append(lambda cid, iid, old, new: plane.events.record(
        cid, "node", "NodeHealthy" if new == "healthy" else "NodeUnhealthy", f"{iid}: {old or 'new'} -> {new}"))
    mon_dir = settings.data_dir / "monitoring"
    plane.monitoring = MonitoringService(mon_dir, MonitoringStack(mon_dir), cluster_repo, plane.alerts,
                                         plane_address(settings))
    if settings.usage_interval > 0:
        plane.usage = UsageService(cluster_repo, instance_repo, driver.by_type(lambda d: d.usage_reader()))
        plane.influxdb = InfluxExport()
        plane.usage.sinks.append(plane.influxdb.offer)
    tasks.services = plane
    return plane
