"""What the project rules share: their error replies, the protocols of their collaborators, and
small pure helpers (versions, signals, image pins)."""

from __future__ import annotations

import functools
import re
import signal as pysignal
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from opencs.compose import ComposeError
from opencs.engines.apps import AppEngineError, EngineUnavailable
from opencs.errors import ApiError, BadRequest
from opencs.store.models import Task

USABLE_CLUSTER_STATES = ("running", "scaling", "updating")
TRANSITIONAL = ("creating", "updating", "redeploying", "scaling", "starting", "stopping", "removing")


class NotSupportedYet(ApiError):
    status = 400
    code = "NotSupportedYet"


class ServiceUnavailable(ApiError):
    status = 503
    code = "NoManager"


class TaskSubmitter(Protocol):
    """The durable task engine as the project rules use it."""

    def submit(self, task_type: str, params: dict[str, Any], *, cluster_id: str | None = None,
               target_type: str = "", target_id: str = "", session: Any = None, after: str | None = None) -> str: ...

    def wait(self, task_id: str, timeout: float = 60.0) -> Task: ...


class RouteSync(Protocol):
    """Makes the router's routes current now (never raises)."""

    def sync(self, *, drain: bool = False) -> bool: ...


def api_error(e: AppEngineError) -> ApiError:
    """An engine failure as the API answers it (503 when no manager answers)."""
    if isinstance(e, EngineUnavailable):
        return ServiceUnavailable(e.message)
    return ApiError(e.message, code=e.code, status=500)


F = TypeVar("F", bound=Callable[..., Any])


def engine_errors(fn: F) -> F:
    """API methods: AppEngineError -> the coded ApiError."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AppEngineError as e:
            raise api_error(e) from None

    return wrapper  # type: ignore[return-value]


def iso(d: datetime | None) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if d else ""


def template_error(e: ComposeError) -> BadRequest:
    return BadRequest(f"Invalid template: {e}", code=e.code)


def bump_version(v: str) -> str:
    """'1.0' → '1.1', 'v2' → 'v3', 'abc' → 'abc.1' (an update without a version)."""
    m = re.match(r"^(.*?)(\d+)$", v)
    if m:
        return f"{m.group(1)}{int(m.group(2)) + 1}"
    return f"{v}.1"


def parse_signal(sig: str | None) -> str:
    """'KILL', 'SIGTERM', '9' → the engine's signal name; 400 for anything else."""
    raw = (sig or "KILL").strip()
    if raw.isdigit():
        n = int(raw)
        if not 1 <= n <= 64:
            raise BadRequest(f"Parameter 'signal': {raw} is not a signal number", code="InvalidParameter.Signal")
        return raw
    name = raw.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if not hasattr(pysignal.Signals, name):
        raise BadRequest(f"Parameter 'signal': unknown signal {raw!r} (e.g. KILL, TERM, HUP, INT, USR1)",
                         code="InvalidParameter.Signal")
    return name


def pin_image(image: str, digest: str) -> str:
    """``busybox:1`` + digest -> ``busybox@sha256:...`` (what a deploy runs after resolving)."""
    return f"{image.split('@', 1)[0]}@{digest}"


def task_failure(row: Task) -> ApiError:
    code = row.error_code or "OperationFailed"
    status = 503 if code in ("NoManager", "NodeUnreachable") else 500
    return ApiError(row.error_message or "the operation failed", code=code, status=status)
