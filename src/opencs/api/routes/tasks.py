"""DescribeTaskInfo: GET /tasks/{task_id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from opencs.api.deps import services
from opencs.api.schemas import TaskId
from opencs.api.store_reads import store_read
from opencs.tasks.engine import TaskEngine

router = APIRouter()


@router.get("/tasks/{task_id}")
async def describe_task(task_id: TaskId, request: Request) -> dict[str, Any]:
    # async, the store read inline on SQLite (a sync route takes two hops: see routes/clusters.py)
    return TaskEngine.describe(await store_read(request, services(request).tasks.get, task_id))
