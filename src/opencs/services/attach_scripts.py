"""Attach scripts (spec §6.10, POST /clusters/{id}/attachscript): a command that, run as root on a
registered machine (a free instance of the cluster's account), joins that machine to the cluster.

The reply is one shell line, `curl … /attach/<token>/script | sh`. The script it fetches asks the
control plane to join the machine it runs on — the machine is the one whose private address the
request comes from — and follows the join task until the node is in (or the task failed). The
token is single-use (the first machine to present it wins) and expires; only its hash is stored.
The join itself is the cluster's attach task (re-image with the cluster's node runtime, join), as
for POST /clusters/{id}/attach, so a Kubernetes machine comes up with containerd, kubelet and
kube-proxy and a Swarm machine with its engine.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shlex
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from opencs.errors import ApiError, BadRequest, Conflict, NotFound
from opencs.store.db import utcnow
from opencs.store.models import InstanceRow
from opencs.store.repos.attach_tokens import AttachTokenRecord, AttachTokenRepo

DEFAULT_TTL = timedelta(hours=1)
TTL_BOUNDS = (5, 7 * 24 * 3600)  # seconds
STATUS_GRACE = timedelta(hours=1)  # a used token still shows its join's progress this long after expiry


class AttachTokenRefused(ApiError):
    status = 403
    code = "AttachTokenInvalid"


@dataclass(frozen=True)
class NodeEndpoint:
    """How a script on a node reaches this API: a base URL, and for HTTPS the server key's pin
    (curl checks the key itself: the certificate does not name the bridge address)."""

    base: str
    pin: str = ""

    def curl(self, fail: bool = True) -> str:
        """curl with the pin; `fail`: exit non-zero on an HTTP error (the script reads error bodies itself).
        A base64 pin has no blank or glob character: it survives the script's word splitting unquoted."""
        return ("curl -fsS" if fail else "curl -sS") + (f" -k --pinnedpubkey sha256//{self.pin}" if self.pin else "")


class Clusters(Protocol):
    def get_row(self, cluster_id: str) -> Any: ...

    def attach(self, cluster_id: str, instance_ids: list[str]) -> tuple[list[dict[str, str]], str]: ...


class Instances(Protocol):
    def by_address(self, account_id: str, private_ip: str) -> InstanceRow | None: ...


class Tasks(Protocol):
    def get(self, task_id: str) -> Any: ...


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AttachScriptService:
    def __init__(self, repo: AttachTokenRepo, clusters: Clusters, instances: Instances, tasks: Tasks,
                 endpoint: Any) -> None:
        self.repo = repo
        self.clusters = clusters
        self.instances = instances
        self.tasks = tasks
        self._endpoint = endpoint  # () -> NodeEndpoint | None, asked per call (the bridge may come later)

    def issue(self, cluster_id: str, options: dict[str, Any] | str, expired: int | None = None,
              ttl: timedelta | None = None) -> str:
        """The command line to run on the machine (the spec's reply: a bare JSON string). `options` as
        sent (an object, or a string holding one) and `expired` (Unix time) are checked once the
        cluster is known to exist; `ttl` is the lifetime when `expired` is not given."""
        c = self.clusters.get_row(cluster_id)
        opts = parse_options(options)
        if expired is not None:
            ttl = timedelta(seconds=expired - time.time())
            if not TTL_BOUNDS[0] <= ttl.total_seconds() <= TTL_BOUNDS[1]:
                raise BadRequest(f"Field 'expired': must be {TTL_BOUNDS[0]} s to {TTL_BOUNDS[1] // 86400} days from "
                                 "now (Unix time)", code="InvalidParameter")
        if c.state != "running":
            raise Conflict(f"Cluster {cluster_id} is {c.state}: machines join a running cluster",
                           code="ErrorClusterStateConflict")
        ep: NodeEndpoint | None = self._endpoint()
        if ep is None:
            raise Conflict("The nodes cannot reach this API: it listens on loopback only. Start the server with "
                           "--host 0.0.0.0 (or the nodes' bridge address) or set OPENCS_PUBLIC_URL to an address "
                           "the machines reach", code="NodesCannotReachApi")
        token = secrets.token_urlsafe(32)
        self.repo.add(_hash(token), cluster_id, c.account_id, opts, utcnow() + (ttl or DEFAULT_TTL))
        return f"{ep.curl()} {shlex.quote(f'{ep.base}/attach/{token}/script')} | sh"

    def script(self, token: str) -> str:
        """The script the command line fetches (served while the token is valid or its join runs)."""
        rec = self._record(token, for_status=True)
        ep = self._endpoint()
        if ep is None:
            raise Conflict("The nodes cannot reach this API", code="NodesCannotReachApi")
        return render_script(f"{ep.base}/attach/{token}", ep.curl(fail=False),
                             rec.cluster_id, rec.options)

    def join(self, token: str, source_ip: str) -> dict[str, str]:
        """The machine at `source_ip` presents the token: reserve it for the cluster, start the join."""
        rec = self._record(token)
        if rec.used_at is not None:
            raise Conflict(f"This attach script was used already (by {rec.instance_id or 'another machine'} at "
                           f"{rec.used_at:%Y-%m-%dT%H:%M:%SZ}): get a new one", code="AttachTokenUsed")
        machine = self._machine(source_ip, rec)
        if not self.repo.claim(rec.token_hash, machine.instance_id):
            raise Conflict("This attach script was used already or has expired: get a new one",
                           code="AttachTokenUsed")
        try:
            _, tid = self.clusters.attach(rec.cluster_id, [machine.instance_id])
        except ApiError:
            self.repo.release(rec.token_hash)  # nothing started: the script may be run again
            raise
        self.repo.set_task(rec.token_hash, tid)
        return {"cluster_id": rec.cluster_id, "instance_id": machine.instance_id, "task_id": tid}

    def status(self, token: str) -> dict[str, Any]:
        rec = self._record(token, for_status=True)
        if not rec.task_id:
            return {"cluster_id": rec.cluster_id, "state": "unused"}
        t = self.tasks.get(rec.task_id)
        return {"cluster_id": rec.cluster_id, "instance_id": rec.instance_id, "task_id": rec.task_id,
                "state": t.state, "stage": t.current_stage or "", "message": t.error_message or ""}

    def _record(self, token: str, for_status: bool = False) -> AttachTokenRecord:
        rec = self.repo.get(_hash(token))
        if rec is None:
            raise AttachTokenRefused("Unknown attach token")
        grace = STATUS_GRACE if for_status and rec.used_at is not None else timedelta(0)
        if rec.expires + grace <= utcnow():
            raise AttachTokenRefused(f"This attach script expired at {rec.expires:%Y-%m-%dT%H:%M:%SZ}: get a new one",
                                     code="AttachTokenExpired")
        return rec

    def _machine(self, source_ip: str, rec: AttachTokenRecord) -> InstanceRow:
        r = self.instances.by_address(rec.account_id, source_ip)
        if r is not None:
            if r.cluster_id:
                raise Conflict(f"This machine ({r.instance_id}) belongs to cluster {r.cluster_id} already",
                               code="ErrorInstanceBusy")
            return r
        raise NotFound(f"No registered machine of this account has the address {source_ip}: create or register "
                       "it first (POST /instances, POST /instances/register), then run the script on it",
                       code="ErrorInstanceNotFound")


def parse_options(raw: Any) -> dict[str, Any]:
    """`options` as the seed's example sends it (a JSON-encoded string) or as an object."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise BadRequest("Field 'options': not a JSON object (nor a string holding one)",
                             code="InvalidParameter") from None
    if not isinstance(raw, dict):
        raise BadRequest("Field 'options': must be a JSON object (or a string holding one)", code="InvalidParameter")
    return raw


_SCRIPT = """#!/bin/sh
# opencs attach script: joins the machine it runs on to cluster {cluster}. Single-use.
# node spec (recorded; the node is named after its instance id): {spec}
set -u
U={url}
C={curl}
out=$($C -X POST -w '\\n%{{http_code}}' "$U") || {{ echo "opencs: cannot reach $U" >&2; exit 1; }}
code=$(printf '%s\\n' "$out" | tail -n 1)
body=$(printf '%s\\n' "$out" | sed '$d')
if [ "$code" != 202 ]; then echo "opencs: join refused ($code): $body" >&2; exit 1; fi
echo "opencs: joining: $body"
last=
while :; do
  st=$($C "$U") || {{ sleep 2; continue; }}
  case "$st" in
    *'"state":"success"'*) echo "opencs: joined cluster {cluster}"; exit 0 ;;
    *'"state":"fail"'*) echo "opencs: join failed: $st" >&2; exit 1 ;;
  esac
  [ "$st" = "$last" ] || echo "opencs: $st"
  last=$st
  sleep 2
done
"""


def render_script(url: str, curl: str, cluster_id: str, options: dict[str, Any]) -> str:
    spec = json.dumps({**options, "assumeYes": True}, sort_keys=True).replace("\n", " ")
    return _SCRIPT.format(cluster=cluster_id, spec=spec, url=shlex.quote(url), curl=shlex.quote(curl))
