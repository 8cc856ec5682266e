"""Authorization of signed calls: the one step after the signature check (SignedApiMiddleware).

Each CS route maps to its RAM action name as Alibaba documents it (the SDKs' request class names,
e.g. GET /clusters -> cs:DescribeClusters) and a resource `acs:cs:<region>:<account>:cluster/<id>`.
An account owner may do everything in its account; another user needs a policy allowing the action
on the resource and none denying it (opencs.services.policies). A resource of another account is
answered 404 exactly as if it did not exist; lists show only the caller's own. The RAM API on "/"
checks its own actions (opencs.api.ram.actions), since its resources are named by parameters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from opencs.errors import ApiError, Forbidden, NotCached, NotFound
from opencs.services.accounts import AccountService, Principal
from opencs.services.ownership import ResourceOwners
from opencs.services.policies import Statement, decide
from opencs.store.tenancy import ROOT_ACCOUNT_ID, current_account

Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    method: str
    rx: re.Pattern[str]
    actions: tuple[str, ...]  # the first is the documented name; the others aliases a policy may use
    kind: str  # cluster | task | list | create | operator | any | self (the caller as a cr user)
    mutating: bool


def _r(method: str, path: str, actions: str, kind: str, mutating: bool | None = None) -> Route:
    rx = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "/?$")
    return Route(method, rx, tuple(actions.split()), kind, method != "GET" if mutating is None else mutating)


ROUTES: tuple[Route, ...] = (
    _r("GET", "/clusters", "DescribeClusters", "list"),
    _r("GET", "/api/v1/clusters", "DescribeClustersV1 DescribeClusters", "list"),
    _r("POST", "/clusters", "CreateCluster", "create"),
    _r("GET", "/clusters/{cluster_id}", "DescribeClusterDetail", "cluster"),
    _r("PUT", "/clusters/{cluster_id}", "ScaleCluster", "cluster"),
    _r("DELETE", "/clusters/{cluster_id}", "DeleteCluster", "cluster"),
    _r("POST", "/clusters/{cluster_id}/attach", "AttachInstances", "operator"),
    _r("DELETE", "/clusters/{cluster_id}/ip/{ip}", "DeleteClusterNode DeleteClusterNodes", "cluster"),
    _r("POST", "/clusters/{cluster_id}/instances/{instance_id}/reset", "ResetClusterNode", "cluster"),
    # issuing a certificate creates a credential: on record like a mutating call
    _r("GET", "/clusters/{cluster_id}/certs", "GetClusterCerts DescribeClusterCerts", "cluster", True),
    _r("GET", "/clusters/{cluster_id}/certs/states", "ListClusterCertStates", "cluster"),
    _r("DELETE", "/clusters/{cluster_id}/certs/{serial}", "RevokeClusterCert", "cluster"),
    _r("DELETE", "/clusters/{cluster_id}/certs", "RevokeClusterCerts RevokeK8sClusterKubeConfig", "cluster"),
    _r("GET", "/clusters/{cluster_id}/nodes", "DescribeClusterNodes", "cluster"),
    _r("POST", "/clusters/{cluster_id}/nodes", "DeleteClusterNodes", "cluster"),
    _r("GET", "/k8s/{cluster_id}/user_config", "DescribeClusterUserKubeconfig", "cluster", mutating=False),
    _r("POST", "/api/v2/clusters/{cluster_id}", "ScaleOutCluster", "cluster"),
    _r("POST", "/api/v2/clusters/{cluster_id}/nodes/remove", "RemoveClusterNodes", "cluster"),
    _r("POST", "/clusters/{cluster_id}/attachscript", "DescribeClusterAttachScripts", "cluster"),
    _r("POST", "/clusters/{cluster_id}/triggers", "CreateTrigger", "cluster"),
    _r("GET", "/clusters/{cluster_id}/triggers", "DescribeTrigger", "cluster"),
    _r("DELETE", "/clusters/{cluster_id}/triggers/{trigger_id}", "DeleteTrigger", "cluster"),
    _r("POST", "/clusters/{cluster_id}/triggers/{trigger_id}/rotate", "RotateTrigger CreateTrigger", "cluster"),
    # scaling alert rules on a service (issue 12): opencs's own names, cs:*AlertRule*
    _r("POST", "/clusters/{cluster_id}/alerts", "CreateAlertRule", "cluster"),
    _r("GET", "/clusters/{cluster_id}/alerts", "DescribeAlertRules", "cluster"),
    _r("GET", "/clusters/{cluster_id}/events", "DescribeClusterEvents", "cluster"),
    _r("DELETE", "/clusters/{cluster_id}/alerts/{rule_id}", "DeleteAlertRule", "cluster"),
    _r("GET", "/tasks/{task_id}", "DescribeTaskInfo", "task"),
    _r("GET", "/images", "DescribeImages", "any"),
    _r("GET", "/version", "DescribeApiVersion", "any"),
    # the machine pool is the operator's (the first account): other accounts get nodes through clusters
    _r("GET", "/instances", "DescribeInstances", "operator"),
    _r("POST", "/instances", "CreateInstances", "operator"),
    _r("POST", "/instances/register", "RegisterInstance", "operator"),
    _r("DELETE", "/instances/{instance_id}", "DeleteInstance", "operator"),
    _r("GET", "/audit", "DescribeAuditLog", "any"),
    # the control plane's monitoring stack is the operator's, like the machine pool
    _r("GET", "/monitoring", "DescribeMonitoring", "operator"),
    _r("POST", "/monitoring/enable", "EnableMonitoring", "operator"),
    _r("POST", "/monitoring/disable", "DisableMonitoring", "operator"),
    # the caller's own registry login (Container Registry's actions, on the caller as a cr user)
    _r("PUT", "/users", "cr:CreateUserInfo cr:UpdateUserInfo", "self"),
    _r("POST", "/users", "cr:UpdateUserInfo cr:CreateUserInfo", "self"),
)
# an id the routes' own validation accepts (opencs.api.schemas._path_id): only these are looked up
_WELL_FORMED = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
_RAM_MUTATING = frozenset({"CreateUser", "DeleteUser", "CreateAccessKey", "UpdateAccessKey", "DeleteAccessKey",
                           "CreatePolicy", "DeletePolicy", "AttachPolicyToUser", "DetachPolicyFromUser",
                           "CreateLoginProfile", "UpdateLoginProfile", "DeleteLoginProfile"})


class RamForbidden(Forbidden):
    code = "Forbidden.RAM"


def qualified(action: str) -> str:
    """A route's RAM action with its service: `cs:` unless it names another (`cr:CreateUserInfo`)."""
    return action if ":" in action else f"cs:{action}"


def _denied(action: str) -> RamForbidden:
    return RamForbidden(f"User not authorized to operate on the specified resource ({qualified(action)}), "
                        "or this API doesn't support RAM.")


def match(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for r in ROUTES:
        if r.method == method and (m := r.rx.match(path)):
            return r, m.groupdict()
    return None


class Audit(Protocol):
    def record(self, who: Principal | None, action: str, resource: str, source: str, request_id: str,
               outcome: str) -> None: ...


# set in the request's scope state when the reply is a list this module cuts to what the caller may
# see: the route must then answer plain (uncompressed) JSON
LIST_CUT = "opencs_list_cut"


@dataclass
class Admission:
    """What was decided for one request: who calls, what it does, how its reply is seen."""

    principal: Principal
    action: str
    resource: str
    mutating: bool
    list_filter: Callable[[bytes], bytes] | None = None


def _ram_call(scope: dict[str, Any]) -> tuple[str, str]:
    """(Action, the user/policy it names) of a RAM call, from the header (Tea) or the query (sdk-core)."""
    qs: bytes = scope.get("query_string", b"")
    q = dict(parse_qsl(qs.decode("latin-1")))
    action = next((str(v.decode("latin-1")) for k, v in scope.get("headers", []) if k.lower() == b"x-acs-action"),
                  q.get("Action", ""))
    named = [f"{kind}/{q[key]}" for kind, key in (("user", "UserName"), ("policy", "PolicyName"),
                                                 ("key", "UserAccessKeyId")) if q.get(key)]
    return action, " ".join(named)


class Authorizer:
    def __init__(self, accounts: AccountService, owners: ResourceOwners, region: str,
                 audit: Audit | None = None) -> None:
        self.accounts = accounts
        self.owners = owners
        self.region = region
        self.audit = audit
        # (account, the caller's statements or None for an owner) -> (list body, the part it may see)
        self._cuts: dict[tuple[str, tuple[Statement, ...] | None], tuple[bytes, bytes]] = {}

    def admit(self, scope: dict[str, Any], access_key_id: str, user_id: str = "") -> Admission:
        """Runs in a worker thread (store reads); raises the refusal as an ApiError. `user_id` instead of
        a key: a console session signed in with the user's password (no AccessKey; its policies apply)."""
        who = self.accounts.principal_of_user(user_id) if user_id else self.accounts.principal(access_key_id)
        return self._admit(scope, who, cached=False)

    def admit_cached(self, scope: dict[str, Any], access_key_id: str) -> Admission:
        """`admit` from memory, on the event loop: raises NotCached when the decision needs the store
        (a principal, owner or cluster map not in memory or too old) or writes it (a mutating call,
        whose refusal is put on record); the caller then runs `admit` in a worker thread. The
        decision is the one `admit` makes from the same data."""
        if self.may_write(scope):
            raise NotCached(scope["path"])
        return self._admit(scope, self.accounts.cached_principal(access_key_id), cached=True)

    @staticmethod
    def may_write(scope: dict[str, Any]) -> bool:
        """Whether `admit` may write for this request (a mutating call's refusal is put on record);
        else it only reads."""
        found = match(scope["method"], scope["path"])
        return scope["path"] == "/" or (found is not None and found[0].mutating)

    def _admit(self, scope: dict[str, Any], who: Principal | None, cached: bool) -> Admission:
        if who is None:
            raise Forbidden("the AccessKey belongs to no user", code="Forbidden.RAM")
        scope["state"]["principal"] = who
        method, path = scope["method"], scope["path"]
        if path == "/":
            action, named = _ram_call(scope)
            return Admission(who, f"ram:{action}", named, action in _RAM_MUTATING)
        found = match(method, path)
        if found is None:  # no such route (404 follows) or a new one nobody mapped: owners only
            if not who.is_owner:
                raise _denied(f"{method} {path}")
            return Admission(who, f"{method} {path}", path, method != "GET")
        route, args = found
        try:
            resource, filt = self._decide(who, route, args, _context(scope), cached)
        except ApiError as e:
            if route.mutating and self.audit is not None:
                self.audit.record(who, qualified(route.actions[0]), args.get("cluster_id", path), _source(scope),
                                  scope["state"].get("request_id", ""), f"{e.status} {e.code}")
            raise
        return Admission(who, qualified(route.actions[0]), resource, route.mutating, filt)

    def _decide(self, who: Principal, route: Route, args: dict[str, str], context: dict[str, str],
                cached: bool = False) -> tuple[str, Callable[[bytes], bytes] | None]:
        """The resource and list cut of an allowed call; raises the refusal (cached: from memory only,
        NotCached when the store is needed)."""
        resource, filt, absent = self._resource(who, route, args, cached)
        if not who.is_owner and not self._allowed(who, route, resource, context, cached):
            raise _denied(route.actions[0])
        if absent is not None:  # decided after the policy: a sub-user learns nothing it may not ask
            raise absent
        return resource, filt

    def permits(self, who: Principal, method: str, path: str, scope: dict[str, Any]) -> bool:
        """Whether `who` may make this call, decided as `admit` would but without a record: the
        console asks it to show only the buttons the user may press (scope: the browser's, for its
        source address and scheme)."""
        found = match(method, path)
        if found is None:
            return who.is_owner
        try:
            self._decide(who, found[0], found[1], _context(scope))
        except ApiError:
            return False
        return True

    def _allowed(self, who: Principal, route: Route, resource: str, context: dict[str, str],
                 cached: bool = False) -> bool:
        names = [qualified(a) for a in route.actions]
        if decide(who.statements, names, resource, context):
            return True
        # a list is allowed with the right on some of the clusters; it then shows just those
        owners = self.owners.cached_clusters() if cached and route.kind == "list" else None
        return route.kind == "list" and any(
            decide(who.statements, names, f"{resource[:-1]}{cid}", context)
            for cid, acct in (owners if owners is not None else self.owners.clusters()).items()
            if acct == who.account_id)

    def _resource(self, who: Principal, route: Route, args: dict[str, str], cached: bool = False
                  ) -> tuple[str, Callable[[bytes], bytes] | None, NotFound | None]:
        """The resource, the list cut, and the 404 of a cluster or task the caller's account does not
        have. Another account's and a nonexistent one get the same 404 here, before the route reads
        its body (whose 400 would otherwise tell them apart); a malformed id is the route's 400."""
        base = f"acs:cs:{self.region}:{who.account_id}"
        if route.kind == "cluster":
            cid = args["cluster_id"]
            absent = None
            if _WELL_FORMED.match(cid) and (self.owners.cached_cluster(cid) if cached
                                            else self.owners.cluster(cid)) != who.account_id:
                absent = NotFound(f"Cluster {cid} not found", code="ErrorClusterNotFound")
            return f"{base}:cluster/{cid}", None, absent
        if route.kind == "task":
            tid = args["task_id"]
            absent = None
            if _WELL_FORMED.match(tid) and (self.owners.cached_task(tid) if cached
                                            else self.owners.task(tid)) != who.account_id:
                absent = NotFound(f"Task {tid} not found", code="ErrorTaskNotFound")
            return f"{base}:task/{tid}", None, absent
        if route.kind == "operator" and not (who.is_owner and who.account_id == ROOT_ACCOUNT_ID):
            raise _denied(route.actions[0] + " (the machine pool belongs to the operator's account)")
        if route.kind == "list":
            return f"{base}:cluster/*", self._cluster_filter(who, [f"cs:{a}" for a in route.actions], cached), None
        if route.kind == "create":
            return f"{base}:cluster/*", None, None
        if route.kind == "self":
            return f"acs:cr:{self.region}:{who.account_id}:user/{who.user_name}", None, None
        return f"{base}:*", None, None

    def _cluster_filter(self, who: Principal, names: list[str], cached: bool = False
                        ) -> Callable[[bytes], bytes] | None:
        mine = who.account_id
        if who.is_owner and (self.owners.cached_only_owner(mine) if cached else self.owners.only_owner(mine)):
            return None  # one tenant: the reply is the owner's already (the hot path stays as it was)
        stmts = None if who.is_owner else who.statements
        region = self.region

        def visible(c: Any) -> bool:
            cid = c.get("cluster_id") if isinstance(c, dict) else None
            if not isinstance(cid, str) or self.owners.cluster(cid) != mine:
                return False
            return stmts is None or decide(stmts, names, f"acs:cs:{region}:{mine}:cluster/{cid}", {})

        key = (mine, stmts)

        def filt(body: bytes) -> bytes:
            # the list body is the service's cached one while nothing changed: so is its cut
            hit = self._cuts.get(key)
            if hit is not None and hit[0] == body:
                return hit[1]
            out = cut(body)
            if len(self._cuts) > 1000:
                self._cuts.clear()
            self._cuts[key] = (body, out)
            return out

        def cut(body: bytes) -> bytes:
            doc = json.loads(body)
            if isinstance(doc, list):
                return json.dumps([c for c in doc if visible(c)]).encode()
            if isinstance(doc, dict) and isinstance(doc.get("clusters"), list):
                doc["clusters"] = [c for c in doc["clusters"] if visible(c)]
                doc.get("page_info", {})["total_count"] = len(doc["clusters"])
                return json.dumps(doc).encode()
            return body

        return filt

    def wrap(self, adm: Admission, scope: dict[str, Any], send: Send,
             record: Callable[[Callable[[], None]], Awaitable[None]]) -> Send:
        """The reply's sender for an admitted request: rows it creates belong to the caller's account,
        a list is cut to what the caller may see, and a mutating call is put on record once answered."""
        current_account.set(adm.principal.account_id)
        if adm.list_filter is not None:
            scope["state"][LIST_CUT] = True  # the route answers plain JSON: this sender cuts it
        status = 0
        chunks: list[bytes] = []
        start: dict[str, Any] = {}

        async def sender(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if adm.list_filter is not None and status == 200:
                    start.update(message)
                    return
                await send(message)
                return
            if start:  # a list reply, held back to be filtered
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = adm.list_filter(b"".join(chunks)) if adm.list_filter else b"".join(chunks)
                start["headers"] = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                start["headers"].append((b"content-length", str(len(body)).encode()))
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)
            if adm.mutating and self.audit is not None and not message.get("more_body"):
                audit = self.audit
                rid = scope["state"].get("request_id", "")
                detail = scope["state"].get("audit_detail")  # what the route made, e.g. a certificate
                resource = f"{adm.resource}/{detail}" if detail else adm.resource
                await record(lambda: audit.record(adm.principal, adm.action, resource, _source(scope), rid,
                                                  str(status)))

        return sender


def _source(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def _context(scope: dict[str, Any]) -> dict[str, str]:
    return {"acs:sourceip": _source(scope) or "127.0.0.1",
            "acs:securetransport": "true" if scope.get("scheme") == "https" else "false"}
