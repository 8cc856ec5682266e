"""DescribeTaskInfo: GET /tasks/{task_id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from opencs.api.deps import services
from opencs.api.schemas import TaskId
from opencs.api.store_reads import store_read

router = APIRouter()


@router.get("/tasks/{task_id}", response_model=dict[str, Any])
async def describe_task(task_id: TaskId, request: Request) -> Response:
    # async, the store read inline on SQLite (a sync route takes two hops: see routes/clusters.py),
    # the reply's JSON from memory while no task was written (TaskEngine.describe_json)
    body = await store_read(request, services(request).tasks.describe_json, task_id)
    return Response(body, media_type="application/json")
