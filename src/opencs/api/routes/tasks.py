"""DescribeTaskInfo: GET /tasks/{task_id}."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request

from opencs.api.deps import services
from opencs.api.schemas import TaskId
from opencs.tasks.engine import TaskEngine

router = APIRouter()


@router.get("/tasks/{task_id}")
async def describe_task(task_id: TaskId, request: Request) -> dict[str, Any]:
    # async with one hop for the store read (a sync route takes a second one: see routes/clusters.py)
    return TaskEngine.describe(await to_thread.run_sync(services(request).tasks.get, task_id))
