"""DescribeTaskInfo: GET /tasks/{task_id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from opencs.api.deps import services
from opencs.api.schemas import TaskId
from opencs.tasks.engine import TaskEngine

router = APIRouter()


@router.get("/tasks/{task_id}")
def describe_task(task_id: TaskId, request: Request) -> dict[str, Any]:
    return TaskEngine.describe(services(request).tasks.get(task_id))
