"""Per-user cluster certificates (opencs.services.cluster_certs): issue (spec §5.11), list, revoke."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from opencs.api.deps import services
from opencs.api.errors import request_id_of
from opencs.api.schemas import ClusterId
from opencs.services.accounts import Principal
from opencs.services.cluster_certs import MAX_LIFETIME

router = APIRouter()

# openssl prints serials in upper case, sometimes with colons; the store keys them in lower-case hex
Serial = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9A-Fa-f:]+$",
                             description="certificate serial number (hex)")]
MAX_MINUTES = int(MAX_LIFETIME.total_seconds() // 60)


def _principal(request: Request) -> Principal | None:
    who = (request.scope.get("state") or {}).get("principal")
    return who if isinstance(who, Principal) else None


def _serial(raw: str) -> str:
    return format(int(raw.replace(":", ""), 16), "x")


@router.get("/clusters/{cluster_id}/certs")
async def cluster_certs(
    cluster_id: ClusterId, request: Request,
    TemporaryDurationMinutes: int | None = Query(None, ge=1, le=MAX_MINUTES,  # noqa: N803 - Alibaba's name
                                                 description="lifetime of the certificate in minutes "
                                                             "(default: the server's, one year)"),
) -> dict[str, str]:
    """A new client certificate for the calling user (DescribeClusterCerts/GetClusterCerts)."""
    life = timedelta(minutes=TemporaryDurationMinutes) if TemporaryDurationMinutes else None
    issued = await to_thread.run_sync(
        lambda: services(request).cluster_certs.issue(cluster_id, _principal(request), life))
    request.scope["state"]["audit_detail"] = f"cert/{issued.serial}"
    return issued.reply()


@router.get("/clusters/{cluster_id}/certs/states")
def cert_states(cluster_id: ClusterId, request: Request) -> dict[str, Any]:
    """The cluster's certificates with their state (a sub-user sees its own)."""
    return {"certs": services(request).cluster_certs.states(cluster_id, _principal(request)),
            "request_id": request_id_of(request)}


@router.delete("/clusters/{cluster_id}/certs/{serial}")
def revoke_cert(cluster_id: ClusterId, serial: Serial, request: Request) -> JSONResponse:
    """Revoke one certificate: master_url refuses it from its next connection on."""
    out = services(request).cluster_certs.revoke(cluster_id, _serial(serial), _principal(request))
    request.scope["state"]["audit_detail"] = f"cert/{out['serial']}"
    return JSONResponse({**out, "request_id": request_id_of(request)})


@router.delete("/clusters/{cluster_id}/certs")
def revoke_my_certs(cluster_id: ClusterId, request: Request) -> JSONResponse:
    """Revoke every certificate of the caller on this cluster (RevokeK8sClusterKubeConfig for Swarm)."""
    who = _principal(request)
    if who is None:  # only without authorization (in-process tests): the owner's
        from opencs.errors import Forbidden

        raise Forbidden("revoking one's own certificates needs a signed call", code="Forbidden.RAM")
    revoked = services(request).cluster_certs.revoke_mine(cluster_id, who)
    return JSONResponse({"revoked": revoked, "request_id": request_id_of(request)})
