"""Shapes of the JSON the API answers, as pydantic models, for the OpenAPI document.

They describe; they do not validate. Responses are built by :mod:`worker.store`
and the routes with orjson on the hot path, and the contract tests check that
real answers match these schemas, which is what keeps the two in step.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Progress(BaseModel):
    """What a running task last reported."""

    current: float
    total: float | None
    message: str | None = None


class TaskError(BaseModel):
    """Why a task failed: the exception's class name and message."""

    type: str
    message: str


class Task(BaseModel):
    """The task resource. ``result`` only when succeeded, ``error`` only when failed.

    A 202 answered at once carries ``id``, ``name`` and ``status`` only.
    """

    model_config = ConfigDict(title="Task")

    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    name: str
    status: Status
    created_at: str | None = Field(None, description="ISO 8601, UTC")
    started_at: str | None = Field(None, description="ISO 8601, UTC")
    finished_at: str | None = Field(None, description="ISO 8601, UTC")
    attempts: int | None = Field(None, description="attempts started")
    max_attempts: int | None = None
    progress: Progress | None = None
    result: Any = Field(None, description="the task's return value (succeeded)")
    error: TaskError | None = Field(None, description="present when failed")


class TaskPage(BaseModel):
    """One page of ``GET /v1/tasks``, newest first."""

    tasks: list[Task]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null on the last page"
    )


class TaskType(BaseModel):
    """A task name live workers serve, as they announced it."""

    name: str
    doc: str = Field(description="the task function's docstring")
    required: list[str]
    optional: list[str]
    accepts_any: bool = Field(description="the function takes **kwargs")
    max_attempts: int
    time_limit_s: float
    workers: int = Field(description="live worker pools that serve it")


class TaskTypes(BaseModel):
    """``GET /v1/task-types``."""

    task_types: list[TaskType]


class CurrentTask(BaseModel):
    """A task a pool is running."""

    id: str
    name: str


class Worker(BaseModel):
    """A live worker pool (a parent process and its children)."""

    id: str
    host: str
    pid: int
    tasks: list[str]
    processes: int
    current_tasks: list[CurrentTask]
    tasks_done: int = Field(description="attempts this pool finished since it started")
    draining: bool
    last_heartbeat: str = Field(description="ISO 8601, UTC")


class Workers(BaseModel):
    """``GET /v1/workers``."""

    workers: list[Worker]


class Problem(BaseModel):
    """RFC 9457 problem details; ``type`` is one of the documented problem URIs."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str
    task_id: str | None = Field(None, description="task-failed, task-cancelled")
    error: TaskError | None = Field(None, description="task-failed")
    task_status: str | None = Field(None, description="task-finished")


class ProcessResult(BaseModel):
    """The origin example's answer."""

    processed: bool
    result: str


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Readiness: every dependency answered."""

    status: Literal["ready"]
    checks: dict[str, Literal["ok"]]


class TaskNameStats(BaseModel):
    """Queue and capacity of one task name."""

    name: str
    queued: int = Field(description="queued tasks of this name (among the newest 1000)")
    running: int
    pools: int = Field(description="live pools serving the name")
    slots: int = Field(description="tasks those pools can run at once")
    idle_slots: int = Field(description="slots of those pools free now")


class ThroughputBucket(BaseModel):
    """Tasks created in one time bucket: how many, and how many ended how."""

    start: str = Field(description="ISO 8601, UTC")
    submitted: int
    succeeded: int
    failed: int
    cancelled: int


class Throughput(BaseModel):
    """Buckets of the last minutes, oldest first, by the tasks' creation time."""

    bucket_s: int
    buckets: list[ThroughputBucket]


class Stats(BaseModel):
    """``GET /v1/stats``."""

    generated_at: str = Field(description="ISO 8601, UTC")
    queued: int
    running: int
    workers: int = Field(description="live worker pools")
    task_names: list[TaskNameStats]
    throughput: Throughput


MODELS: list[type[BaseModel]] = [
    Task,
    TaskPage,
    TaskTypes,
    Workers,
    Stats,
    Problem,
    ProcessResult,
    Health,
    Readiness,
]
