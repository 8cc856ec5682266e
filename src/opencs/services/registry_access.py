"""Who may pull and push what in the bundled registry (spec §12, issue 10 item 4).

Namespaces (the first path component of a repository):
  * `library/*` and `opencs/*` are the shared images (busybox, the pause image, CoreDNS): anyone may
    pull them, anonymously too (nodes and containerd's docker.io mirror pull them without a
    credential); only opencs itself and the operator (the first account's owner) push there.
  * every other namespace belongs to one account: its account id, and its name when that is a valid
    repository component (lowercase letters, digits, `.`/`_`/`-` inside, not all digits, not a
    shared namespace). Its owner pulls and pushes; a sub-user as its policies allow
    `cr:PullRepository` / `cr:PushRepository` on `acs:cr:<region>:<account>:repository/<ns>/<name>`.
  * a cluster's nodes pull with the cluster's node credential (user `cluster-<id>`, a password
    derived from a key of the data dir): its account's namespaces, pull only. A node whose runtime
    pulls by itself (Kubernetes' containerd) holds a credential of its own, `node-<instance id>`,
    derived from the cluster and the instance: the same rights, and only while that instance is a
    member of that cluster (removed, deleted or moved to another cluster: refused).

Credentials are Basic: an AccessKey id and secret (what `docker login` sends), a login name with
the registry password its user set (opencs.services.registry_logins), or the node credential. A
wrong one is a 401 (so `docker login` fails); a right one asking for more than it may gets a token
granting only what it may (the registry then refuses the rest). Every token request
goes on the audit trail as `cr:GetAuthorizationToken`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from opencs import ids
from opencs.machine import RegistryAuth
from opencs.registry.tokens import SERVICE, Access
from opencs.services.accounts import AccountService, Principal
from opencs.services.audit import AuditService
from opencs.services.keys import KeyService
from opencs.services.ownership import ResourceOwners
from opencs.services.policies import decide, decide_within
from opencs.services.registry_logins import RegistryLogins
from opencs.store.tenancy import ROOT_ACCOUNT_ID

SHARED = ("library", "opencs")
NODE_USER = "cluster-"
MACHINE_USER = "node-"  # one node's own credential: node-<instance id>
PASSWORD_USER = "user:"  # the subject of a token issued to a registry password login: "user:<user_id>"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


class Signer(Protocol):
    def issue(self, subject: str, access: Sequence[Access], seconds: int = ...) -> str: ...


@dataclass(frozen=True)
class Caller:
    """Who asks for a token: a user (principal), a cluster's nodes (cluster_id; one of them:
    instance_id too) or nobody."""

    principal: Principal | None = None
    cluster_id: str = ""
    account_id: str = ""
    instance_id: str = ""

    @property
    def subject(self) -> str:
        if self.principal is not None:
            return self.principal.access_key_id or f"{PASSWORD_USER}{self.principal.user_id}"
        if self.instance_id:
            return f"{MACHINE_USER}{self.instance_id}"
        return f"{NODE_USER}{self.cluster_id}" if self.cluster_id else ""


def parse_scopes(values: Sequence[str]) -> list[Access]:
    """`repository:team/app:pull,push` (several per value, space separated, as containerd sends)."""
    out = []
    for value in values:
        for scope in value.split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and name:
                out.append(Access(name, tuple(a for a in actions.split(",") if a in ("pull", "push", "*"))))
    return out


class NodeCredentials:
    """The node credential of each cluster, derived from one key of the data dir (nothing stored)."""

    def __init__(self, key: bytes, endpoint: Callable[[], str | None]) -> None:
        self.key = key
        self.endpoint = endpoint

    def password(self, cluster_id: str) -> str:
        return hmac.new(self.key, f"registry-node|{cluster_id}".encode(), hashlib.sha256).hexdigest()

    def login(self, cluster_id: str) -> tuple[str, str, str] | None:
        """(registry, user, password) the cluster's engines pull with, passed with the services they
        run as `docker service create --with-registry-auth` does; None without a bundled registry."""
        registry = self.endpoint()
        return (registry, f"{NODE_USER}{cluster_id}", self.password(cluster_id)) if registry else None

    def machine_password(self, cluster_id: str, instance_id: str) -> str:
        return hmac.new(self.key, f"registry-node|{cluster_id}|{instance_id}".encode(), hashlib.sha256).hexdigest()

    def node_auth(self, cluster_id: str, instance_id: str) -> RegistryAuth | None:
        """The credential one node's runtime pulls with by itself (written into the machine, 0600);
        None without a bundled registry."""
        registry = self.endpoint()
        if not registry:
            return None
        return RegistryAuth(registry, f"{MACHINE_USER}{instance_id}", self.machine_password(cluster_id, instance_id))


class RegistryAccess:
    def __init__(self, accounts: AccountService, keys: KeyService, owners: ResourceOwners, audit: AuditService,
                 signer: Signer, nodes: NodeCredentials, region: str, logins: RegistryLogins | None = None) -> None:
        self.accounts = accounts
        self.logins = logins
        self.keys = keys
        self.owners = owners
        self.audit = audit
        self.signer = signer
        self.nodes = nodes
        self.region = region

    # ------------------------------------------------------------ credentials
    def authenticate(self, authorization: str) -> Caller | None:
        """The caller of a token request; None when credentials were sent and are wrong."""
        if not authorization:
            return Caller()
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not sep:
            return None
        if user.startswith(MACHINE_USER):
            return self._machine(user[len(MACHINE_USER):], password)
        if user.startswith(NODE_USER):
            cid = user[len(NODE_USER):]
            account = self.owners.cluster(cid)
            if account is None or not hmac.compare_digest(password, self.nodes.password(cid)):
                return None
            return Caller(cluster_id=cid, account_id=account)
        secret = self.keys.active_secret(user)
        if secret is None:  # not an AccessKey: a login name with its registry password
            who = self.logins.verify(user, password) if self.logins is not None else None
            return Caller(principal=who, account_id=who.account_id) if who is not None else None
        if not hmac.compare_digest(password.encode(), secret.encode()):
            return None
        who = self.accounts.principal(user)
        return Caller(principal=who, account_id=who.account_id) if who is not None else None

    def _machine(self, instance_id: str, password: str) -> Caller | None:
        cid = self.owners.member_of(instance_id)  # now, not cached: a removed node is refused at once
        account = self.owners.cluster(cid) if cid else None
        if not cid or account is None:
            return None
        if not hmac.compare_digest(password, self.nodes.machine_password(cid, instance_id)):
            return None
        return Caller(cluster_id=cid, account_id=account, instance_id=instance_id)

    # ------------------------------------------------------------ rules
    def namespaces(self, account_id: str) -> set[str]:
        names = {account_id}
        for acct, name, _ in self.accounts.accounts():
            if acct == account_id and _COMPONENT.match(name) and not name.isdigit() and name not in SHARED:
                names.add(name)
        return names

    def allowed(self, caller: Caller, repository: str) -> set[str]:
        ns = repository.split("/", 1)[0] if "/" in repository else "library"
        who = caller.principal
        if ns in SHARED:
            operator = who is not None and who.is_owner and who.account_id == ROOT_ACCOUNT_ID
            return {"pull", "push"} if operator else {"pull"}
        if not caller.account_id or ns not in self.namespaces(caller.account_id):
            return set()
        if who is None:  # the cluster's nodes
            return {"pull"}
        if who.is_owner:
            return {"pull", "push"}
        res = f"acs:cr:{self.region}:{who.account_id}:repository/{repository}"
        return {a for a, act in (("pull", "cr:PullRepository"), ("push", "cr:PushRepository"))
                if decide(who.statements, [act], res, {})}

    def grant(self, caller: Caller, wanted: Sequence[Access]) -> list[Access]:
        out = []
        for w in wanted:
            may = self.allowed(caller, w.name)
            acts = tuple(a for a in ("pull", "push") if a in may and (a in w.actions or "*" in w.actions))
            out.append(Access(w.name, acts))
        return out

    # ------------------------------------------------------------ the realm
    def token(self, authorization: str, query: dict[str, list[str]], source: str) -> tuple[int, dict[str, object]]:
        scopes = query.get("scope", [])
        what = " ".join(scopes)[:400] or "login"
        caller = self.authenticate(authorization)
        if caller is None:
            self._record(None, what, source, "401 wrong credentials")
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "wrong registry credentials"}]}
        if query.get("service", [SERVICE])[0] != SERVICE:
            self._record(caller, what, source, "400 unknown service")
            return 400, {"errors": [{"code": "UNSUPPORTED", "message": f"this realm serves {SERVICE} only"}]}
        granted = self.grant(caller, parse_scopes(scopes))
        token = self.signer.issue(caller.subject, granted)
        shown = " ".join(f"{g.name}:{','.join(g.actions) or '-'}" for g in granted)
        self._record(caller, what, source, f"200 granted {shown}" if granted else "200")
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return 200, {"token": token, "access_token": token, "expires_in": 300, "issued_at": issued}

    def _record(self, caller: Caller | None, what: str, source: str, outcome: str) -> None:
        who = caller.principal if caller is not None else None
        if caller is not None and who is None and caller.cluster_id:
            who = Principal("", caller.account_id, "", caller.subject, False, ())
        self.audit.record(who, "cr:GetAuthorizationToken", what, source, ids.request_id(), outcome)

    # ------------------------------------------------------------ pushes
    def pusher(self, actor: str) -> Principal | None:
        """The user behind a pushing token's subject (the notification's actor); nodes never push."""
        if not actor or actor.startswith((NODE_USER, MACHINE_USER)) or actor == "opencs":
            return None
        if actor.startswith(PASSWORD_USER):
            return self.accounts.principal_of_user(actor[len(PASSWORD_USER):])
        return self.accounts.principal(actor)

    def may_redeploy(self, who: Principal, cluster_id: str, project: str) -> bool:
        if self.owners.cluster(cluster_id) != who.account_id:
            return False
        if who.is_owner:
            return True
        base = f"acs:cs:{self.region}:{who.account_id}:cluster/{cluster_id}"
        return decide_within(who.statements, ["cs:RedeployProject"], [base, f"{base}/project/{project}"], {})

    def record_push(self, who: Principal | None, repository: str, tag: str, source: str, outcome: str) -> None:
        acct = who.account_id if who is not None else ""
        self.audit.record(who, "cr:PushRepository", f"acs:cr:{self.region}:{acct}:repository/{repository}:{tag}",
                          source, ids.request_id(), outcome)
