"""The wiring of one opencs process: settings → database, secrets, providers, services, tasks."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from opencs.auth.verifier import NonceStore, RequestVerifier
from opencs.config import Settings
from opencs.providers.base import Provider
from opencs.secretbox import SecretBox
from opencs.services import cluster_tasks, project_bluegreen, project_tasks
from opencs.services.clusters import ClusterService
from opencs.services.instances import InstanceService
from opencs.services.keys import KeyService
from opencs.services.monitor import Monitor, reconcile_inventory
from opencs.services.projects import ProjectService
from opencs.services.triggers import TriggerService
from opencs.store.db import Database, migrate
from opencs.store.repos.tasks import TaskRepo
from opencs.tasks.engine import TaskEngine
from opencs.tasks.registry import TaskRegistry

log = logging.getLogger("opencs")


@dataclass
class Runtime:
    settings: Settings
    db: Database
    box: SecretBox
    keys: KeyService
    tasks: TaskEngine
    clusters: ClusterService
    instances: InstanceService
    verifier: RequestVerifier
    providers: dict[str, Provider]
    extras: dict[str, Any] = field(default_factory=dict)
    _registry_lock: threading.Lock = field(default_factory=threading.Lock)
    _monitor: Monitor | None = None
    _starter: threading.Thread | None = None
    _closing: threading.Event = field(default_factory=threading.Event)
    triggers: Any = None  # TriggerService (needs the runtime itself)
    projects: Any = None  # ProjectService (needs the runtime itself)
    _appapi: Any = None  # opencs.appapi.AppApiManager when settings.appapi
    router: Any = None  # opencs.routing.RouterService when settings.routing (started by start_workers)

    # ------------------------------------------------------------ the bundled registry

    def registry_endpoint(self) -> str | None:
        """host:port of the clusters' registry, on the local nodes' bridge."""
        prov = self.providers.get("local")
        gw = getattr(prov, "gateway", None)
        return f"{gw}:{self.settings.registry_port}" if gw else None

    def ensure_registry(self) -> str | None:
        """Start (or adopt) Debian's docker-registry on the bridge and seed library/busybox."""
        endpoint = self.registry_endpoint()
        prov = self.providers.get("local")
        if endpoint is None or prov is None:
            return None
        from opencs.registry.bundled import BundledRegistry
        from opencs.registry.image import seed_busybox

        with self._registry_lock:
            prov.ensure_network()  # type: ignore[attr-defined]  # the registry listens on the bridge
            # pushes are announced to this control plane (image-update triggers)
            host = self.settings.host if self.settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            reg = BundledRegistry(self.settings.data_dir / "registry", listen=endpoint,
                                  notify_url=f"http://{host}:{self.settings.port}/hook/registry",
                                  notify_token=self.registry_notify_token())
            reg.ensure_running()
            if not self.extras.get("registry_seeded"):
                seed_busybox(reg.url)
                self.extras["registry_seeded"] = True
            self.extras["registry"] = reg
        return endpoint

    def registry_notify_token(self) -> str:
        """Bearer token the bundled registry sends with its notifications; kept in the data dir so
        that a restarted control plane adopts the running registry (same config)."""
        path = self.settings.data_dir / "registry-notify.token"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            import os
            import secrets

            token = secrets.token_urlsafe(32)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return path.read_text().strip()
            with os.fdopen(fd, "w") as f:
                f.write(token)
            return token

    # ------------------------------------------------------------ lifecycle

    def start_workers(self) -> None:
        """Background work of a server process: reconcile nodes, task workers, health monitor.

        Re-adopting nodes can take seconds (engines restarted with reboot semantics), so it runs in
        the background and the API answers at once; task workers start once the nodes are back."""

        def reconcile_then_work() -> None:
            try:
                reconcile_inventory(self)
            except Exception:
                log.exception("start-up reconciliation failed")
            if self.settings.workers > 0 and not self._closing.is_set():
                self.tasks.start(self.settings.workers)

        self._starter = threading.Thread(target=reconcile_then_work, name="opencs-reconcile", daemon=True)
        self._starter.start()
        if self.settings.monitor_interval > 0:
            self._monitor = Monitor(self, self.settings.monitor_interval)
            self._monitor.start()
        if self.settings.appapi:
            from opencs.appapi import AppApiManager

            self._appapi = AppApiManager(self)
            self._appapi.start()
        if self.settings.routing:
            from opencs.routing import RouterService

            self.router = RouterService(self)
            self.router.start()

    def close(self) -> None:
        self._closing.set()
        if self._starter is not None:
            self._starter.join(60)
        if self.router is not None:
            self.router.stop()  # the loop and, by PID, its HAProxy
            self.router = None
        if self._appapi is not None:
            self._appapi.stop()
            self._appapi = None
        if self._monitor:
            self._monitor.stop()
        self.tasks.stop()
        for prov in self.providers.values():
            if close := getattr(prov, "close", None):  # the ssh provider's tunnels and loop thread
                close()
        self.db.close()


def make_providers(settings: Settings, box: SecretBox) -> dict[str, Provider]:
    from opencs.providers.ssh import SshProvider

    # existing Docker hosts registered by SSH; always available (nothing to install)
    providers: dict[str, Provider] = {"ssh": SshProvider(settings.data_dir / "ssh", box)}
    if settings.local_nodes:
        from opencs.providers.local import LocalProvider

        providers["local"] = LocalProvider(
            settings.data_dir / "nodes",
            bridge=settings.local_bridge,
            subnet=settings.local_subnet,
            prefix=settings.local_prefix,
        )
    return providers


def open_runtime(settings: Settings) -> Runtime:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)
    db = Database(settings.resolved_database_url)
    migrate(db.engine)
    box = SecretBox.from_file(settings.resolved_secret_key_file)
    keys = KeyService(db, box)
    handlers = TaskRegistry([*cluster_tasks.task_handlers(), *project_tasks.task_handlers(),
                             *project_bluegreen.task_handlers()])
    handlers.load_plugins(settings.task_plugins)
    tasks = TaskEngine(TaskRepo(db), handlers, lease_seconds=settings.task_lease_seconds)
    providers = make_providers(settings, box)
    clusters = ClusterService(db, box, tasks, settings, providers)
    instances = InstanceService(db, tasks, clusters)
    nonces = NonceStore(db, retain=timedelta(seconds=2 * settings.signature_window_seconds + 60))
    verifier = RequestVerifier(keys.active_secret, nonces, settings.signature_window_seconds)
    rt = Runtime(settings, db, box, keys, tasks, clusters, instances, verifier, providers)
    rt.triggers = TriggerService(rt)
    rt.projects = ProjectService(rt)  # the Application API's projects (also used by triggers)
    tasks.services = rt
    return rt
