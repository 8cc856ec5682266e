"""Request bodies of the Application API's projects, parsed at the edge into typed models (spec
§10.5, §10.11, §10.13, §10.23). A bad field is a 400 with the field's name and code."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from opencs.compose.normalize import PROJECT_NAME_RE
from opencs.errors import BadRequest

MAX_SCALE = 100
DEFAULT_WEIGHTS = {"old": 50, "new": 50}
HEALTH_TIMEOUT = 120
ROLLING = (None, "", "rolling", "rolling-update", "rolling_update")
BLUE_GREEN = ("blue-green", "blue_green", "bluegreen")


def body_env(body: dict[str, Any]) -> dict[str, str] | None:
        env = body.get("environment")
        if env is None:
            return None
        if not isinstance(env, dict):
            raise BadRequest("Field 'environment': an object of variable names to values",
                             code="InvalidParameter.Environment")
        out = {}
        for k, v in env.items():
            if not re.fullmatch(r"[_A-Za-z][_A-Za-z0-9]*", str(k)):
                raise BadRequest(f"Field 'environment': {k!r} is not a variable name",
                                 code="InvalidParameter.Environment")
            if isinstance(v, (dict, list)):
                raise BadRequest(f"Field 'environment.{k}': must be a string", code="InvalidParameter.Environment")
            out[str(k)] = "" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
        return out


def body_str(body: dict[str, Any], key: str, default: str | None = None, *, max_len: int = 4096) -> str | None:
        v = body.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise BadRequest(f"Field '{key}': must be a string", code=f"InvalidParameter.{key.capitalize()}")
        v = str(v)
        if len(v) > max_len:
            raise BadRequest(f"Field '{key}': at most {max_len} characters",
                             code=f"InvalidParameter.{key.capitalize()}")
        return v


def body_bool(body: dict[str, Any], key: str) -> bool:
        v = body.get(key, False)
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("true", "1", "false", "0", ""):
            return v.lower() in ("true", "1")
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise BadRequest(f"Field '{key}': must be true or false", code=f"InvalidParameter.{key}")


def parse_weights(raw: Any, default: dict[str, int] | None = None) -> dict[str, int]:
    """``{"old": 80, "new": 20}`` (either key alone: the other is the rest of 100)."""
    if raw is None:
        return dict(default or DEFAULT_WEIGHTS)
    if not isinstance(raw, dict) or not set(raw) <= {"old", "new"} or not raw:
        raise BadRequest("Field 'weights': an object {\"old\": N, \"new\": 100-N} (percent of the requests)",
                         code="InvalidParameter.Weights")
    vals: dict[str, int] = {}
    for k, v in raw.items():
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100:
            raise BadRequest(f"Field 'weights.{k}': a percentage 0-100", code="InvalidParameter.Weights")
        vals[k] = v
    old = vals.get("old", 100 - vals.get("new", 0))
    new = vals.get("new", 100 - old)
    if old + new != 100:
        raise BadRequest(f"Field 'weights': old + new must be 100, not {old + new}", code="InvalidParameter.Weights")
    return {"old": old, "new": new}


def _health_timeout(body: dict[str, Any]) -> int:
    v = body.get("health_timeout", HEALTH_TIMEOUT)
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 5 <= v <= 1800:
        raise BadRequest("Field 'health_timeout': seconds (5-1800) the new version has to become healthy",
                         code="InvalidParameter.HealthTimeout")
    return v


def _template(body: dict[str, Any], *, required: bool) -> str | None:
    template = body.get("template")
    if isinstance(template, str) and template.strip():
        return template
    if required:
        raise BadRequest("Field 'template': a Compose YAML template (string) is required",
                         code="InvalidParameter.Template")
    return None


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True)


class CreateProject(_Request):
    """POST /projects/ (spec §10.5)."""

    name: str
    template: str
    version: str = "1.0"
    description: str = ""
    environment: dict[str, str] = {}
    latest_image: bool = False
    rollback_on_failure: bool = False  # a failed create removes what it made (else: left for inspection)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> CreateProject:
        name = body.get("name")
        if not isinstance(name, str) or not PROJECT_NAME_RE.match(name):
            raise BadRequest(f"Field 'name': {name!r} is not a valid project name (1-64 letters, digits and '-', "
                             "not starting with '-')", code="InvalidParameter.Name")
        template = _template(body, required=True)
        env = body_env(body) or {}
        env.setdefault("COMPOSE_PROJECT_NAME", name)
        return cls(name=name, template=template or "", version=body_str(body, "version", "1.0", max_len=128) or "1.0",
                   description=body_str(body, "description", "") or "", environment=env,
                   latest_image=body_bool(body, "latest_image"),
                   rollback_on_failure=body_bool(body, "rollback_on_failure"))


class UpdateProject(_Request):
    """POST /projects/{name}/update (spec §10.11, blue-green §10.13). The template may be absent:
    a blue-green release in progress takes `weights` alone (the rules say when it is required)."""

    method: Literal["rolling", "blue-green"] = "rolling"
    template: str | None = None
    version: str | None = None
    description: str | None = None
    environment: dict[str, str] | None = None
    latest_image: bool = False
    weights: dict[str, int] | None = None  # blue-green: {"old": N, "new": 100-N}
    health_timeout: int = HEALTH_TIMEOUT

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> UpdateProject:
        raw = body.get("update_method")
        if raw not in ROLLING and raw not in BLUE_GREEN:
            raise BadRequest(f"Field 'update_method': {raw!r} is not an update method (blue-green)",
                             code="InvalidParameter.UpdateMethod")
        method: Literal["rolling", "blue-green"] = "blue-green" if raw in BLUE_GREEN else "rolling"
        weights = parse_weights(body["weights"]) if method == "blue-green" and body.get("weights") is not None \
            else None
        return cls(method=method, template=_template(body, required=False),
                   version=body_str(body, "version", None, max_len=128), description=body_str(body, "description"),
                   environment=body_env(body), latest_image=body_bool(body, "latest_image"), weights=weights,
                   health_timeout=_health_timeout(body) if method == "blue-green" else HEALTH_TIMEOUT)


class ScaleService(_Request):
    """POST /services/{id}/scale (spec §10.23)."""

    value: int

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ScaleService:
        kind = body.get("type", "scale_to")
        if kind != "scale_to":
            raise BadRequest(f"Field 'type': {kind!r} is not supported (only 'scale_to')",
                             code="InvalidParameter.Type")
        value = body.get("value")
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SCALE:
            raise BadRequest(f"Field 'value': the number of containers, 0-{MAX_SCALE}",
                             code="InvalidParameter.Value")
        return cls(value=value)
