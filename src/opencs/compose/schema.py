"""Validate a loaded Compose template against the project's JSON schema (``compose-schema.json``).

No maintained PyPI package ships the Compose JSON schema for all of v1/v2/v3 (docker-compose 1.x,
which did, is end-of-life and pins PyYAML<6 and jsonschema<4), so the schema is our own: the keys a
Swarm stack can honour, unknown keys rejected. Errors name the offending path,
e.g. ``services.web.ports[0]``.
"""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match

from opencs.compose import values
from opencs.compose.load import ComposeError, ComposeFile, fmt_path

SCHEMA_FILE = Path(__file__).with_name("compose-schema.json")


def _checker() -> FormatChecker:
    fc = FormatChecker(formats=())

    def reg(name: str, fn: Any) -> None:
        def check(instance: Any) -> bool:
            fn(instance)
            return True

        fc.checks(name, raises=(ValueError, KeyError, TypeError))(check)

    def port_number(v: Any) -> None:
        if isinstance(v, str) and "-" in v:
            raise ValueError(f"invalid published port {v!r}: one port per long-form entry")
        p = int(v)
        if not 1 <= p <= 65535:
            raise ValueError(f"published port {p} is out of range 1-65535")

    reg("port-spec", values.parse_port)
    reg("port-number", port_number)
    reg("volume-spec", values.parse_volume)
    reg("duration", values.parse_duration)
    reg("byte-size", values.parse_bytes)
    reg("cpus", values.parse_cpus)
    return fc


@functools.cache
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return schema


@functools.cache
def _validator(major: int) -> Draft7Validator:
    root = _schema()
    schema = {"$ref": f"#/definitions/v{major}", "definitions": root["definitions"]}
    return Draft7Validator(schema, format_checker=_checker())


def _describe(err: ValidationError) -> tuple[list[Any], str]:
    """A user-facing message and path for the most relevant error."""
    path = list(err.absolute_path)
    v = err.validator
    if v == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in err.schema.get("properties", {})
                 and not str(k).startswith("x-")] if isinstance(err.instance, dict) else []
        if extra:
            key = extra[0]
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            msg = f"unsupported key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            return [*path, key], msg
    if v == "format" and err.cause is not None:
        return path, str(err.cause)
    if v == "required":
        return path, err.message.replace("is a required property", "is required")
    if "propertyNames" in err.schema_path:
        what = {"services": "service", "networks": "network", "volumes": "volume"}.get(str(path[-1]) if path else "",
                                                                                         "key")
        if v == "maxLength":
            return path, f"{what} name {err.instance!r} is longer than {err.validator_value} characters"
        return path, (f"invalid {what} name {err.instance!r}: use letters, digits, '.', '_' and '-', "
                      "starting with a letter or digit")
    if v in ("oneOf", "anyOf") and err.context:
        # prefer the branch whose type matched (a format or key problem inside it)
        inner = [e for e in err.context if e.validator != "type"]
        if inner:
            sub = best_match(inner)
            return _describe(sub)
        kinds = sorted({t for e in err.context for t in ([e.validator_value] if isinstance(e.validator_value, str)
                                                          else e.validator_value or [])})
        return path, f"{err.instance!r} has the wrong type (expected {' or '.join(kinds)})"
    if v == "type":
        exp = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
        return path, f"{err.instance!r} is not of type {exp}"
    return path, err.message


def validate(cf: ComposeFile) -> None:
    """Raise ComposeError naming the first (most relevant) problem."""
    validator = _validator(cf.major)
    errors = list(validator.iter_errors(cf.data))
    if not errors:
        return
    err = best_match(errors)
    path, msg = _describe(err)
    if cf.major == 1 and path and path[0] == "services":
        path = path[1:]  # v1 templates have their services at the top level
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    raise ComposeError(msg + more, fmt_path(path) or "template", "InvalidTemplate.Schema")
