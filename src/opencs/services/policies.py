"""RAM policy documents: parsing, validation and evaluation (deny wins).

A document is `{"Version": "1", "Statement": [{"Effect": "Allow"|"Deny", "Action": ..., "Resource":
..., "Condition": {...}}]}`; Action and Resource are a string or a list, with `*` (any run of
characters) and `?` (one character) as wildcards; actions match case-insensitively (`cs:Describe*`),
resources case-sensitively (`acs:cs:*:*:cluster/c123`). A request is allowed when some statement of
the user's policies allows it and none denies it; otherwise it is refused (implicit deny).

Why no library: the PyPI candidates do not evaluate this language. policyuniverse parses AWS IAM
documents and expands actions against its catalogue of AWS services (no decision for a request, and
`cs:` is no AWS service); py-abac and casbin are engines with their own policy models (casbin's
matcher language, py-abac's rule trees), so a RAM document would have to be translated into them,
Conditions included, and the translation would be the evaluator again, plus a dependency on the hot
path of every signed call. parliament/cloudsplaining lint AWS policies. The rules here are the
few of RAM's documented semantics that opencs uses, compiled once per policy into regular
expressions so that a decision costs microseconds.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from opencs.errors import BadRequest

MAX_DOCUMENT = 6144  # RAM's limit on a policy document (characters)


class MalformedPolicy(BadRequest):
    code = "MalformedPolicyDocument"


@lru_cache(maxsize=4096)
def _glob(pattern: str, nocase: bool) -> re.Pattern[str]:
    rx = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(rx + r"\Z", re.IGNORECASE | re.DOTALL if nocase else re.DOTALL)


def _strings(stmt: Mapping[str, Any], key: str, required: bool) -> tuple[str, ...]:
    v = stmt.get(key)
    if v is None:
        if required:
            raise MalformedPolicy(f"Statement needs {key}")
        return ()
    vals = [v] if isinstance(v, str) else v
    if not isinstance(vals, list) or not vals or not all(isinstance(x, str) and x for x in vals):
        raise MalformedPolicy(f"Statement {key} must be a non-empty string or list of strings")
    return tuple(vals)


# Condition operators: (request value, policy value) -> bool; the key's value is a string
def _ip_in(value: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def _date(v: str) -> datetime | None:
    try:
        d = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _date_cmp(op: str) -> Any:
    def f(value: str, pv: str) -> bool:
        a, b = _date(value), _date(pv)
        if a is None or b is None:
            return False
        return a < b if op == "lt" else a > b
    return f


_OPERATORS: dict[str, Any] = {
    "StringEquals": lambda v, p: v == p,
    "StringNotEquals": lambda v, p: v != p,
    "StringEqualsIgnoreCase": lambda v, p: v.lower() == p.lower(),
    "StringLike": lambda v, p: bool(_glob(p, False).match(v)),
    "StringNotLike": lambda v, p: not _glob(p, False).match(v),
    "IpAddress": _ip_in,
    "NotIpAddress": lambda v, p: not _ip_in(v, p),
    "Bool": lambda v, p: v.lower() == p.lower(),
    "DateLessThan": _date_cmp("lt"),
    "DateGreaterThan": _date_cmp("gt"),
}
_NEGATED = {"StringNotEquals", "StringNotLike", "NotIpAddress"}  # all of the values must hold


@dataclass(frozen=True)
class Statement:
    allow: bool
    actions: tuple[re.Pattern[str], ...]
    resources: tuple[re.Pattern[str], ...]
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...]  # (operator, key, values)

    def matches(self, action: str, resource: str, context: Mapping[str, str]) -> bool:
        if not any(p.match(action) for p in self.actions):
            return False
        if not any(p.match(resource) for p in self.resources):
            return False
        for op, key, values in self.conditions:
            v = context.get(key.lower())
            if v is None:
                return False
            fn = _OPERATORS[op]
            ok = all(fn(v, pv) for pv in values) if op in _NEGATED else any(fn(v, pv) for pv in values)
            if not ok:
                return False
        return True


def _conditions(raw: Any) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise MalformedPolicy("Statement Condition must be an object")
    out = []
    for op, block in raw.items():
        if op not in _OPERATORS:
            raise MalformedPolicy(f"Condition operator {op!r} is not supported ({', '.join(sorted(_OPERATORS))})")
        if not isinstance(block, dict) or not block:
            raise MalformedPolicy(f"Condition {op} must map keys to values")
        for key, vals in block.items():
            seq = [vals] if isinstance(vals, str | bool | int) else vals
            if not isinstance(seq, list) or not seq:
                raise MalformedPolicy(f"Condition {op} {key} needs a value")
            out.append((op, str(key), tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in seq)))
    return tuple(out)


def parse_document(text: str) -> tuple[Statement, ...]:
    """Validate and compile a policy document; MalformedPolicyDocument (400) on any fault."""
    if len(text) > MAX_DOCUMENT:
        raise MalformedPolicy(f"PolicyDocument is longer than {MAX_DOCUMENT} characters")
    try:
        doc = json.loads(text)
    except ValueError:
        raise MalformedPolicy("PolicyDocument is not valid JSON") from None
    if not isinstance(doc, dict) or str(doc.get("Version", "")) != "1":
        raise MalformedPolicy('PolicyDocument must be an object with "Version": "1"')
    stmts = doc.get("Statement")
    if isinstance(stmts, dict):
        stmts = [stmts]
    if not isinstance(stmts, list) or not stmts:
        raise MalformedPolicy("PolicyDocument needs a Statement list")
    out = []
    for st in stmts:
        if not isinstance(st, dict) or st.get("Effect") not in ("Allow", "Deny"):
            raise MalformedPolicy('each Statement needs "Effect": "Allow" or "Deny"')
        actions = _strings(st, "Action", True)
        resources = _strings(st, "Resource", True)
        out.append(Statement(st["Effect"] == "Allow", tuple(_glob(a, True) for a in actions),
                             tuple(_glob(r, False) for r in resources), _conditions(st.get("Condition"))))
    return tuple(out)


def decide(statements: Sequence[Statement], actions: Sequence[str], resource: str,
           context: Mapping[str, str]) -> bool:
    """True when allowed: some statement allows one of the action's names, none denies any."""
    allowed = False
    for st in statements:
        for action in actions:
            if st.matches(action, resource, context):
                if not st.allow:
                    return False
                allowed = True
    return allowed


def decide_within(statements: Sequence[Statement], actions: Sequence[str], resources: Sequence[str],
                  context: Mapping[str, str]) -> bool:
    """`decide` for a resource inside others (a project inside its cluster): a statement naming any
    of `resources` counts, so an Allow on the cluster covers its projects and a Deny on one project
    refuses that project even so (deny wins)."""
    allowed = False
    for st in statements:
        for resource in resources:
            for action in actions:
                if st.matches(action, resource, context):
                    if not st.allow:
                        return False
                    allowed = True
    return allowed
