"""DescribeTaskInfo: GET /tasks/{task_id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from opencs.tasks.engine import TaskEngine

router = APIRouter()


@router.get("/tasks/{task_id}")
def describe_task(task_id: str, request: Request) -> dict[str, Any]:
    rt = request.app.state.runtime
    return TaskEngine.describe(rt.tasks.get(task_id))
