"""GET /audit: the caller's account's audit trail (opencs.services.audit), newest last."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, cast

from fastapi import APIRouter, Query, Request

from opencs.api.schemas import QueryText
from opencs.errors import BadRequest
from opencs.services.accounts import Principal
from opencs.services.audit import AuditService, record_json

router = APIRouter()


class AuditServices(Protocol):
    @property
    def audit(self) -> AuditService: ...


@router.get("/audit")
def audit_log(request: Request, action: QueryText = None, user: QueryText = None,
              since: str | None = Query(None, max_length=64, json_schema_extra={"format": "date-time"}),
              limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    who = cast(Principal | None, request.scope.get("state", {}).get("principal"))
    try:
        when = datetime.fromisoformat(since.upper().replace("Z", "")) if since else None
    except ValueError:
        raise BadRequest(f"since {since!r} is not an ISO 8601 time", code="InvalidParameter.Since") from None
    svc = cast(AuditServices, request.app.state.services).audit
    rows = svc.query(who.account_id if who else "", action, user, when, limit)
    return {"entries": [record_json(r) for r in rows]}
