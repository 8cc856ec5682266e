"""The Application API's authorization (opencs.appapi.guard) as pure logic: route -> RAM action,
resources inside a cluster, deny wins, owners pass, /_ping for everyone."""

from __future__ import annotations

import json

import pytest

from opencs.appapi.guard import AppApiGuard, app_action, kube_verb
from opencs.services.accounts import Principal
from opencs.services.policies import parse_document

CID = "c" + "a" * 32


@pytest.mark.parametrize(
    ("method", "path", "target", "want"),
    [
        ("GET", "/projects/", "app", ("DescribeProjects", "", "")),
        ("POST", "/projects", "app", ("CreateProject", "", "")),
        ("GET", "/projects/web", "app", ("DescribeProject", "project", "web")),
        ("HEAD", "/projects/web", "app", ("DescribeProject", "project", "web")),
        ("POST", "/projects/web/redeploy", "app", ("RedeployProject", "project", "web")),
        ("POST", "/projects/web/confirm-update", "app", ("ConfirmProjectUpdate", "project", "web")),
        ("DELETE", "/projects/web", "app", ("DeleteProject", "project", "web")),
        ("POST", "/services/web_db/scale", "app", ("ScaleService", "service", "web_db")),
        ("POST", "/service/web_db/start", "app", ("StartService", "service", "web_db")),  # spec §10.20
        ("POST", "/volumes/create", "app", ("CreateVolume", "", "")),
        ("DELETE", "/volumes/data", "app", ("DeleteVolume", "volume", "data")),
        ("PUT", "/projects/web", "app", ("", "", "")),  # no such route: nobody but owners
        ("GET", "/v1.41/containers/json", "engine", ("DescribeDockerApi", "", "")),
        ("POST", "/v1.41/containers/create", "engine", ("InvokeDockerApi", "", "")),
    ],
)
def test_actions(method: str, path: str, target: str, want: tuple[str, str, str]) -> None:
    assert app_action(method, path, target) == want


@pytest.mark.parametrize(
    ("method", "path", "want"),
    [
        ("POST", "/api/v1/namespaces/default/pods", "create"),
        ("PUT", "/apis/apps/v1/namespaces/default/deployments/web", "update"),
        ("PATCH", "/apis/apps/v1/namespaces/default/deployments/web/scale", "patch"),
        ("DELETE", "/api/v1/namespaces/default/pods/web", "delete"),
        ("GET", "/api/v1/namespaces/default/pods/web/exec", "create"),  # a WebSocket exec acts in the pod
        ("GET", "/api/v1/namespaces/default/pods/web/portforward", "create"),
        ("GET", "/api/v1/namespaces/default/pods", ""),
        ("GET", "/api/v1/namespaces/default/pods/exec", ""),  # reading a pod named exec
        ("HEAD", "/version", ""),
        ("OPTIONS", "/api", ""),
    ],
)
def test_kube_verbs(method: str, path: str, want: str) -> None:
    assert kube_verb(method, path) == want


def _who(*statements: dict[str, object], owner: bool = False) -> Principal:
    doc = json.dumps({"Version": "1", "Statement": list(statements)})
    return Principal("LTAIdev", "1000000000000001", "2", "dev", owner, () if owner else parse_document(doc))


def _guard() -> AppApiGuard:
    return AppApiGuard(certs=None, region="local")  # type: ignore[arg-type]  # admit() needs no store


def _allowed(who: Principal, method: str, path: str, target: str = "app") -> bool:
    adm = _guard().admit(who, CID, method, path, target, "127.0.0.1")
    return adm is None or adm.allowed


def test_cluster_statement_covers_its_projects_and_deny_wins() -> None:
    who = _who({"Effect": "Allow", "Action": "cs:*Project*", "Resource": f"acs:cs:*:*:cluster/{CID}"},
               {"Effect": "Deny", "Action": "cs:DeleteProject", "Resource": f"acs:cs:*:*:cluster/{CID}/project/prod"})
    assert _allowed(who, "GET", "/projects/")
    assert _allowed(who, "POST", "/projects/web/redeploy")
    assert _allowed(who, "DELETE", "/projects/web")
    assert not _allowed(who, "DELETE", "/projects/prod")  # the deny on the project
    assert not _allowed(who, "POST", "/services/web_db/scale")  # not a project action
    assert not _allowed(who, "GET", "/v1.41/info", "engine")
    assert _allowed(who, "GET", "/v1.41/_ping", "engine") and _allowed(who, "HEAD", "/_ping", "engine")
    assert not _allowed(who, "PUT", "/projects/web")  # an unmapped route


def test_project_statement_does_not_cover_the_cluster() -> None:
    who = _who({"Effect": "Allow", "Action": "cs:*", "Resource": f"acs:cs:*:*:cluster/{CID}/project/web"})
    assert _allowed(who, "GET", "/projects/web") and _allowed(who, "POST", "/projects/web/stop")
    assert not _allowed(who, "GET", "/projects/other")
    assert not _allowed(who, "GET", "/projects/")  # the list is the cluster's
    assert not _allowed(who, "GET", f"/clusters/{CID}", "engine")


def test_conditions_and_owners() -> None:
    who = _who({"Effect": "Allow", "Action": "cs:DescribeProjects", "Resource": "*",
                "Condition": {"IpAddress": {"acs:SourceIp": "10.0.0.0/8"}, "Bool": {"acs:SecureTransport": True}}})
    g = _guard()
    assert g.admit(who, CID, "GET", "/projects", "app", "10.1.2.3").allowed  # type: ignore[union-attr]
    assert not g.admit(who, CID, "GET", "/projects", "app", "192.168.1.1").allowed  # type: ignore[union-attr]
    owner = _who(owner=True)
    adm = g.admit(owner, CID, "DELETE", "/projects/x", "app", "1.2.3.4")
    assert adm is not None and adm.allowed and adm.mutating and adm.action == "cs:DeleteProject"
    assert adm.resource == f"acs:cs:local:1000000000000001:cluster/{CID}/project/x"
    assert not g.admit(owner, CID, "GET", "/projects/x", "app", "").mutating  # type: ignore[union-attr]
