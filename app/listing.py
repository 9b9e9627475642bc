"""Read-only collections: tasks, task types and worker pools.

Listings come from the Redis sorted-set indexes that the transition scripts keep
(see :mod:`worker.scripts`), never from scanning keys. Pages go newest first; the
cursor is the creation time and id of the last entry a page scanned, written out
plainly (``<seconds>:<id>``) so that the document's pattern for it says exactly
which cursors are valid: any cursor of that shape is a place in the index.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson
from flask import Blueprint, Response, current_app, request

from app.errors import RequestError
from app.services import Services
from conf.settings import Settings
from worker.registry import TASK_NAME
from worker.store import (
    ALL_INDEX_KEY,
    TaskStatus,
    name_index_key,
    record_json,
    status_index_key,
)

listing = Blueprint("listing", __name__)

JSON = "application/json"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Entries one page may read before it answers short (many filtered out).
MAX_SCANNED = 1000
CURSOR = re.compile(r"^([0-9]{1,12}(?:\.[0-9]{1,9})?):([0-9a-f]{32})$")


@listing.get("/v1/tasks")
def list_tasks() -> Response:
    """Tasks newest first; ``?name=``, ``?status=``, ``?limit=``, ``?cursor=``."""
    name = request.args.get("name")
    status = request.args.get("status")
    if name is not None and not TASK_NAME.fullmatch(name):
        raise _invalid_query(f"name must match {TASK_NAME.pattern}")
    if status is not None and status not in TaskStatus.__members__.values():
        raise _invalid_query("status must be one of " + ", ".join(TaskStatus))
    limit = _limit()
    cursor = _cursor()

    if status is not None:
        index = status_index_key(status)
    elif name is not None:
        index = name_index_key(name)
    else:
        index = ALL_INDEX_KEY

    def keep(fields: dict[bytes, bytes]) -> bool:
        # A record read after the index can already be in its next status, and
        # a status index does not know names: check both on the record itself.
        return (name is None or fields.get(b"name") == name.encode()) and (
            status is None or fields.get(b"status") == status.encode()
        )

    services: Services = current_app.extensions["taskgate"]
    page = services.get().store.list_page(index, cursor, limit, keep, MAX_SCANNED)
    body = b'{"tasks":[' + b",".join(record_json(f) for f in page.records) + b"]"
    headers = {}
    if page.next_cursor is None:
        body += b',"next_cursor":null}'
    else:
        token = _encode_cursor(page.next_cursor)
        body += b',"next_cursor":' + orjson.dumps(token) + b"}"
        query = {k: v for k, v in request.args.items() if k != "cursor"}
        query["cursor"] = token
        headers["Link"] = f'</v1/tasks?{urlencode(query)}>; rel="next"'
    return Response(body, 200, headers=headers, mimetype="application/json")


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise _invalid_query(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _cursor() -> tuple[float, str] | None:
    raw = request.args.get("cursor")
    if raw is None:
        return None
    match = CURSOR.fullmatch(raw)
    if match is None:
        raise _invalid_query("cursor must be a next_cursor of an earlier page")
    return float(match.group(1)), match.group(2)


def _encode_cursor(cursor: tuple[float, str]) -> str:
    return f"{cursor[0]!r}:{cursor[1]}"


def _invalid_query(detail: str) -> RequestError:
    return RequestError(400, "invalid-query", "Invalid query", detail)


@listing.get("/v1/task-types")
def list_task_types() -> Response:
    """Task names live workers serve, with parameters, docstring and worker count."""
    services: Services = current_app.extensions["taskgate"]
    settings: Settings = current_app.config["TASKGATE_SETTINGS"]
    store = services.get().store
    workers = store.live_workers()
    types = []
    live = store.read_live_task_types(settings.task_type_ttl_s)
    for name, spec in sorted(live.items()):
        types.append(
            {
                "name": name,
                "doc": spec.get("doc", ""),
                "required": spec.get("required", []),
                "optional": spec.get("optional", []),
                "accepts_any": spec.get("accepts_any", False),
                "max_attempts": spec.get("max_attempts", 0),
                "time_limit_s": spec.get("time_limit_s", 0.0),
                "workers": sum(1 for w in workers if name in w.get("tasks", ())),
            }
        )
    return Response(orjson.dumps({"task_types": types}), 200, mimetype=JSON)


@listing.get("/v1/workers")
def list_workers() -> Response:
    """Live worker pools, newest heartbeat first."""
    services: Services = current_app.extensions["taskgate"]
    workers = [
        {
            "id": record.get("id"),
            "host": record.get("host"),
            "pid": record.get("pid"),
            "tasks": record.get("tasks", []),
            "processes": record.get("processes", 0),
            "current_tasks": record.get("current_tasks", []),
            "tasks_done": record.get("tasks_done", 0),
            "draining": record.get("draining", False),
            "last_heartbeat": _iso(float(record.get("seen_at", 0.0))),
        }
        for record in services.get().store.live_workers()
    ]
    return Response(orjson.dumps({"workers": workers}), 200, mimetype=JSON)


def _iso(epoch_s: float) -> str:
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
