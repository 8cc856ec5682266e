"""Reading JSON bodies the way real clients send them (CLIENT-COMPAT.md)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from opencs.errors import MalformedBody, UnsupportedMediaType, ValidationFailed

M = TypeVar("M", bound=BaseModel)


async def json_object(request: Request, *, required: bool = True) -> dict[str, Any]:
    raw = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not raw.strip():
        if required:
            raise MalformedBody("A JSON request body is required", code="MissingBody")
        return {}
    # missing Content-Type: be lenient and try JSON; an explicit other type is a client mistake
    if ctype and ctype not in ("application/json", "text/json") and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type {ctype!r} is not supported: send the body as application/json "
            "(aliyun-python-sdk-core: request.set_content_type('application/json'))"
        )
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedBody(f"The request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise MalformedBody("The request body must be a JSON object")
    return data


def validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errs = e.errors()
        first = errs[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        msg = f"Field '{field}': {first['msg']}"
        if len(errs) > 1:
            msg += f" (and {len(errs) - 1} more)"
        raise ValidationFailed(msg) from None
