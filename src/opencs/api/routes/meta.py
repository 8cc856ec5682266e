"""Version and health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from opencs import API_VERSION, __version__

router = APIRouter()


@router.get("/version")
def version() -> dict[str, Any]:
    return {"version": __version__, "api_version": API_VERSION, "product": "opencs"}


@router.get("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    """Unauthenticated liveness probe (also the baseline route of bench/api_latency.py)."""
    return {"status": "ok"}
