"""Settings of one opencs process (flags and OPENCS_* environment variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class Settings:
    data_dir: Path
    # default: SQLite (WAL) in data_dir; postgresql://user:pass@host/db for several processes
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8990
    # durable-task workers (threads) in this process; 0 = API only
    workers: int = 2
    task_lease_seconds: float = field(default_factory=lambda: _env_float("OPENCS_TASK_LEASE_SECONDS", 15.0))
    # allowed skew of Date / x-acs-date, and how long a nonce is remembered (spec §3.2: 15 minutes)
    signature_window_seconds: int = 15 * 60
    # key for secrets at rest; every process sharing one database needs the same file
    secret_key_file: Path | None = None
    # extra task handler modules to import (comma separated), e.g. plug-ins and test handlers
    task_plugins: list[str] = field(
        default_factory=lambda: [m for m in os.environ.get("OPENCS_TASK_PLUGINS", "").split(",") if m]
    )
    max_cluster_size: int = field(default_factory=lambda: int(_env_float("OPENCS_MAX_CLUSTER_SIZE", 20)))
    # regions this server answers for (GET /images; region_id of new clusters defaults to the first)
    regions: list[str] = field(default_factory=lambda: os.environ.get("OPENCS_REGIONS", "local").split(","))
    # local node provider: a bridge and subnet of its own, names with this prefix. Empty/0 (the
    # default): allocated per data dir and recorded (opencs.providers.hostclaims), so that several
    # data dirs share a host; a value given here still wins but must not collide with another's
    local_nodes: bool = True
    local_bridge: str = field(default_factory=lambda: os.environ.get("OPENCS_LOCAL_BRIDGE", ""))
    local_subnet: str = field(default_factory=lambda: os.environ.get("OPENCS_LOCAL_SUBNET", ""))
    local_prefix: str = field(default_factory=lambda: os.environ.get("OPENCS_LOCAL_PREFIX", ""))
    registry_port: int = field(default_factory=lambda: int(_env_float("OPENCS_REGISTRY_PORT", 0)))
    # Kubernetes masters' etcd syncs to disk (off: --unsafe-no-fsync, for tests on a busy disk only)
    kubernetes_etcd_fsync: bool = field(default_factory=lambda: os.environ.get("OPENCS_K8S_ETCD_FSYNC", "1") != "0")
    # the OCI runtime of Kubernetes nodes: crun or runc; empty (the default): crun where installed
    kubernetes_oci_runtime: str = field(default_factory=lambda: os.environ.get("OPENCS_K8S_OCI_RUNTIME", ""))
    monitor_interval: float = field(default_factory=lambda: _env_float("OPENCS_MONITOR_INTERVAL", 3.0))
    # container and node usage (GET /metrics/containers) read every this many seconds; 0 = off
    usage_interval: float = field(default_factory=lambda: _env_float("OPENCS_USAGE_INTERVAL", 15.0))
    # events of clusters and projects (GET /clusters/{id}/events) are kept this many seconds
    events_retention: float = field(default_factory=lambda: _env_float("OPENCS_EVENTS_RETENTION", 7 * 86400.0))
    # containers that died are read from the engines' event API every this many seconds; 0 = off
    container_events_interval: float = field(
        default_factory=lambda: _env_float("OPENCS_CONTAINER_EVENTS_INTERVAL", 2.0))
    # the monitoring stack (opencs monitoring enable): Prometheus' scrape and rule evaluation interval
    monitoring_interval: float = field(default_factory=lambda: _env_float("OPENCS_MONITORING_INTERVAL", 15.0))
    # this process serves /hook/registry (opencs server, not opencs worker): it may own the bundled
    # registry's push notifications (a lease among processes sharing the store)
    registry_notifications: bool = True
    # per-cluster Application API endpoints (master_url = https://<advertise host>:<port>), see opencs.appapi
    appapi: bool = True
    appapi_host: str = "127.0.0.1"  # where the listeners bind
    # one port per cluster, kept across restarts; (0, 0): a block of 17000-17999 allocated per data dir
    appapi_port_range: tuple[int, int] = (0, 0)
    appapi_advertise_host: str = ""  # host in master_url and the certificate; default appapi_host
    # simple routing (spec §13): one HAProxy, one HTTP port per cluster (routing_url), see opencs.routing
    routing: bool = True
    routing_host: str = "127.0.0.1"  # where the per-cluster frontends bind (and the host in routing_url)
    routing_port_range: tuple[int, int] = (0, 0)  # (0, 0): a block of 18000-18999 allocated per data dir

    # lifetime of a cluster client certificate from GET /clusters/{id}/certs without TemporaryDurationMinutes
    client_cert_days: int = field(default_factory=lambda: int(_env_float("OPENCS_CLIENT_CERT_DAYS", 365)))

    # new triggers need Standard Webhooks signatures unless CreateTrigger says `signed: false`
    trigger_signed_default: bool = field(
        default_factory=lambda: os.environ.get("OPENCS_TRIGGER_SIGNED", "").lower() in ("1", "true", "yes"))

    # bearer token that opens /metrics to peers other than loopback (empty: loopback only)
    metrics_token: str = field(default_factory=lambda: os.environ.get("OPENCS_METRICS_TOKEN", ""))
    # the API port speaks HTTPS (`opencs server` decides: opencs.pki.server_tls.decide_mode)
    tls: bool = False
    # the address clients use to reach this API (trigger URLs, the start-up line); default
    # <scheme>://<host>:<port>, for a wildcard host the address of the default route
    public_url: str = field(default_factory=lambda: os.environ.get("OPENCS_PUBLIC_URL", ""))

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        if not self.public_url:
            host = self.host
            if host in ("0.0.0.0", "::"):
                from opencs.pki.server_tls import advertised_host

                host = advertised_host(host)
            host = f"[{host}]" if ":" in host else host
            self.public_url = f"{'https' if self.tls else 'http'}://{host}:{self.port}"
        self.public_url = self.public_url.rstrip("/")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # plain postgresql:// means psycopg 3 here (the driver we ship)
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{self.data_dir / 'opencs.db'}"

    @property
    def resolved_secret_key_file(self) -> Path:
        env = os.environ.get("OPENCS_SECRET_KEY_FILE")
        return Path(env) if env else (self.secret_key_file or self.data_dir / "secret.key")
