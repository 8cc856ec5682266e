"""Read a Compose template: YAML → dict, variable interpolation, version detection.

Interpolation follows docker-compose: ``$VAR``, ``${VAR}``, ``${VAR:-default}`` (unset or empty),
``${VAR-default}`` (unset), ``${VAR:?message}`` / ``${VAR?message}`` (required), ``${VAR:+alt}`` /
``${VAR+alt}`` and ``$$`` for a literal ``$``. Only values are interpolated, never keys. Variables
come from the project's ``environment`` map only (never from the control plane's own process
environment, which would leak its secrets into user containers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml


class ComposeError(Exception):
    """A template problem; ``path`` names the offending place (``services.web.ports[0]``)."""

    def __init__(self, message: str, path: str = "", code: str = "InvalidTemplate") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.message = message
        self.path = path
        self.code = code

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def fmt_path(parts: list[Any] | tuple[Any, ...]) -> str:
    """['services', 'web', 'ports', 0] → 'services.web.ports[0]'."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


# ---------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping (PyYAML silently keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found an unhashable key", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = key_node
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str) -> Any:
    if not isinstance(text, str) or not text.strip():
        raise ComposeError("the template is empty", code="InvalidTemplate.Empty")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        msg = f"{context}: {problem}" if context and problem else problem
        raise ComposeError(f"invalid YAML{where}: {msg}", code="InvalidTemplate.Yaml") from None


# ---------------------------------------------------------------- interpolation

_VAR = r"[_a-zA-Z][_a-zA-Z0-9]*"
_PATTERN = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<named>" + _VAR + r")|\{(?P<braced>[^}]*)\}|(?P<invalid>))"
)
_BRACED = re.compile(r"^(?P<name>" + _VAR + r")(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


@dataclass
class Interpolator:
    variables: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)
    _warned: set[str] = field(default_factory=set)

    def _missing(self, name: str) -> str:
        if name not in self._warned:
            self._warned.add(name)
            self.warnings.append(f"The {name} variable is not set. Defaulting to a blank string.")
        return ""

    def string(self, value: str, path: str) -> str:
        def sub(m: re.Match[str]) -> str:
            if m.group("escaped") is not None:
                return "$"
            if m.group("named") is not None:
                name = m.group("named")
                self.used.add(name)
                return self.variables[name] if name in self.variables else self._missing(name)
            braced = m.group("braced")
            if braced is not None:
                bm = _BRACED.match(braced)
                if bm is None:
                    raise ComposeError(f"invalid interpolation format in {value!r}: '${{{braced}}}'",
                                       path, "InvalidTemplate.Interpolation")
                name, op, arg = bm.group("name"), bm.group("op"), bm.group("arg") or ""
                self.used.add(name)
                is_set = name in self.variables
                val = self.variables.get(name, "")
                if op is None:
                    return val if is_set else self._missing(name)
                if op == ":-":
                    return val if val else arg
                if op == "-":
                    return val if is_set else arg
                if op in (":?", "?"):
                    if (op == ":?" and not val) or not is_set:
                        raise ComposeError(
                            f"required variable {name} is missing a value" + (f": {arg}" if arg else ""),
                            path, "InvalidTemplate.MissingVariable",
                        )
                    return val
                if op == ":+":
                    return arg if val else ""
                return arg if is_set else ""  # "+"
            raise ComposeError(
                f"invalid interpolation format in {value!r}: a '$' must start $VAR or ${{VAR}} "
                "(write $$ for a literal $)", path, "InvalidTemplate.Interpolation",
            )

        return _PATTERN.sub(sub, value)

    def walk(self, obj: Any, parts: list[Any]) -> Any:
        if isinstance(obj, str):
            return self.string(obj, fmt_path(parts))
        if isinstance(obj, dict):
            return {k: self.walk(v, [*parts, k]) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.walk(v, [*parts, i]) for i, v in enumerate(obj)]
        return obj


def env_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def interpolate(obj: Any, variables: dict[str, Any], warnings: list[str] | None = None) -> Any:
    it = Interpolator({str(k): env_value(v) for k, v in (variables or {}).items()})
    out = it.walk(obj, [])
    if warnings is not None:
        warnings.extend(it.warnings)
    return out


# ---------------------------------------------------------------- versions


@dataclass
class ComposeFile:
    """A parsed, interpolated (not yet validated) template."""

    version: str  # "1", "2.x", "3.x"
    data: dict[str, Any]  # the whole document, v1 documents wrapped as {"services": …}
    warnings: list[str] = field(default_factory=list)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def services(self) -> dict[str, Any]:
        return self.data.get("services") or {}

    @property
    def networks(self) -> dict[str, Any]:
        return self.data.get("networks") or {}

    @property
    def volumes(self) -> dict[str, Any]:
        return self.data.get("volumes") or {}


SUPPORTED_VERSIONS = ("1", "2", "2.0", "2.1", "2.2", "2.3", "2.4",
                      "3", "3.0", "3.1", "3.2", "3.3", "3.4", "3.5", "3.6", "3.7", "3.8", "3.9")


def _version_of(doc: dict[str, Any]) -> str:
    if "version" not in doc:
        svcs = doc.get("services")
        # the Compose Specification (no version, services at `services:`) reads like v3
        if isinstance(svcs, dict) and svcs and all(isinstance(v, dict) for v in svcs.values()) \
                and not ({"image", "build"} & set(svcs)):
            return "3.9"
        return "1"
    raw = doc["version"]
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ComposeError(f"unsupported version {raw!r}", "version", "InvalidTemplate.Version")
    v = str(raw).strip()
    if v not in SUPPORTED_VERSIONS:
        raise ComposeError(
            f"unsupported version {v!r}: use no version (v1: services at the top level), '2'…'2.4' or '3'…'3.9'",
            "version", "InvalidTemplate.Version",
        )
    return "2.0" if v == "2" else "3.0" if v == "3" else v


def load(text: str, variables: dict[str, Any] | None = None) -> ComposeFile:
    """YAML text → ComposeFile (interpolated). Raises ComposeError."""
    doc = parse_yaml(text)
    if not isinstance(doc, dict):
        raise ComposeError(
            f"the template must be a YAML mapping of services, got {type(doc).__name__}",
            code="InvalidTemplate.Yaml",
        )
    bad_keys = [k for k in doc if not isinstance(k, str)]
    if bad_keys:
        raise ComposeError(f"top-level keys must be strings, got {bad_keys[0]!r}", code="InvalidTemplate.Yaml")
    version = _version_of(doc)
    warnings: list[str] = []
    body = {k: v for k, v in doc.items() if k != "version"}
    body = interpolate(body, variables or {}, warnings)
    if version == "1":
        data: dict[str, Any] = {"services": body}
    else:
        data = body
    return ComposeFile(version=version, data=data, warnings=warnings)
