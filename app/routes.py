"""HTTP routes of API version 1, the origin ``/api/process`` alias and health.

A task's record is written to Redis as ``queued`` before the task leaves this
process, so a client that got an id can always read it back. A synchronous call
waits for the worker's reply up to its wait and then answers ``202`` with the
task's ``Location``; the task goes on either way.

A task that ran and raised answers ``500`` with a ``task-failed`` problem: the
failure is in server-side code, not in the request, and a generic client or
monitor should count it as a server error. The gateway's own trouble is ``503``.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request

from app.errors import RequestError, problem
from app.services import Clients, Services
from conf.settings import Settings
from worker.registry import TASK_NAME
from worker.store import TaskStatus, record_json

api = Blueprint("api", __name__)

TASK_ID = re.compile(r"^[0-9a-f]{32}$")
JSON_TYPES = ("application/json",)


@api.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers. Says nothing of Redis or the broker."""
    return _json({"status": "ok"})


@api.post("/v1/tasks/<name>")
def submit_task(name: str) -> Response:
    """Run task ``name`` with the body's members as keyword arguments."""
    settings = _settings()
    wait_s = _wait_param(settings, settings.wait_default_s)
    if not TASK_NAME.match(name):
        raise RequestError(
            404, "unknown-task", "Unknown task", f"task names match {TASK_NAME.pattern}"
        )
    body, _ = _json_object_body()
    return _run(name, body, wait_s, _clients())


@api.post("/api/process")
def process_alias() -> Response:
    """The origin document's endpoint: the ``process`` task, answered with its result."""
    settings = _settings()
    body, _ = _json_object_body()
    response = _run("process", body, settings.wait_default_s, _clients())
    if response.status_code != 200:
        return response
    record = orjson.loads(response.get_data())
    return _json(record["result"])


@api.get("/v1/tasks/<task_id>")
def get_task(task_id: str) -> Response:
    """The task resource; ``?wait=S`` returns as soon as the task ends."""
    settings = _settings()
    wait_s = _wait_param(settings, 0.0)
    if not TASK_ID.match(task_id):
        raise _no_such_task(task_id)

    clients = _clients()
    fields = clients.store.get(task_id)
    if fields is None:
        raise _no_such_task(task_id)
    if wait_s > 0 and not TaskStatus(fields[b"status"].decode()).is_final:
        fields = _wait_finished(clients, task_id, wait_s) or fields
    return Response(record_json(fields), 200, mimetype="application/json")


def _run(name: str, body: bytes, wait_s: float, clients: Clients) -> Response:
    clients.catalog.spec(name).check(orjson.loads(body))
    task_id = uuid.uuid4().hex
    clients.store.create(task_id, name, body)
    try:
        ticket = clients.dispatcher.submit(task_id, name, body)
    except Exception:
        # The client never hears of this id; a stale record would only confuse.
        clients.store.discard(task_id)
        raise

    try:
        record = clients.dispatcher.wait_reply(ticket, wait_s) if wait_s > 0 else None
    finally:
        clients.dispatcher.release(ticket)

    if record is None:
        return _accepted(clients, task_id, name, polled=wait_s > 0)
    return _finished(record)


def _finished(record: bytes) -> Response:
    resource = orjson.loads(record)
    if resource["status"] == TaskStatus.FAILED:
        error = resource.get("error") or {}
        return problem(
            500,
            "task-failed",
            "Task failed",
            f"{error.get('type', 'Error')}: {error.get('message', '')}",
            task_id=resource["id"],
            error=error,
            headers={"Location": f"/v1/tasks/{resource['id']}"},
        )
    return Response(record, 200, mimetype="application/json")


def _accepted(clients: Clients, task_id: str, name: str, polled: bool) -> Response:
    """202 with where to look; the body is the task as it stands now."""
    fields = clients.store.get(task_id) if polled else None
    if fields is not None:
        body = record_json(fields)
    else:
        body = orjson.dumps(
            {"id": task_id, "name": name, "status": TaskStatus.QUEUED.value}
        )
    headers = {
        "Location": f"/v1/tasks/{task_id}",
        "Retry-After": str(_settings().retry_after_s),
    }
    return Response(body, 202, headers=headers, mimetype="application/json")


def _wait_finished(
    clients: Clients, task_id: str, wait_s: float
) -> dict[bytes, bytes] | None:
    event = clients.watcher.watch(task_id)
    try:
        # Read again after subscribing: the task may have ended in between.
        fields = clients.store.get(task_id)
        if fields is None or TaskStatus(fields[b"status"].decode()).is_final:
            return fields
        event.wait(wait_s)
        return clients.store.get(task_id)
    finally:
        clients.watcher.unwatch(task_id, event)


def _json_object_body() -> tuple[bytes, dict[str, Any]]:
    """The raw body and its parsed object; 415 or 400 problems otherwise."""
    mimetype = request.mimetype
    if mimetype and mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise RequestError(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "send the arguments as application/json",
        )
    body = request.get_data(cache=False)
    try:
        arguments = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            400, "invalid-body", "Invalid body", f"the body is not valid JSON: {exc}"
        ) from None
    if not isinstance(arguments, dict):
        raise RequestError(
            400,
            "invalid-body",
            "Invalid body",
            "the body must be a JSON object of keyword arguments",
        )
    return body, arguments


def _wait_param(settings: Settings, default: float) -> float:
    raw = request.args.get("wait")
    if raw is None:
        return default
    try:
        wait_s = float(raw)
    except ValueError:
        wait_s = -1.0
    if not 0 <= wait_s < float("inf"):
        raise RequestError(
            400,
            "invalid-wait",
            "Invalid wait",
            "wait must be a number of seconds, 0 or more",
        )
    return min(wait_s, settings.wait_max_s)


def _no_such_task(task_id: str) -> RequestError:
    return RequestError(
        404,
        "unknown-task-id",
        "No such task",
        "no task with this id exists (or its record expired)",
    )


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status, mimetype="application/json")


def _settings() -> Settings:
    settings: Settings = current_app.config["TASKGATE_SETTINGS"]
    return settings


def _clients() -> Clients:
    services: Services = current_app.extensions["taskgate"]
    return services.get()
