"""The OpenAPI document of the control-plane API, made to say what each route really answers.

FastAPI documents a 422 that this API never sends (validation errors are 400 with
``{Code, Message, RequestId}``), knows nothing of the signature, of the error replies the services
raise, or of the bodies routes parse themselves. This module rewrites its document once: error
replies per route, the request id header on every reply, the signature as a security scheme, the
self-parsed request bodies, and one operationId per method (issue 13: checked by schemathesis).
"""

from __future__ import annotations

import warnings
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from opencs.api import schemas
from opencs.api.errors import REQUEST_ID_HEADER

# routes outside the signature (the trigger URL carries its own secret, spec §11)
# /metrics*: loopback or a metrics token instead; /attach/*: the attach script's token
UNSIGNED = {"/hook/trigger", "/metrics", "/metrics/containers", "/attach/{token}", "/attach/{token}/script"}

# what a route answers besides its success, by the errors its service raises
# 400 bad field / query, 404 unknown id, 409 state conflict, 412 no node provider, 415 body type
_ANSWERS: dict[tuple[str, str], tuple[int, ...]] = {
    ("get", "/version"): (),
    ("get", "/clusters"): (),
    ("get", "/images"): (),
    ("get", "/metrics"): (403,),
    ("get", "/metrics/containers"): (400, 403, 404),
    ("get", "/api/v1/clusters"): (400,),
    ("post", "/clusters"): (400, 409, 412, 415),
    ("get", "/clusters/{cluster_id}"): (400, 404),
    ("put", "/clusters/{cluster_id}"): (400, 404, 409, 412, 415),
    ("delete", "/clusters/{cluster_id}"): (400, 404, 409),
    ("post", "/clusters/{cluster_id}/attach"): (400, 404, 409, 412, 415),
    ("delete", "/clusters/{cluster_id}/ip/{ip}"): (400, 404, 409),
    ("post", "/clusters/{cluster_id}/instances/{instance_id}/reset"): (400, 404, 409, 412, 415),
    ("get", "/clusters/{cluster_id}/certs"): (400, 404),
    ("get", "/clusters/{cluster_id}/certs/states"): (400, 404),
    ("delete", "/clusters/{cluster_id}/certs/{serial}"): (400, 404),
    ("delete", "/clusters/{cluster_id}/certs"): (400, 403, 404),
    ("get", "/clusters/{cluster_id}/nodes"): (400, 404),
    ("get", "/k8s/{cluster_id}/user_config"): (400, 404, 409),
    ("post", "/api/v2/clusters/{cluster_id}"): (400, 404, 409, 412, 415),
    ("post", "/api/v2/clusters/{cluster_id}/nodes/remove"): (400, 404, 409, 415),
    ("post", "/clusters/{cluster_id}/nodes"): (400, 404, 409, 415),
    ("post", "/clusters/{cluster_id}/attachscript"): (400, 404, 409, 415),
    # the attach script's own calls, authenticated by its token (403: unknown or expired)
    ("get", "/attach/{token}/script"): (400, 403, 409),
    ("post", "/attach/{token}"): (400, 403, 404, 409),
    ("get", "/attach/{token}"): (400, 403),
    ("get", "/tasks/{task_id}"): (400, 404),
    ("get", "/instances"): (400,),
    ("post", "/instances"): (400, 409, 412, 415),
    ("delete", "/instances/{instance_id}"): (400, 404, 409),
    ("post", "/instances/register"): (400, 409, 412, 415),
    ("post", "/clusters/{cluster_id}/triggers"): (400, 404, 409, 415, 503),
    ("get", "/clusters/{cluster_id}/triggers"): (400, 404),
    ("delete", "/clusters/{cluster_id}/triggers/{trigger_id}"): (400, 404),
    ("post", "/clusters/{cluster_id}/triggers/{trigger_id}/rotate"): (400, 404, 415),
    ("get", "/monitoring"): (),
    ("post", "/monitoring/enable"): (400, 415, 503),
    ("post", "/monitoring/disable"): (),
    ("put", "/users"): (400, 404, 415),
    ("post", "/users"): (400, 404, 415),
    ("post", "/clusters/{cluster_id}/alerts"): (400, 404, 409, 415, 503),
    ("get", "/clusters/{cluster_id}/alerts"): (400, 404),
    ("get", "/clusters/{cluster_id}/events"): (400, 404),
    ("delete", "/clusters/{cluster_id}/alerts/{rule_id}"): (400, 404),
    # 401: a signed trigger without its signature headers; 409: the task failed (wait=true) or the
    # webhook-id was delivered already; 504: it did not end within `timeout` (wait=true)
    ("get", "/hook/trigger"): (400, 401, 403, 404, 409, 503, 504),
    ("post", "/hook/trigger"): (400, 401, 403, 404, 409, 503, 504),
}
# every signed route: 400 malformed signature headers, 401 none, 403 wrong signature, 413 body too large
_SIGNED_ANSWERS = (400, 401, 403, 413)

_REASONS = {400: "Invalid parameter, body or signature headers",
            401: "No Authorization header, or one that cannot be parsed",
            403: "The signature (or trigger secret) does not match", 404: "No such resource",
            409: "The resource's state does not allow this now", 412: "No node provider can serve this",
            413: "Request body too large", 415: "The body is not application/json",
            503: "A service this route needs is not running",
            504: "wait=true and the task did not end in time"}

# bodies the routes read themselves (to answer bad JSON and content types with our own errors)
_BODIES: dict[tuple[str, str], tuple[type[BaseModel], bool]] = {}


def _register_bodies() -> None:
    from opencs.api import k8s_schemas
    from opencs.api.routes import attach, instances, monitoring, registry_users, triggers

    _BODIES.update({
        ("post", "/clusters"): (schemas.CreateCluster, True),
        ("put", "/clusters/{cluster_id}"): (schemas.ScaleCluster, True),
        ("post", "/clusters/{cluster_id}/attach"): (schemas.AttachInstances, True),
        ("post", "/clusters/{cluster_id}/instances/{instance_id}/reset"): (schemas.ResetNode, False),
        ("post", "/instances"): (schemas.CreateInstances, False),
        ("post", "/instances/register"): (instances.RegisterSsh, True),
        ("post", "/clusters/{cluster_id}/triggers"): (triggers.CreateTrigger, True),
        ("post", "/clusters/{cluster_id}/triggers/{trigger_id}/rotate"): (triggers.RotateTrigger, False),
        ("post", "/api/v2/clusters/{cluster_id}"): (k8s_schemas.ScaleOutCluster, True),
        ("post", "/api/v2/clusters/{cluster_id}/nodes/remove"): (k8s_schemas.RemoveNodes, True),
        ("post", "/clusters/{cluster_id}/nodes"): (k8s_schemas.RemoveNodes, True),
        ("post", "/clusters/{cluster_id}/attachscript"): (attach.AttachScriptBody, True),
        ("post", "/monitoring/enable"): (monitoring.EnableMonitoring, False),
        ("post", "/clusters/{cluster_id}/alerts"): (monitoring.CreateAlertRule, True),
        ("put", "/users"): (registry_users.UserInfoBody, True),
        ("post", "/users"): (registry_users.UserInfoBody, True),
    })


ERROR_SCHEMA = {
    "type": "object",
    "required": ["Code", "Message", "RequestId"],
    "properties": {"Code": {"type": "string"}, "Message": {"type": "string"},
                   "RequestId": {"type": "string", "description": f"also in the {REQUEST_ID_HEADER} header"}},
}
SIGNATURE_SCHEME = {
    "type": "apiKey", "in": "header", "name": "Authorization",
    "description": "A signed request (spec §3): ROA `acs <AccessKeyId>:<signature>` with Date, "
                   "x-acs-signature-method/-version/-nonce and Content-MD5 for a body, or "
                   "`ACS3-HMAC-SHA256 Credential=...,SignedHeaders=...,Signature=...` with x-acs-date, "
                   "x-acs-signature-nonce and x-acs-content-sha256; x-acs-version: 2015-12-15.",
}
_RID_HEADER = {REQUEST_ID_HEADER: {"description": "Request id (also RequestId of an error body)", "required": True,
                                   "schema": {"type": "string"}}}


def _error_reply(status: int) -> dict[str, Any]:
    return {"description": _REASONS.get(status, "Error"), "headers": _RID_HEADER,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """pydantic's local "#/$defs/X" references resolved in place: in the document they would point
    at its root, where no $defs are."""
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _body_schema(model: type[BaseModel], max_size: int | None) -> dict[str, Any]:
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    schema = dict(_inline(schema, defs))
    size = schema.get("properties", {}).get("size")
    if size is not None and max_size:  # this server's limit (OPENCS_MAX_CLUSTER_SIZE), not the API's
        size["maximum"] = min(size.get("maximum", max_size), max_size)
    return schema


def _operation(method: str, path: str, op: dict[str, Any], max_size: int | None) -> None:
    responses = op.setdefault("responses", {})
    responses.pop("422", None)  # never sent: validation errors are 400 InvalidParameter
    signed = path not in UNSIGNED
    answers = set(_ANSWERS.get((method, path), (400, 404)))
    if signed:
        answers |= set(_SIGNED_ANSWERS)
    else:
        op["security"] = []
    if (method, path) not in _BODIES:
        answers.discard(415)
    for status in sorted(answers):
        responses.setdefault(str(status), _error_reply(status))
    for reply in responses.values():
        reply.setdefault("headers", {}).update(_RID_HEADER)
    if path in UNSIGNED and op.get("operationId", "").startswith("invoke_trigger"):
        op["operationId"] = f"invoke_trigger_{method}"  # GET and POST share one function
    body = _BODIES.get((method, path))
    if body is not None:
        model, required = body
        op["requestBody"] = {"required": required,
                             "content": {"application/json": {"schema": _body_schema(model, max_size)}}}


def document(app: FastAPI) -> dict[str, Any]:
    if not _BODIES:
        _register_bodies()
    with warnings.catch_warnings():
        # FastAPI warns that GET and POST /hook/trigger share an operationId: renamed below
        warnings.filterwarnings("ignore", message="Duplicate Operation ID invoke_trigger")
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {})
    comp_schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        comp_schemas.pop(unused, None)
    comp_schemas["Error"] = ERROR_SCHEMA
    components["securitySchemes"] = {"acsSignature": SIGNATURE_SCHEME}
    doc["security"] = [{"acsSignature": []}]
    runtime = getattr(app.state, "services", None)
    max_size = getattr(getattr(runtime, "settings", None), "max_cluster_size", None)
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            _operation(method, path, op, max_size)
    return doc


def install(app: FastAPI) -> None:
    cache: dict[str, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        if "doc" not in cache:
            cache["doc"] = document(app)
        return cache["doc"]

    app.openapi = openapi  # type: ignore[method-assign]
