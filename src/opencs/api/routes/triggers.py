"""Trigger management (signed API, shape of today's CreateTrigger/DescribeTriggers/DeleteTrigger)
and the public invocation URL of spec §11 (authenticated by the trigger's secret)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from opencs.api.body import json_object, validate
from opencs.api.deps import services
from opencs.api.errors import request_id_of
from opencs.api.schemas import TOKEN_MAX, ClusterId, QueryText, TriggerId, _Body
from opencs.errors import ApiError
from opencs.services.accounts import Principal
from opencs.services.events import alert_cause
from opencs.services.triggers import TriggerService, parse_token
from opencs.services.webhooks import WebhookHeaders

WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")

router = APIRouter()


class CreateTrigger(_Body):
    project_id: Annotated[str, Field(min_length=1, max_length=64)]
    action: str
    cluster_id: str | None = None
    service: str = ""
    image_update: bool = False
    # opencs: calls need a Standard Webhooks signature (default: the server's OPENCS_TRIGGER_SIGNED)
    signed: bool | None = None
    type: str | None = None  # sent by the Tea SDK (Kubernetes "deployment"); not used for Swarm


class RotateTrigger(_Body):
    grace_seconds: Annotated[int, Field(ge=0, le=7 * 24 * 3600)] = 3600


def _svc(request: Request) -> TriggerService:
    return services(request).triggers


@router.post("/clusters/{cluster_id}/triggers")
async def create_trigger(cluster_id: ClusterId, request: Request) -> JSONResponse:
    body = validate(CreateTrigger, await json_object(request))
    if body.cluster_id and body.cluster_id != cluster_id:
        from opencs.errors import BadRequest

        raise BadRequest("Field 'cluster_id': differs from the cluster in the path")
    out = await to_thread.run_sync(
        lambda: _svc(request).create(cluster_id, body.project_id, body.action, body.service, body.image_update,
                                     body.signed))
    return JSONResponse({**out, "request_id": request_id_of(request)})


@router.get("/clusters/{cluster_id}/triggers")
def list_triggers(cluster_id: ClusterId, request: Request, project_id: QueryText = None,
                  Name: QueryText = None) -> list[dict[str, Any]]:  # noqa: N803 - the Tea SDK's name
    return _svc(request).list_triggers(cluster_id, project_id or Name)


@router.delete("/clusters/{cluster_id}/triggers/{trigger_id}")
def delete_trigger(cluster_id: ClusterId, trigger_id: TriggerId, request: Request) -> JSONResponse:
    _svc(request).delete(cluster_id, trigger_id)
    return JSONResponse({"id": trigger_id, "request_id": request_id_of(request)})


@router.post("/clusters/{cluster_id}/triggers/{trigger_id}/rotate")
async def rotate_trigger(cluster_id: ClusterId, trigger_id: TriggerId, request: Request) -> JSONResponse:
    body = validate(RotateTrigger, await json_object(request, required=False))
    out = await to_thread.run_sync(_svc(request).rotate, cluster_id, trigger_id, body.grace_seconds)
    return JSONResponse({**out, "request_id": request_id_of(request)})


@router.api_route("/hook/trigger", methods=["GET", "POST"])
async def invoke_trigger(
    request: Request,
    triggerUrl: str = Query("", max_length=TOKEN_MAX),  # noqa: N803 - the spec's parameter names
    secret: str = Query("", max_length=TOKEN_MAX),
    type: str | None = Query(None, max_length=32),  # noqa: A002
    step: str | None = Query(None, max_length=32),
    wait: bool = Query(False),
    timeout: float = Query(120.0, gt=0, le=600),
) -> JSONResponse:
    """Answers at once with the task id; with `wait=true` when the task has ended. A signed trigger
    needs the webhook-id/-timestamp/-signature headers (Standard Webhooks) over the body as sent."""
    rt = services(request)
    signature = WebhookHeaders.of({k: request.headers.get(k, "") for k in WEBHOOK_HEADERS})
    raw = await request.body()
    try:
        inv = await to_thread.run_sync(lambda: rt.triggers.invoke(triggerUrl, secret, type, step, signature, raw))
    except ApiError as e:
        outcome = f"{e.status} {e.code}"
        await to_thread.run_sync(lambda: _audit(request, triggerUrl, outcome))
        raise
    await to_thread.run_sync(lambda: _audit(request, triggerUrl, f"202 {inv.task_id}"))
    await to_thread.run_sync(lambda: _decision(request, triggerUrl, type, step, inv.task_id, raw))
    body: dict[str, Any] = {"trigger_id": inv.trigger_id, "action": inv.action, "task_id": inv.task_id,
                            "request_id": request_id_of(request)}
    if not wait:
        return JSONResponse(body, status_code=202)
    end = time.monotonic() + timeout
    while True:
        row = await to_thread.run_sync(rt.tasks.final, inv.task_id)  # a coalesced call: the run it joined
        if row.state in ("success", "fail") or time.monotonic() > end:
            break
        await _sleep(0.2)
    body["state"] = row.state if row.state in ("success", "fail") else "timeout"
    if row.state == "fail":
        body["error"] = {"code": row.error_code, "message": row.error_message}
    status = {"success": 200, "fail": 409}.get(row.state, 504)
    return JSONResponse(body, status_code=status)


def _audit(request: Request, token: str, outcome: str) -> None:
    """A trigger call on the audit trail of the trigger's cluster's account (who: the trigger)."""
    rt = services(request)
    try:
        cluster_id, _project, _kind, trigger_id = parse_token(token)
    except ApiError:
        cluster_id, trigger_id = "", ""
    account = (rt.authorizer.owners.cluster(cluster_id) or "") if cluster_id else ""
    region = rt.settings.regions[0] if rt.settings.regions else "*"
    who = Principal("", account, "", f"trigger {trigger_id}" if trigger_id else "trigger", False, ())
    resource = f"acs:cs:{region}:{account}:cluster/{cluster_id}/trigger/{trigger_id}" if trigger_id else "trigger"
    client = request.client
    rt.audit.record(who, "cs:InvokeTrigger", resource, client.host if client else "", request_id_of(request),
                    outcome)


def _decision(request: Request, token: str, type_: str | None, step: str | None, task_id: str, raw: bytes) -> None:
    """The scaling or redeploy decision as an event of the cluster, with its cause (the alerts an
    Alertmanager call carries, else who called)."""
    cluster_id, project, kind, _ = parse_token(token)
    peer = request.client.host if request.client else "?"
    cause = alert_cause(raw) or f"trigger called from {peer}"
    reason, what = "Redeploy", "redeploy"
    if kind == "scaling":
        out = type_ == "scale_out"
        reason, what = ("ScaleOut" if out else "ScaleIn"), f"scale {'out' if out else 'in'} by {step}"
    services(request).events.record(cluster_id, "scaling", reason, f"{what} (task {task_id}): {cause}", project)


async def _sleep(s: float) -> None:
    import anyio

    await anyio.sleep(s)


@router.post("/hook/registry", include_in_schema=False)
async def registry_events(request: Request) -> JSONResponse:
    """Notifications of the bundled registry (distribution's webhook): a tag pushed by a user redeploys
    the projects whose image-update triggers use it, of that user's account and as far as the user
    may redeploy them (`actor` is the pushing token's subject: the AccessKey id). A push without an
    actor (no token, or opencs's own seeding) fires nothing. Each pushed tag goes on the audit trail."""
    import hmac
    import json

    from opencs.errors import BadRequest, Forbidden

    rt = services(request)
    expected = rt.registry.notify_token()
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not expected or not hmac.compare_digest(given, expected):
        raise Forbidden("not the bundled registry", code="InvalidRegistryToken")
    try:
        envelope = json.loads(await request.body())
    except ValueError:
        raise BadRequest("not a registry notification envelope", code="MalformedJSON") from None
    tasks: list[str] = []
    for repo, tag, actor, source in _pushes(envelope):
        tasks += await to_thread.run_sync(_on_push, rt, repo, tag, actor, source)
    return JSONResponse({"tasks": tasks, "request_id": request_id_of(request)})


def _pushes(envelope: Any) -> list[tuple[str, str, str, str]]:
    """(repository, tag, actor, pusher's address) of each manifest pushed under a tag."""
    out = []
    for ev in envelope.get("events", []) if isinstance(envelope, dict) else []:
        if not isinstance(ev, dict):
            continue
        target, actor, req = (_dict(ev.get(k)) for k in ("target", "actor", "request"))
        if ev.get("action") == "push" and target.get("tag") and "manifest" in str(target.get("mediaType", "")):
            out.append((str(target.get("repository", "")), str(target["tag"]), str(actor.get("name") or ""),
                        str(req.get("addr") or "").rsplit(":", 1)[0]))
    return out


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _on_push(rt: Any, repo: str, tag: str, actor: str, source: str) -> list[str]:
    access = rt.registry_access
    who = access.pusher(actor)
    if who is None:
        access.record_push(None, repo, tag, source, f"pushed by {actor or 'nobody'}: no trigger fired")
        return []
    tasks: list[str] = rt.triggers.on_image_push(repo, tag, lambda cid, project: access.may_redeploy(who, cid, project))
    access.record_push(who, repo, tag, source, f"pushed: {len(tasks)} redeploy task(s) {' '.join(tasks)}".strip())
    return tasks
