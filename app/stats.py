"""``GET /v1/stats``: queues, capacity and throughput, for the dashboard.

Everything comes from Redis in three round trips, never from the broker (which
the web reaches only to hand over tasks): the worker records the pools write at
each heartbeat give running tasks and free slots per name; the status indexes
give queued and running counts; counting index entries per time bucket gives the
throughput.

Known limit: the throughput is bucketed by the tasks' creation time (the score
of the indexes), so a task that ran for minutes counts as finished in the bucket
it was submitted in. For short tasks the two are the same.

Known limit: queued tasks are counted per name among the newest
:data:`MAX_QUEUED_READ` queued tasks only; ``queued`` in the totals is exact.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Blueprint, Response, current_app

from app.services import Services
from conf.settings import Settings
from worker.errors import StoreUnavailableError
from worker.store import (
    ALL_INDEX_KEY,
    REDIS_DOWN_ERRORS,
    TaskStatus,
    TaskStore,
    status_index_key,
    task_key,
)

stats = Blueprint("stats", __name__)

BUCKET_S = 10
BUCKETS = 30  # five minutes
MAX_QUEUED_READ = 1000
FINAL = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)


@stats.get("/v1/stats")
def get_stats() -> Response:
    """Per task name: queued, running, pools and free slots; throughput per bucket."""
    services: Services = current_app.extensions["taskgate"]
    settings: Settings = current_app.config["TASKGATE_SETTINGS"]
    store = services.get().store
    now = time.time()

    workers = store.live_workers()
    names = set(store.read_live_task_types(settings.task_type_ttl_s))
    names.update(name for worker in workers for name in worker.get("tasks", ()))
    totals, queued_by_name, buckets = _read_counts(store, now)

    rows = []
    for name in sorted(names | set(queued_by_name)):
        serving = [w for w in workers if name in w.get("tasks", ())]
        rows.append(
            {
                "name": name,
                "queued": queued_by_name.get(name, 0),
                "running": sum(
                    1
                    for w in workers
                    for current in w.get("current_tasks", ())
                    if current.get("name") == name
                ),
                "pools": len(serving),
                "slots": sum(int(w.get("slots", 0)) for w in serving),
                "idle_slots": sum(_idle_slots(w) for w in serving),
            }
        )
    body = {
        "generated_at": _iso(now),
        "queued": totals[0],
        "running": totals[1],
        "workers": len(workers),
        "task_names": rows,
        "throughput": {"bucket_s": BUCKET_S, "buckets": buckets},
    }
    return Response(orjson.dumps(body), 200, mimetype="application/json")


def _idle_slots(worker: dict[str, Any]) -> int:
    if worker.get("draining"):
        return 0
    return max(0, int(worker.get("slots", 0)) - len(worker.get("current_tasks", ())))


def _read_counts(
    store: TaskStore, now: float
) -> tuple[tuple[int, int], dict[str, int], list[dict[str, Any]]]:
    """Totals, queued tasks per name, and per-bucket counts, oldest bucket first."""
    end = math.ceil(now / BUCKET_S) * BUCKET_S
    starts = [end - (BUCKETS - index) * BUCKET_S for index in range(BUCKETS)]
    indexes = [ALL_INDEX_KEY, *(status_index_key(status) for status in FINAL)]
    client = store.client
    try:
        pipe = client.pipeline(transaction=False)
        pipe.zcard(status_index_key(TaskStatus.QUEUED))
        pipe.zcard(status_index_key(TaskStatus.RUNNING))
        pipe.zrevrange(status_index_key(TaskStatus.QUEUED), 0, MAX_QUEUED_READ - 1)
        for index in indexes:
            for start in starts:
                pipe.zcount(index, start, f"({start + BUCKET_S}")
        replies = pipe.execute()
        queued_ids: list[bytes] = replies[2]
        pipe = client.pipeline(transaction=False)
        for task_id in queued_ids:
            pipe.hget(task_key(task_id.decode()), "name")
        queued_names: list[bytes | None] = pipe.execute() if queued_ids else []
    except REDIS_DOWN_ERRORS as exc:
        raise StoreUnavailableError(f"Redis unavailable: {exc}") from exc

    queued_by_name: dict[str, int] = {}
    for name in queued_names:
        if name is not None:
            queued_by_name[name.decode()] = queued_by_name.get(name.decode(), 0) + 1
    counts = replies[3:]
    buckets = [
        {
            "start": _iso(start),
            "submitted": counts[number],
            **{
                status.value: counts[(column + 1) * BUCKETS + number]
                for column, status in enumerate(FINAL)
            },
        }
        for number, start in enumerate(starts)
    ]
    return (int(replies[0]), int(replies[1])), queued_by_name, buckets


def _iso(epoch_s: float) -> str:
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
