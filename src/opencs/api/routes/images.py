"""GET /images (spec §5.10): the node images this server can use, keyed by region."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from opencs.api.deps import services

router = APIRouter()

# local nodes run the host's Debian Docker engine; the ids are accepted as ecs_image_id
IMAGES = [
    {"text": "Debian 12 · Docker 20.10 (local node)", "value": "opencs_debian12_docker2010_local.vhd"},
]


@router.get("/images")
def list_images(request: Request) -> dict[str, Any]:
    regions = services(request).settings.regions
    return {r: {"items": list(IMAGES)} for r in regions}
