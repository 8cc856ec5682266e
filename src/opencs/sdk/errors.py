"""Errors raised by the opencs Python SDK.

Every failure is an :class:`OpencsError` carrying the HTTP status, the API error ``Code``, the
``Message`` and the ``RequestId`` of the reply (``status`` is 0 when there was no reply).
"""

from __future__ import annotations

from typing import Any


class OpencsError(Exception):
    """An API call failed: ``status`` (0 without a reply), ``code``, ``message``, ``request_id``."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )


class BadRequestError(OpencsError):
    """400 and other 4xx replies without a more specific class."""


class AuthError(OpencsError):
    """401/403: missing, unknown or wrongly signed credentials, or not allowed."""


class NotFoundError(OpencsError):
    """404: the cluster, task, instance ... does not exist."""


class ConflictError(OpencsError):
    """409: the resource is in a state that does not allow the operation."""


class ServerError(OpencsError):
    """5xx: the server failed."""


class TransportError(OpencsError):
    """No usable HTTP reply: connection refused, DNS failure, timeout, broken connection."""

    def __init__(self, message: str, endpoint: str, cause: BaseException | None = None) -> None:
        super().__init__(0, "TransportError", message, None)
        self.endpoint = endpoint
        self.cause = cause


class TaskFailed(OpencsError):
    """A task ended in state ``fail``; ``code``/``message`` come from the task's ``error``."""

    def __init__(self, task: Any) -> None:
        err = task.get("error") or {}
        code = str(err.get("code") or "TaskFailed") if isinstance(err, dict) else "TaskFailed"
        message = str(err.get("message") or "") if isinstance(err, dict) else str(err)
        if not message:
            message = f"task {task.get('task_id', '?')} ended in state {task.get('state', '?')}"
        super().__init__(0, code, message, None)
        self.task = task
        self.task_id: str | None = task.get("task_id")


class ProjectFailed(OpencsError):
    """A waited-for project ended in ``current_state`` ``failed``; ``message`` is its reason."""

    def __init__(self, project: Any) -> None:
        name = project.get("name", "?")
        message = str(project.get("message") or f"project {name} failed")
        super().__init__(0, "ProjectFailed", message, None)
        self.project = project
        self.name: str = str(name)


class WaitTimeout(OpencsError, TimeoutError):
    """A waiter gave up; ``last`` is the last state seen (may be ``None``)."""

    def __init__(self, code: str, message: str, timeout: float, last: Any) -> None:
        super().__init__(0, code, message, None)
        self.timeout = timeout
        self.last = last


class TaskTimeout(WaitTimeout):
    """:meth:`Client.wait_task` gave up; ``task`` is the last state seen (may be ``None``)."""

    def __init__(self, task_id: str, timeout: float, task: Any) -> None:
        state = (task or {}).get("state", "unknown")
        super().__init__("TaskTimeout", f"task {task_id} still {state} after {timeout:g}s", timeout, task)
        self.task_id = task_id
        self.task = task


def error_for_status(status: int, code: str, message: str, request_id: str | None) -> OpencsError:
    """The :class:`OpencsError` subclass matching an HTTP error status."""
    cls: type[OpencsError]
    if status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = ConflictError
    elif status >= 500:
        cls = ServerError
    else:
        cls = BadRequestError
    return cls(status, code, message, request_id)
