"""Triggers (spec §11): URLs that redeploy a project or scale one service, for CI systems and
monitoring that should hold no AccessKey.

The token is the spec's Base64 of ``cluster|project|kind|id|``; the secret is 64 hex digits (the hex
of 16 random alphanumerics, then a keyed digest, the structure the spec observed). Only SHA-256
hashes of secrets are stored. Rotation issues a new secret under the same URL; the old one keeps
working for a stated grace period.

A signed trigger (`signed: true` at creation, or the server's default) also needs a Standard Webhooks
signature of each call (opencs.services.webhooks) with its signing secret, kept encrypted since the
server must compute the HMAC; with it the URL needs no `secret`. A webhook-id is accepted once (the
signature nonces' store), a timestamp only within five minutes, so a captured call cannot be replayed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from opencs.errors import ApiError, BadRequest, Conflict, Forbidden, NotFound
from opencs.secretbox import SecretBox
from opencs.services import webhooks
from opencs.services.webhooks import WebhookHeaders
from opencs.store.db import utcnow
from opencs.store.models import Trigger
from opencs.store.repos.triggers import TriggerRepo

ACTIONS = ("redeploy", "scaling")
MAX_STEP = 100
DEFAULT_GRACE_SECONDS = 3600


class ProjectActions(Protocol):
    """What triggers need from the Application API's projects."""

    def trigger_check(self, cluster_id: str, project: str, service: str | None) -> None:
        """Raise NotFound when the project (or the service) does not exist."""

    def trigger_redeploy(self, cluster_id: str, project: str, pull_latest: bool) -> str:
        """Redeploy with the newest images, rolling; returns the task id."""

    def trigger_scale(self, cluster_id: str, project: str, service: str, delta: int) -> str:
        """Change the service's replicas by delta (bounded); returns the task id."""

    def trigger_images(self, cluster_id: str, project: str) -> list[str]:
        """The image references the project's services use (for image-update triggers)."""


class Replays(Protocol):
    def remember(self, access_key_id: str, nonce: str) -> bool:
        """False when this nonce was seen before under this key (opencs.store.repos.nonces)."""


class ClusterCheck(Protocol):
    def get_row(self, cluster_id: str) -> object:
        """The cluster (NotFound when there is none)."""


def _ts(d: datetime | None) -> str | None:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ") if d else None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def make_token(cluster_id: str, project: str, action: str, trigger_id: str) -> str:
    kind = "redeploy" if action == "redeploy" else "scaling"
    return base64.b64encode(f"{cluster_id}|{project}|{kind}|{trigger_id}|".encode()).decode()


def parse_token(token: str) -> tuple[str, str, str, str]:
    """-> (cluster_id, project, kind, trigger_id). Tolerates a missing or extra '=' padding (the
    spec's own examples append a stray '=') and URL-safe Base64."""
    t = token.strip().rstrip("=")
    t += "=" * (-len(t) % 4)
    try:
        raw = base64.b64decode(t.replace("-", "+").replace("_", "/"), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("triggerUrl is not a trigger token", code="InvalidTriggerUrl") from None
    parts = raw.split("|")
    if len(parts) != 5 or parts[4] != "" or not all(parts[:4]):
        raise BadRequest("triggerUrl is not a trigger token", code="InvalidTriggerUrl")
    return parts[0], parts[1], parts[2], parts[3]


@dataclass(frozen=True)
class Invocation:
    trigger_id: str
    action: str
    task_id: str


class TriggerService:
    def __init__(self, repo: TriggerRepo, clusters: ClusterCheck, public_url: str | Callable[[], str],
                 projects: ProjectActions | None = None, box: SecretBox | None = None,
                 replays: Replays | None = None, signed_default: bool = False) -> None:
        self.repo = repo
        self.clusters = clusters
        # the base of trigger URLs; a callable when it depends on what serves (the nodes' bridge)
        self._base: Callable[[], str] = public_url if callable(public_url) else (lambda: public_url)
        self._projects = projects
        self.box = box  # signing secrets at rest (signed triggers need it, and the replay store)
        self.replays = replays
        self.signed_default = signed_default
        self._digest_key = secrets.token_bytes(32)

    @property
    def projects(self) -> ProjectActions:
        if self._projects is None:
            raise ApiError("projects are not available on this server", code="ProjectsUnavailable", status=503)
        return self._projects

    @projects.setter
    def projects(self, projects: ProjectActions) -> None:
        self._projects = projects

    # ------------------------------------------------------------ management (signed API)

    def _new_secret(self, token: str) -> str:
        head = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16)).encode().hex()
        tail = hmac.new(self._digest_key, (token + head).encode(), hashlib.sha256).hexdigest()[:32]
        return head + tail

    def trigger_url(self, token: str) -> str:
        return f"{self._base()}/hook/trigger?triggerUrl={token}"

    def view(self, t: Trigger) -> dict[str, Any]:
        return {
            "id": t.trigger_id,
            "cluster_id": t.cluster_id,
            "project_id": t.project,
            "action": t.action,
            "service": t.service,
            "image_update": t.image_update,
            "signed": bool(t.signed),
            "token": t.token,
            "trigger_url": self.trigger_url(t.token),
            "created": _ts(t.created),
            "last_invoked": _ts(t.last_invoked),
            "previous_secret_valid_until": _ts(t.previous_until) if t.previous_secret_hash else None,
        }

    def _signing_box(self) -> SecretBox:
        if self.box is None or self.replays is None:
            raise ApiError("signed triggers are not available on this server", code="SignedTriggersUnavailable",
                           status=503)
        return self.box

    def create(self, cluster_id: str, project: str, action: str, service: str = "",
               image_update: bool = False, signed: bool | None = None) -> dict[str, Any]:
        self.clusters.get_row(cluster_id)
        signed = self.signed_default if signed is None else signed
        if action not in ACTIONS:
            raise BadRequest(f"Field 'action': must be one of {', '.join(ACTIONS)}")
        if action == "scaling" and not service:
            raise BadRequest("Field 'service': a scaling trigger names the service it scales")
        if action == "redeploy" and service:
            raise BadRequest("Field 'service': only scaling triggers take a service")
        if image_update and action != "redeploy":
            raise BadRequest("Field 'image_update': only redeploy triggers follow image pushes")
        self.projects.trigger_check(cluster_id, project, service or None)
        trigger_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(13))
        token = make_token(cluster_id, project, action, trigger_id)
        secret = self._new_secret(token)
        signing = webhooks.new_secret() if signed else None
        row = Trigger(trigger_id=trigger_id, cluster_id=cluster_id, project=project, action=action,
                      service=service, image_update=image_update, token=token, secret_hash=_hash(secret),
                      signed=signed, created=utcnow(),
                      signing_secret_enc=self._signing_box().encrypt(signing) if signing else None)
        self.repo.add(row)
        return {**self.view(row), "secret": secret, **({"signing_secret": signing} if signing else {})}

    def list_triggers(self, cluster_id: str, project: str | None = None) -> list[dict[str, Any]]:
        self.clusters.get_row(cluster_id)
        return [self.view(t) for t in self.repo.of_cluster(cluster_id, project)]

    def _get(self, cluster_id: str, trigger_id: str) -> Trigger:
        t = self.repo.get(trigger_id)
        if t is None or t.cluster_id != cluster_id:
            raise NotFound(f"Trigger {trigger_id} not found in cluster {cluster_id}", code="ErrorTriggerNotFound")
        return t

    def delete(self, cluster_id: str, trigger_id: str) -> None:
        self.repo.delete(self._get(cluster_id, trigger_id).trigger_id)

    def rotate(self, cluster_id: str, trigger_id: str, grace_seconds: int = DEFAULT_GRACE_SECONDS) -> dict[str, Any]:
        if not 0 <= grace_seconds <= 7 * 24 * 3600:
            raise BadRequest("Field 'grace_seconds': 0 to 604800")
        t = self._get(cluster_id, trigger_id)
        secret = self._new_secret(t.token)
        signing: dict[str, Any] = {}
        new_signing = None
        if t.signed:  # the signing secret is rotated with the secret, under the same grace
            new_signing = webhooks.new_secret()
            signing = {"signing_secret_enc": self._signing_box().encrypt(new_signing),
                       "previous_signing_secret_enc": t.signing_secret_enc if grace_seconds else None}
        fresh = self.repo.update(trigger_id, previous_secret_hash=t.secret_hash if grace_seconds else None,
                                 previous_until=utcnow() + timedelta(seconds=grace_seconds) if grace_seconds else None,
                                 secret_hash=_hash(secret), **signing)
        if fresh is None:
            raise NotFound(f"Trigger {trigger_id} not found in cluster {cluster_id}", code="ErrorTriggerNotFound")
        extra = {"signing_secret": new_signing} if new_signing else {}
        return {**self.view(fresh), "secret": secret, **extra, "grace_seconds": grace_seconds}

    # ------------------------------------------------------------ invocation (public, secret-authenticated)

    def authenticate(self, token: str, secret: str, signature: WebhookHeaders | None = None,
                     body: bytes = b"") -> Trigger:
        """The trigger this call may fire: its secret (an unsigned trigger), or its signature (a signed
        one: then a secret, if sent, must match too). Raises the refusal."""
        if not token:
            raise BadRequest("triggerUrl is required", code="MissingTriggerUrl")
        if not secret and signature is None:
            raise Forbidden("secret is required", code="MissingSecret")
        parse_token(token)  # shape first: a clear 400 for garbage
        bare = token.strip().rstrip("=")
        # the spec's examples carry a stray "=" after the token
        tokens = [token.strip(), bare + "=" * (-len(bare) % 4)]
        found = self.repo.by_tokens(tokens)
        if found is None:
            raise NotFound("No trigger has this triggerUrl (deleted?)", code="ErrorTriggerNotFound")
        if found.signed:
            self._check_signature(found, signature, body)
        elif not secret:
            raise Forbidden("secret is required", code="MissingSecret")
        given = _hash(secret) if secret else ""

        def check(t: Trigger) -> None:
            if not given:
                return  # a signed trigger, signature checked
            ok = hmac.compare_digest(given, t.secret_hash)
            if not ok and t.previous_secret_hash and t.previous_until and utcnow() < t.previous_until:
                ok = hmac.compare_digest(given, t.previous_secret_hash)
            if not ok:
                raise Forbidden("The secret does not match this trigger", code="InvalidTriggerSecret")

        t = self.repo.invoked(tokens, check)
        if t is None:
            raise NotFound("No trigger has this triggerUrl (deleted?)", code="ErrorTriggerNotFound")
        return t

    def _check_signature(self, t: Trigger, signature: WebhookHeaders | None, body: bytes) -> None:
        box = self._signing_box()
        keys = [box.decrypt(t.signing_secret_enc)] if t.signing_secret_enc else []
        if t.previous_signing_secret_enc and t.previous_until and utcnow() < t.previous_until:
            keys.append(box.decrypt(t.previous_signing_secret_enc))
        webhooks.verify(keys, signature, body)
        assert signature is not None and self.replays is not None  # verify() refuses a call without headers
        # after the signature: only calls that could fire the trigger take a place in the store
        if not self.replays.remember(f"trigger:{t.trigger_id}", signature.msg_id):
            raise Conflict(f"webhook-id {signature.msg_id!r} was delivered already: a replay fires nothing",
                           code="WebhookReplayed")

    def invoke(self, token: str, secret: str, type_: str | None, step: str | None,
               signature: WebhookHeaders | None = None, body: bytes = b"") -> Invocation:
        t = self.authenticate(token, secret, signature, body)
        if t.action == "scaling":
            if type_ not in ("scale_out", "scale_in"):
                raise BadRequest("type must be scale_out or scale_in", code="InvalidParameter.Type")
            try:
                n = int(step or "")
            except ValueError:
                raise BadRequest("step must be an integer from 1 to 100", code="InvalidParameter.Step") from None
            if not 1 <= n <= MAX_STEP:
                raise BadRequest("step must be an integer from 1 to 100", code="InvalidParameter.Step")
            task_id = self.projects.trigger_scale(t.cluster_id, t.project, t.service, n if type_ == "scale_out" else -n)
        else:
            if type_ or step:
                raise BadRequest("type and step belong to scaling triggers", code="InvalidParameter")
            task_id = self.projects.trigger_redeploy(t.cluster_id, t.project, pull_latest=True)
        return Invocation(t.trigger_id, t.action, task_id)

    def on_image_push(self, repository: str, tag: str,
                      may_redeploy: Callable[[str, str], bool] = lambda _cluster, _project: True) -> list[str]:
        """A push reached the bundled registry: redeploy the projects whose image-update triggers use
        that image and the pusher may redeploy (cluster id, project). Returns the task ids."""
        tasks: list[str] = []
        for t in self.repo.following_images():
            if not may_redeploy(t.cluster_id, t.project):
                continue
            try:
                images = self.projects.trigger_images(t.cluster_id, t.project)
            except ApiError:
                continue  # project gone: nothing to redeploy
            if any(image_matches(img, repository, tag) for img in images):
                try:
                    tasks.append(self.projects.trigger_redeploy(t.cluster_id, t.project, pull_latest=True))
                except (ApiError, Conflict):
                    continue
        return tasks


def image_matches(image: str, repository: str, tag: str) -> bool:
    """Does a compose `image:` refer to <registry>/<repository>:<tag>? `busybox` is library/busybox:latest;
    a registry host in the reference (`10.213.0.1:5000/team/app:v1`) is ignored."""
    ref, _, digest = image.partition("@")
    if digest:
        return False
    last = ref.rsplit("/", 1)[-1]
    name, _, itag = last.partition(":") if ":" in last else (last, "", "")
    path = ref[: len(ref) - len(last)] + name
    first = path.split("/", 1)[0]
    if "/" in path and ("." in first or ":" in first or first == "localhost"):
        path = path.split("/", 1)[1]  # drop the registry host
    if "/" not in path:
        path = f"library/{path}"
    return path == repository and (itag or "latest") == tag
