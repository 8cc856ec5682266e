"""Who calls a cluster's master_url and whether they may: the client certificate's user, that user's
policies on every Application API call, and the audit entry of every mutating one.

The TLS layer already refused certificates of other CAs and expired ones. After the handshake the
certificate's serial names its holder (opencs.services.cluster_certs); a revoked certificate, or one
whose user or AccessKey is gone or disabled, is refused before any request is served.

Alibaba documents no RAM actions for the Swarm Application API, so these are derived the way its
other actions are named (verb + the spec's object): project routes `cs:DescribeProjects`,
`cs:CreateProject`, `cs:DescribeProject`, `cs:StartProject`, `cs:StopProject`, `cs:KillProject`,
`cs:RedeployProject`, `cs:UpdateProject`, `cs:ConfirmProjectUpdate`, `cs:RollbackProjectUpdate`,
`cs:DeleteProject`; services `cs:DescribeServices`, `cs:DescribeService`, `cs:StartService`,
`cs:StopService`, `cs:KillService`, `cs:ScaleService`; volumes `cs:CreateVolume`,
`cs:DescribeVolumes`, `cs:DescribeVolume`, `cs:DeleteVolume`; the Docker API passed to the engine
`cs:DescribeDockerApi` (GET/HEAD) and `cs:InvokeDockerApi` (everything else: run, exec, rm, ...),
`/_ping` for every valid certificate. Resources: `acs:cs:<region>:<account>:cluster/<id>` and inside
it `.../project/<name>`, `.../service/<id>`, `.../volume/<name>`; a statement on the cluster covers
what is inside it.

A Kubernetes cluster's master_url passes calls on to the apiserver, whose RBAC decides; its mutating
calls (POST, PUT, PATCH, DELETE, and exec/attach/portforward streams) are recorded as `k8s:<verb>`
on `acs:cs:<region>:<account>:cluster/<id>/<API path>`, with the apiserver's reply status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from opencs.api.authorize import Audit, RamForbidden
from opencs.services.accounts import Principal
from opencs.services.policies import decide_within


class CertIdentities(Protocol):
    def identify(self, cluster_id: str, serial: str) -> Principal:
        """The certificate's holder; raises CertificateRefused (an ApiError) when it no longer counts."""

    def client_cas(self, cluster_id: str) -> list[str]:
        """PEM CAs whose client certificates the TLS layer accepts."""


@dataclass(frozen=True)
class AppRoute:
    method: str
    rx: re.Pattern[str]
    action: str
    kind: str  # "" (the cluster) | project | service | volume


def _a(method: str, path: str, action: str) -> AppRoute:
    kind = path.split("/")[1].rstrip("s") if "{name}" in path else ""
    rx = re.compile("^" + path.replace("{name}", "(?P<name>[^/]+)") + "/?$")
    return AppRoute(method, rx, action, kind)


APP_ROUTES: tuple[AppRoute, ...] = (
    _a("GET", "/projects", "DescribeProjects"),
    _a("POST", "/projects", "CreateProject"),
    _a("GET", "/projects/{name}", "DescribeProject"),
    *(_a("POST", f"/projects/{{name}}/{verb}", f"{name}Project")
      for verb, name in (("start", "Start"), ("stop", "Stop"), ("kill", "Kill"), ("redeploy", "Redeploy"),
                         ("update", "Update"))),
    _a("POST", "/projects/{name}/confirm-update", "ConfirmProjectUpdate"),
    _a("POST", "/projects/{name}/rollback-update", "RollbackProjectUpdate"),
    _a("DELETE", "/projects/{name}", "DeleteProject"),
    _a("GET", "/projects/{name}/logs", "DescribeProjectLogs"),
    _a("GET", "/services/{name}/logs", "DescribeServiceLogs"),
    _a("GET", "/services", "DescribeServices"),
    _a("GET", "/services/{name}", "DescribeService"),
    *(_a("POST", f"/services/{{name}}/{verb}", f"{verb.capitalize()}Service")
      for verb in ("start", "stop", "kill", "scale")),
    _a("POST", "/volumes/create", "CreateVolume"),
    _a("GET", "/volumes", "DescribeVolumes"),
    _a("GET", "/volumes/{name}", "DescribeVolume"),
    _a("DELETE", "/volumes/{name}", "DeleteVolume"),
)
_PING = re.compile(r"^(?:/v\d+(?:\.\d+)?)?/_ping/?$")


@dataclass(frozen=True)
class AppAdmission:
    """What was decided for one request: who, which action on what, whether it may, and whether it
    goes on record (a mutating call, refused or not)."""

    principal: Principal
    action: str
    resource: str
    mutating: bool
    allowed: bool = True

    def refusal(self) -> RamForbidden:
        return RamForbidden(f"User not authorized to operate on the specified resource ({self.action}), "
                            "or this API doesn't support RAM.")


def app_action(method: str, path: str, target: str) -> tuple[str, str, str]:
    """(action without "cs:", resource kind, its name) of a request; path as the frontend routed it
    (the app's without /v1.NN, the engine's as sent). An unknown app path: ("", "", "")."""
    m = "GET" if method == "HEAD" else method
    if target == "engine":
        return ("DescribeDockerApi" if m == "GET" else "InvokeDockerApi"), "", ""
    if path == "/service" or path.startswith("/service/"):  # the spec's own typo (§10.20)
        path = "/services" + path[len("/service"):]
    for r in APP_ROUTES:
        if r.method == m and (found := r.rx.match(path)):
            return r.action, r.kind, found.groupdict().get("name", "")
    return "", "", ""


KUBE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
# subresources a GET opens as an upgraded stream that acts inside a pod (RBAC's verb: create)
KUBE_STREAMS = ("exec", "attach", "portforward")


def kube_verb(method: str, path: str) -> str:
    """The Kubernetes verb of a mutating call through a Kubernetes cluster's master_url ("" for a
    read: get, list, watch, proxy reads)."""
    if verb := KUBE_VERBS.get(method.upper(), ""):
        return verb
    parts = path.strip("/").split("/")  # .../pods/<name>/exec
    stream = len(parts) >= 3 and parts[-3] == "pods" and parts[-1] in KUBE_STREAMS
    return "create" if method.upper() == "GET" and stream else ""


class AppApiGuard:
    def __init__(self, certs: CertIdentities, region: str, audit: Audit | None = None) -> None:
        self.certs = certs
        self.region = region
        self.audit = audit

    def client_cas(self, cluster_id: str) -> list[str]:
        return self.certs.client_cas(cluster_id)

    def identify(self, cluster_id: str, serial: str) -> Principal:
        """Runs in a worker thread (a store read); raises CertificateRefused."""
        return self.certs.identify(cluster_id, serial)

    def admit(self, who: Principal, cluster_id: str, method: str, path: str, target: str,
              source: str) -> AppAdmission | None:
        """None for a call anyone with a valid certificate may make (/_ping). Pure: runs on the
        event loop."""
        if target == "engine" and _PING.match(path):
            return None
        action, kind, name = app_action(method, path, target)
        cluster = f"acs:cs:{self.region}:{who.account_id}:cluster/{cluster_id}"
        resource = f"{cluster}/{kind}/{name}" if kind else cluster
        mutating = method not in ("GET", "HEAD")
        label = f"cs:{action}" if action else f"{method} {path}"
        if who.is_owner:
            return AppAdmission(who, label, resource, mutating)
        context = {"acs:sourceip": source or "127.0.0.1", "acs:securetransport": "true"}
        resources = [resource, cluster] if kind else [cluster]
        allowed = bool(action) and decide_within(who.statements, [label], resources, context)
        return AppAdmission(who, label, resource, mutating, allowed)

    def kube_admission(self, who: Principal, cluster_id: str, method: str, path: str) -> AppAdmission | None:
        """A call to a Kubernetes cluster's apiserver through master_url, as the audit trail names it:
        action `k8s:<verb>`, resource the cluster's with the API path (no query, never a body). The
        apiserver's RBAC decides; opencs records. None for reads."""
        if not (verb := kube_verb(method, path)):
            return None
        cluster = f"acs:cs:{self.region}:{who.account_id}:cluster/{cluster_id}"
        return AppAdmission(who, f"k8s:{verb}", cluster + path, mutating=True)

    def record(self, adm: AppAdmission, source: str, request_id: str, outcome: str) -> None:
        """Put a mutating call on record (a worker thread: the audit log is a store write)."""
        if self.audit is not None and adm.mutating:
            self.audit.record(adm.principal, adm.action, adm.resource, source, request_id, outcome)
