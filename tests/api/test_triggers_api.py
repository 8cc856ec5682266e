"""Trigger management on the signed API and invocation at /hook/trigger (spec §11).

The project side is a recording stand-in for the Application API's projects (its own tests drive
real swarms); here we check the trigger rules: secrets, rotation, type/step, deletion, registry
notifications."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from opencs.errors import NotFound
from opencs.store.db import utcnow
from opencs.store.models import Cluster
from tests.api.test_auth_errors import assert_error
from tests.conftest import Signer
from tests.plugins import sdk_tasks


class Projects:
    """Records what triggers ask for; each action is a real (test) task."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.calls: list[tuple[Any, ...]] = []
        self.images = {"web": ["10.213.0.1:5000/team/app:v1", "busybox"]}

    def trigger_check(self, cluster_id: str, project: str, service: str | None) -> None:
        if project not in self.images:
            raise NotFound(f"Project {project} not found", code="ErrorProjectNotFound")
        if service and service != "front":
            raise NotFound(f"Service {project}_{service} not found", code="ErrorServiceNotFound")

    def trigger_redeploy(self, cluster_id: str, project: str, pull_latest: bool) -> str:
        self.trigger_check(cluster_id, project, None)
        self.calls.append(("redeploy", project, pull_latest))
        return self.rt.tasks.submit(sdk_tasks.OK, {}, cluster_id=cluster_id)

    def trigger_scale(self, cluster_id: str, project: str, service: str, delta: int) -> str:
        self.trigger_check(cluster_id, project, service)
        self.calls.append(("scale", project, service, delta))
        return self.rt.tasks.submit(sdk_tasks.OK, {}, cluster_id=cluster_id)

    def trigger_images(self, cluster_id: str, project: str) -> list[str]:
        self.trigger_check(cluster_id, project, None)
        return self.images[project]


CID = "c" + "1" * 32


@pytest.fixture
def projects(runtime: Any) -> Projects:
    now = utcnow()
    with runtime.db.session() as s:
        s.add(Cluster(cluster_id=CID, name="t", state="running", size=1, spec={}, created=now, updated=now))
    p = Projects(runtime)
    runtime.projects = runtime.triggers.projects = p
    return p


def call(client: Any, signer: Signer, method: str, path: str, body: Any = None) -> Any:
    raw = json.dumps(body).encode() if body is not None else b""
    return client.request(method, path, content=raw or None, headers=signer.headers(method, path, body=raw))


def make(client: Any, signer: Signer, **body: Any) -> dict[str, Any]:
    r = call(client, signer, "POST", f"/clusters/{CID}/triggers", {"cluster_id": CID, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_create_list_delete(client: Any, signer: Signer, projects: Projects) -> None:
    t = make(client, signer, project_id="web", action="redeploy")
    assert len(t["secret"]) == 64 and int(t["secret"], 16) >= 0
    assert t["trigger_url"].endswith(f"/hook/trigger?triggerUrl={t['token']}")
    r = call(client, signer, "GET", f"/clusters/{CID}/triggers")
    (listed,) = r.json()
    assert listed["token"] == t["token"] and listed["trigger_url"] == t["trigger_url"]
    assert "secret" not in listed and t["secret"] not in r.text
    assert call(client, signer, "DELETE", f"/clusters/{CID}/triggers/{t['id']}").status_code == 200
    assert call(client, signer, "GET", f"/clusters/{CID}/triggers").json() == []
    r = client.get("/hook/trigger", params={"triggerUrl": t["token"], "secret": t["secret"]})
    assert_error(r, 404, "ErrorTriggerNotFound")
    assert projects.calls == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"project_id": "nope", "action": "redeploy"}, 404, "ErrorProjectNotFound"),
        ({"project_id": "web", "action": "explode"}, 400, "InvalidParameter"),
        ({"project_id": "web", "action": "scaling"}, 400, "InvalidParameter"),
        ({"project_id": "web", "action": "scaling", "service": "db"}, 404, "ErrorServiceNotFound"),
        ({"project_id": "web", "action": "scaling", "service": "front", "image_update": True}, 400,
         "InvalidParameter"),
        ({"action": "redeploy"}, 400, "InvalidParameter"),
    ],
)
def test_create_rejects(client: Any, signer: Signer, projects: Projects, body: Any, status: int, code: str) -> None:
    assert_error(call(client, signer, "POST", f"/clusters/{CID}/triggers", body), status, code)
    assert call(client, signer, "GET", f"/clusters/{CID}/triggers").json() == []


def test_invoke_redeploy_get_and_post(client: Any, signer: Signer, projects: Projects) -> None:
    t = make(client, signer, project_id="web", action="redeploy")
    r = client.get("/hook/trigger", params={"triggerUrl": t["token"], "secret": t["secret"]})
    assert r.status_code == 202 and r.json()["task_id"].startswith("T-")
    r = client.post(f"/hook/trigger?triggerUrl={t['token']}=&secret={t['secret']}")  # the spec's stray "="
    assert r.status_code == 202
    assert projects.calls == [("redeploy", "web", True)] * 2


def test_wrong_or_missing_secret_changes_nothing(client: Any, signer: Signer, projects: Projects) -> None:
    t = make(client, signer, project_id="web", action="redeploy")
    assert_error(client.get("/hook/trigger", params={"triggerUrl": t["token"], "secret": "0" * 64}), 403,
                 "InvalidTriggerSecret")
    assert_error(client.get("/hook/trigger", params={"triggerUrl": t["token"]}), 403, "MissingSecret")
    assert_error(client.get("/hook/trigger", params={"secret": t["secret"]}), 400, "MissingTriggerUrl")
    assert_error(client.get("/hook/trigger", params={"triggerUrl": "garbage!", "secret": "x"}), 400,
                 "InvalidTriggerUrl")
    assert projects.calls == []


def test_scaling_type_and_step(client: Any, signer: Signer, projects: Projects) -> None:
    t = make(client, signer, project_id="web", action="scaling", service="front")
    base = {"triggerUrl": t["token"], "secret": t["secret"]}
    for bad in ({}, {"type": "scale_up", "step": "1"}, {"type": "scale_out"}, {"type": "scale_out", "step": "0"},
                {"type": "scale_out", "step": "101"}, {"type": "scale_in", "step": "two"}):
        r = client.get("/hook/trigger", params={**base, **bad})
        assert r.status_code == 400, (bad, r.text)
    assert projects.calls == []
    assert client.get("/hook/trigger", params={**base, "type": "scale_out", "step": "5"}).status_code == 202
    assert client.get("/hook/trigger", params={**base, "type": "scale_in", "step": "2"}).status_code == 202
    assert projects.calls == [("scale", "web", "front", 5), ("scale", "web", "front", -2)]


def test_rotation_keeps_url_and_grace(client: Any, signer: Signer, projects: Projects, runtime: Any) -> None:
    t = make(client, signer, project_id="web", action="redeploy")
    r = call(client, signer, "POST", f"/clusters/{CID}/triggers/{t['id']}/rotate", {"grace_seconds": 60})
    new = r.json()
    assert new["trigger_url"] == t["trigger_url"] and new["secret"] != t["secret"]
    for s in (t["secret"], new["secret"]):  # both work during the grace period
        assert client.get("/hook/trigger", params={"triggerUrl": t["token"], "secret": s}).status_code == 202
    # no grace: the old secret stops at once
    r = call(client, signer, "POST", f"/clusters/{CID}/triggers/{t['id']}/rotate", {"grace_seconds": 0})
    newest = r.json()["secret"]
    assert_error(client.get("/hook/trigger", params={"triggerUrl": t["token"], "secret": new["secret"]}), 403,
                 "InvalidTriggerSecret")
    assert client.get("/hook/trigger", params={"triggerUrl": t["token"], "secret": newest}).status_code == 202


def test_wait_reports_outcome(client: Any, signer: Signer, projects: Projects, runtime: Any) -> None:
    runtime.tasks.start(1)
    try:
        t = make(client, signer, project_id="web", action="redeploy")
        a = time.time()
        r = client.get("/hook/trigger", params={"triggerUrl": t["token"], "secret": t["secret"], "wait": "true"})
        assert r.status_code == 200 and r.json()["state"] == "success", r.text
        assert time.time() - a < 10
    finally:
        runtime.tasks.stop()


def test_registry_push_redeploys_subscribers(client: Any, signer: Signer, projects: Projects,
                                             runtime: Any) -> None:
    make(client, signer, project_id="web", action="redeploy", image_update=True)
    target = {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "repository": "team/app",
              "tag": "v1"}

    def event(actor: str | None, repository: str = "team/app") -> dict[str, Any]:
        ev: dict[str, Any] = {"action": "push", "target": {**target, "repository": repository},
                              "request": {"addr": "10.213.0.5:41000"}}
        if actor is not None:
            ev["actor"] = {"name": actor}
        return {"events": [ev]}

    assert_error(client.post("/hook/registry", json=event(signer.ak)), 403, "InvalidRegistryToken")
    auth = {"Authorization": f"Bearer {runtime.registry.notify_token()}"}

    def fired(envelope: dict[str, Any]) -> list[str]:
        r = client.post("/hook/registry", json=envelope, headers=auth)
        assert r.status_code == 200, r.text
        return list(r.json()["tasks"])

    # an unauthenticated push (no actor) and one by another account's user fire nothing
    _, other_ak, _ = runtime.accounts.create_account("other")
    assert fired(event(None)) == [] and fired(event("")) == [] and fired(event(other_ak)) == []
    assert len(fired(event(signer.ak))) == 1  # the cluster's account's owner
    assert fired(event(signer.ak, "team/other")) == []
    assert projects.calls == [("redeploy", "web", True)]
    pushes = runtime.audit.query(None, action="cr:PushRepository")
    assert [(e.access_key_id, e.outcome.split(":")[0]) for e in pushes] == [
        ("", "pushed by nobody"), ("", "pushed by nobody"), (other_ak, "pushed"), (signer.ak, "pushed"),
        (signer.ak, "pushed")]
    assert all(e.source == "10.213.0.5" for e in pushes)


def _signed_call(client: Any, t: dict[str, Any], body: str = "", msg_id: str | None = None,
                 age: float = 0.0, secret: str | None = None) -> Any:
    """POST /hook/trigger as a Standard Webhooks sender (the official `standardwebhooks` library) signs it."""
    import datetime as dt
    import uuid

    from standardwebhooks.webhooks import Webhook

    when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
               "webhook-signature": Webhook(secret or t["signing_secret"]).sign(msg_id, when, body),
               "content-type": "application/json"}
    return client.post(f"/hook/trigger?triggerUrl={t['token']}", content=body.encode(), headers=headers)


def test_signed_trigger_refuses_replays_and_stale_calls(client: Any, signer: Signer, projects: Projects,
                                                       runtime: Any) -> None:
    t = make(client, signer, project_id="web", action="redeploy", signed=True)
    assert t["signed"] is True and t["signing_secret"].startswith("whsec_")
    listed = call(client, signer, "GET", f"/clusters/{CID}/triggers").json()
    assert listed[0]["signed"] is True and t["signing_secret"] not in json.dumps(listed)
    r = _signed_call(client, t, '{"ref": "main"}', msg_id="msg_1")
    assert r.status_code == 202, r.text
    assert projects.calls == [("redeploy", "web", True)]
    refused = [
        (_signed_call(client, t, '{"ref": "main"}', msg_id="msg_1"), 409, "WebhookReplayed"),  # the same id again
        (_signed_call(client, t, "{}", age=301), 403, "WebhookTimestampStale"),
        (_signed_call(client, t, "{}", age=-400), 403, "WebhookTimestampStale"),  # from the future
        (_signed_call(client, t, "{}", secret="whsec_" + "A" * 44), 403, "InvalidWebhookSignature"),
        # the secret alone no longer fires a signed trigger
        (client.get("/hook/trigger", params={"triggerUrl": t["token"], "secret": t["secret"]}), 401,
         "WebhookSignatureRequired"),
    ]
    for r, status, code in refused:
        assert_error(r, status, code)
    # a signed body cannot be swapped for another under the same headers
    import datetime as dt

    from standardwebhooks.webhooks import Webhook

    now = dt.datetime.now(dt.UTC)
    sig = Webhook(t["signing_secret"]).sign("msg_2", now, "{}")
    r = client.post(f"/hook/trigger?triggerUrl={t['token']}", content=b'{"evil": 1}',
                    headers={"webhook-id": "msg_2", "webhook-timestamp": str(int(now.timestamp())),
                             "webhook-signature": sig})
    assert_error(r, 403, "InvalidWebhookSignature")
    assert projects.calls == [("redeploy", "web", True)], "a refused call redeployed"

    # rotation: the old signing secret works during the grace period, not after a 0-grace rotation
    rot = call(client, signer, "POST", f"/clusters/{CID}/triggers/{t['id']}/rotate", {"grace_seconds": 60}).json()
    assert rot["signing_secret"] != t["signing_secret"]
    assert _signed_call(client, t).status_code == 202
    assert _signed_call(client, rot).status_code == 202
    call(client, signer, "POST", f"/clusters/{CID}/triggers/{t['id']}/rotate", {"grace_seconds": 0})
    assert_error(_signed_call(client, rot), 403, "InvalidWebhookSignature")
    assert len(projects.calls) == 3

    # every call is on the audit trail of the cluster's account, the refused ones with their code
    entries = [e for e in runtime.audit.query(None, action="cs:InvokeTrigger", limit=100)]
    outcomes = [e.outcome.split()[-1] if e.outcome.startswith("4") else e.outcome[:3] for e in entries]
    assert outcomes.count("202") == 3 and "WebhookReplayed" in outcomes and "WebhookTimestampStale" in outcomes
    assert all(e.resource.endswith(f"cluster/{CID}/trigger/{t['id']}") and e.user_name == f"trigger {t['id']}"
               for e in entries)


def test_unsigned_by_default_signed_when_the_server_says_so(client: Any, signer: Signer, projects: Projects,
                                                          runtime: Any) -> None:
    t = make(client, signer, project_id="web", action="redeploy")
    assert t["signed"] is False and "signing_secret" not in t
    runtime.triggers.signed_default = True  # OPENCS_TRIGGER_SIGNED=true
    assert make(client, signer, project_id="web", action="redeploy")["signed"] is True
    assert make(client, signer, project_id="web", action="redeploy", signed=False)["signed"] is False
