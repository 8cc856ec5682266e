"""Token authentication of the bundled registry (issue 10 item 4), against Debian's real
docker-registry: opencs's realm issues the tokens, distribution checks them. The client side follows
the Docker token flow as docker and containerd do (401 challenge, GET realm, bearer); the docker CLI
itself runs against it on a real swarm in tests/appapi/test_triggers_e2e.py."""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencs.registry.bundled import REGISTRY_BIN, BundledRegistry
from opencs.registry.image import BUSYBOX, build_image, push_image, seed_busybox
from opencs.registry.realm import RealmListener
from opencs.registry.tokens import TokenAuthConfig
from opencs.services.registry_access import parse_scopes
from opencs.store.tenancy import ROOT_ACCOUNT_ID
from tests.conftest import free_port

pytestmark = [
    pytest.mark.integration,  # runs Debian's docker-registry and the realm listener
    pytest.mark.skipif(not REGISTRY_BIN.exists(), reason=f"{REGISTRY_BIN} missing (apt-get install docker-registry)"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason=f"{BUSYBOX} missing (apt-get install busybox-static)"),
]


class Bearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


class Setup:
    def __init__(self, plane: Any, reg: BundledRegistry) -> None:
        self.plane, self.reg = plane, reg

    def challenge(self) -> dict[str, str]:
        r = httpx.get(f"{self.reg.url}/v2/")
        assert r.status_code == 401
        return dict(re.findall(r'(\w+)="([^"]*)"', r.headers["www-authenticate"]))

    def token(self, scope: str | None, user: str = "", password: str = "") -> httpx.Response:
        ch = self.challenge()
        params = {"service": ch["service"], **({"scope": scope} if scope else {})}
        return httpx.get(ch["realm"], params=params, auth=(user, password) if user else None)

    def push(self, repo: str, creds: tuple[str, str] | None) -> str | int:
        """Push a small image as docker would; the digest, or the registry's refusing status."""
        tok = self.token(f"repository:{repo}:pull,push", *(creds or ("", "")))
        assert tok.status_code == 200, tok.text
        image = build_image([b""], cmd=("true",))
        try:
            return push_image(self.reg.url, repo, "v1", image.layers, image.config, auth=Bearer(tok.json()["token"]))
        except Exception as e:
            m = re.search(r"HTTP (\d+)", str(e))
            assert m, e
            return int(m.group(1))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    from opencs.composition import build
    from opencs.config import Settings

    plane = build(Settings(data_dir=tmp_path / "data", workers=0))
    realm_port = free_port()
    realm = RealmListener(lambda: ("127.0.0.1", realm_port), plane.registry_access)
    auth = TokenAuthConfig(realm=f"http://127.0.0.1:{realm_port}/token", rootcertbundle=plane.registry.signer.ensure())
    reg = BundledRegistry(tmp_path / "registry", f"127.0.0.1:{free_port()}", token_auth=auth)
    realm.start()
    try:
        reg.ensure_running()
        yield Setup(plane, reg)
    finally:
        with contextlib.suppress(Exception):
            reg.stop()
        realm.stop()
        plane.close()


def test_token_flow_against_the_real_registry(setup: Setup) -> None:
    plane, reg = setup.plane, setup.reg
    seed = seed_busybox(reg.url, auth=plane.registry.bearer())  # opencs's own push, a locally signed token
    assert seed.pushed
    owner_ak, owner_sk = plane.keys.create("owner of default")  # the first account ("default")
    other_id, other_ak, other_sk = plane.accounts.create_account("team-b")

    # library/* pulls anonymously (the nodes' mirror); without a token nothing at all
    assert httpx.get(f"{reg.url}/v2/library/busybox/manifests/latest").status_code == 401
    anon = setup.token("repository:library/busybox:pull")
    assert anon.status_code == 200
    m = httpx.get(f"{reg.url}/v2/library/busybox/manifests/latest", auth=Bearer(anon.json()["token"]),
                  headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert m.status_code == 200 and m.headers["Docker-Content-Digest"] == seed.digest

    # push: anonymous refused; into another account's namespace refused; into one's own accepted
    assert setup.push("default/app", None) == 401
    assert setup.push("team-b/app", (owner_ak, owner_sk)) == 401
    assert setup.push(f"{other_id}/app", (owner_ak, owner_sk)) == 401
    assert setup.push("library/evil", (other_ak, other_sk)) == 401  # only the operator pushes shared images
    assert str(setup.push("default/app", (owner_ak, owner_sk))).startswith("sha256:")
    assert str(setup.push("team-b/app", (other_ak, other_sk))).startswith("sha256:")
    assert str(setup.push(f"{other_id}/app", (other_ak, other_sk))).startswith("sha256:")

    # what docker login sends (no scope): right credentials 200, wrong ones 401
    assert setup.token(None, owner_ak, owner_sk).status_code == 200
    assert setup.token(None, owner_ak, "wrong").status_code == 401
    assert setup.token(None, "cluster-c123", "x").status_code == 401
    claims = json.loads(base64.urlsafe_b64decode(anon.json()["token"].split(".")[1] + "=="))
    assert claims["access"] == [{"type": "repository", "name": "library/busybox", "actions": ["pull"]}]

    trail = plane.audit.query(None, action="cr:GetAuthorizationToken", limit=1000)
    assert len(trail) == 11
    assert [e.outcome.split()[0] for e in trail[-3:]] == ["200", "401", "401"]
    assert trail[-3].access_key_id == owner_ak and trail[-3].resource == "login"
    assert plane.audit.verify().ok


def test_sub_user_by_policy_and_nodes_by_cluster(setup: Setup) -> None:
    from opencs.services.registry_access import Caller

    plane = setup.plane
    access = plane.registry_access
    acct = ROOT_ACCOUNT_ID
    plane.accounts.create_user(acct, "ci")
    plane.accounts.create_policy(acct, "pull-app", json.dumps({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "cr:PullRepository", "Resource": "acs:cr:*:*:repository/default/*"},
        {"Effect": "Allow", "Action": "cr:PushRepository", "Resource": "acs:cr:*:*:repository/default/app"}]}))
    plane.accounts.attach(acct, "ci", "pull-app")
    key, secret = plane.accounts.create_key(acct, "ci")
    ci = access.authenticate("Basic " + base64.b64encode(f"{key.access_key_id}:{secret}".encode()).decode())
    assert ci is not None and ci.principal is not None and not ci.principal.is_owner
    assert access.allowed(ci, "default/app") == {"pull", "push"}
    assert access.allowed(ci, "default/db") == {"pull"}
    assert access.allowed(ci, f"{acct}/db") == set()  # the policy names the "default" namespace only
    assert access.allowed(ci, "busybox") == {"pull"}
    assert access.namespaces(acct) == {acct, "default"}
    # a cluster's node credential: its account's namespaces, pull only; unknown clusters refused
    node = Caller(cluster_id="c1", account_id=acct)
    assert access.allowed(node, "default/app") == {"pull"} and access.allowed(node, "team-b/app") == set()
    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    # malformed or wrong credentials are refused; a node credential only for a cluster that exists
    for bad in ("Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
                basic(key.access_key_id, "wrong"), basic("cluster-c404", access.nodes.password("c404"))):
        assert access.authenticate(bad) is None, bad
    assert access.token(basic(key.access_key_id, secret), {"service": ["elsewhere"]}, "127.0.0.1")[0] == 400
    assert access.token("Basic !!!", {}, "127.0.0.1")[0] == 401
    assert parse_scopes(["repository:a/b:pull,push repository:c:pull", "registry:catalog:*"]) == [
        *parse_scopes(["repository:a/b:pull,push"]), *parse_scopes(["repository:c:pull"])]


def test_push_with_a_registry_password(setup: Setup) -> None:
    """The password a user set (CreateUserInfo) logs in as the user: its namespaces, its policies;
    the pushing token's subject leads back to the user (what image-update triggers check)."""
    plane = setup.plane
    owner_ak, _ = plane.keys.create("owner of default")
    owner = plane.accounts.principal(owner_ak)
    _, other_ak, _ = plane.accounts.create_account("team-b")
    other = plane.accounts.principal(other_ak)
    assert owner is not None and other is not None
    assert plane.registry_logins.set_password(owner, "Own3r-pass") == "owner@default"
    assert plane.registry_logins.set_password(other, "Team-b-pass") == "owner@team-b"
    assert str(setup.push("default/app", ("owner@default", "Own3r-pass"))).startswith("sha256:")
    assert str(setup.push("default/app", ("default", "Own3r-pass"))).startswith("sha256:")  # the account name
    assert setup.push("default/app", ("team-b", "Team-b-pass")) == 401  # another account's namespace
    assert str(setup.push("team-b/app", ("team-b", "Team-b-pass"))).startswith("sha256:")
    assert setup.token(None, "owner@default", "Team-b-pass").status_code == 401  # wrong password: docker login fails
    tok = setup.token("repository:default/app:push", "owner@default", "Own3r-pass").json()["token"]
    sub = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "=="))["sub"]
    assert plane.registry_access.pusher(sub) == plane.accounts.user_principal(plane.accounts.owner(ROOT_ACCOUNT_ID))
    logins = [e for e in plane.audit.query(None, action="cr:GetAuthorizationToken", limit=100)
              if e.resource == "login"]
    assert [e.outcome.split()[0] for e in logins] == ["401"] and logins[0].user_name == ""


def test_a_nodes_own_credential_through_the_oauth2_form(setup: Setup) -> None:
    """What Kubernetes nodes' containerd sends: `node-<instance>` with the password derived for that
    instance in that cluster, as the OAuth2 password grant (POST); it counts only while the instance
    is a member of the cluster."""
    from opencs.store.db import utcnow
    from opencs.store.models import Cluster, InstanceRow

    plane, access = setup.plane, setup.plane.registry_access
    _, other_ak, other_sk = plane.accounts.create_account("team-b")
    cid, iid, now = "cnodecredentialtest", "i-nodecredentialtest01", utcnow()
    with plane.db.session() as s:
        s.add(Cluster(cluster_id=cid, name="k", cluster_type="Kubernetes", state="running", size=1,
                      region_id="local", account_id=ROOT_ACCOUNT_ID, spec={}, created=now, updated=now))
        s.add(InstanceRow(instance_id=iid, provider="local", cluster_id=cid, role="worker", state="running",
                          created=now, updated=now))
    assert str(setup.push("team-b/app", (other_ak, other_sk))).startswith("sha256:")
    password = access.nodes.machine_password(cid, iid)
    ch = setup.challenge()

    def form(user: str, pw: str, scope: str) -> httpx.Response:
        return httpx.post(ch["realm"], data={"grant_type": "password", "username": user, "password": pw,
                                             "service": ch["service"], "scope": scope, "client_id": "containerd"})

    r = form(f"node-{iid}", password, "repository:default/app:pull,push repository:team-b/app:pull "
                                      "repository:library/busybox:pull")
    assert r.status_code == 200, r.text
    claims = json.loads(base64.urlsafe_b64decode(r.json()["access_token"].split(".")[1] + "=="))
    assert claims["sub"] == f"node-{iid}"
    assert {a["name"]: a["actions"] for a in claims["access"]} == {
        "default/app": ["pull"], "team-b/app": [], "library/busybox": ["pull"]}  # never push, never others'
    assert access.pusher(claims["sub"]) is None
    assert form(f"node-{iid}", "wrong", "repository:default/app:pull").status_code == 401
    assert form(f"node-{iid}", access.nodes.machine_password("cother", iid), "").status_code == 401
    assert httpx.post(ch["realm"], data={"grant_type": "refresh_token"}).status_code == 400
    # GET with Basic (what docker sends) takes the same credential
    assert setup.token("repository:default/app:pull", f"node-{iid}", password).status_code == 200
    # the node leaves the cluster: refused from the next request on
    with plane.db.session() as s:
        s.get(InstanceRow, iid).cluster_id = None  # type: ignore[union-attr]
    assert form(f"node-{iid}", password, "repository:default/app:pull").status_code == 401
    outcomes = [e.outcome for e in plane.audit.query(None, action="cr:GetAuthorizationToken", limit=100)
                if e.user_name == f"node-{iid}" or e.outcome.startswith("401")]
    assert outcomes[0].startswith("200 granted default/app:pull team-b/app:- library/busybox:pull"), outcomes
    assert password not in repr(plane.audit.query(None, limit=1000))
    from opencs.machine import RegistryAuth

    assert password not in repr(RegistryAuth("10.0.0.1:5000", f"node-{iid}", password))
