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

import math
import re
import time
import uuid
from typing import Any, NamedTuple

import gevent
import orjson
from flask import Blueprint, Response, current_app, request
from gevent.event import Event

from app.errors import RequestError, problem
from app.idempotency import key_reused_error, read_idempotency
from app.metrics import count_submitted
from app.params import (
    BodyLimits,
    json_object_body,
    optional_seconds_param,
    seconds_param,
)
from app.prefer import decide_wait, read_preferences
from app.retry import retry_after_s
from app.services import Clients, Services
from conf.log_context import bind_task
from conf.settings import Settings
from worker.errors import TaskFinishedError
from worker.registry import TASK_NAME
from worker.store import Idempotency, NewTask, TaskStatus, record_json

api = Blueprint("api", __name__)

TASK_ID = re.compile(r"^[0-9a-f]{32}$")


class Ended(NamedTuple):
    """A task that ended: its record as JSON, and its final status."""

    record: bytes
    status: str


# How long a synchronous call whose task Redis reports finished waits for the
# task's reply before it reads the record instead.
REPLY_GRACE_S = 0.05


@api.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers. Says nothing of Redis or the broker."""
    return _json({"status": "ok"})


@api.post("/v1/tasks/<name>")
def submit_task(name: str) -> Response:
    """Run task ``name`` with the body's members as keyword arguments."""
    settings = _settings()
    wait_s, applied = decide_wait(
        optional_seconds_param("wait"),
        read_preferences(),
        settings.wait_default_s,
        settings.wait_max_s,
    )
    time_limit_s = seconds_param("time_limit", 0.0, math.inf, positive=True)
    if len(name) > settings.max_task_name_chars or not TASK_NAME.fullmatch(name):
        raise RequestError(
            404,
            "unknown-task",
            "Unknown task",
            f"task names match {TASK_NAME.pattern} and have at most "
            f"{settings.max_task_name_chars} characters",
        )
    body, arguments = json_object_body(_body_limits(settings))
    idempotency = read_idempotency(name, arguments, settings.idempotency_ttl_s)
    response = _run(
        name, body, arguments, wait_s, time_limit_s, _clients(), idempotency
    )
    # The answer's status depends on the Prefer header: caches must key on it.
    response.vary.add("Prefer")
    if applied:
        response.headers["Preference-Applied"] = ", ".join(applied)
    return response


@api.post("/api/process")
def process_alias() -> Response:
    """The origin document's endpoint: the ``process`` task, answered with its result."""
    settings = _settings()
    body, arguments = json_object_body(_body_limits(settings))
    response = _run(
        "process", body, arguments, settings.wait_default_s, 0.0, _clients()
    )
    if response.status_code != 200:
        return response
    record = orjson.loads(response.get_data())
    return _json(record["result"])


@api.get("/v1/tasks/<task_id>")
def get_task(task_id: str) -> Response:
    """The task resource; ``?wait=S`` returns as soon as the task ends.

    ``?redirect=result`` asks for ``303 See Other`` to the result resource once
    the task succeeded; without it the answer is always the task resource, so
    clients that do not follow redirects never meet one.
    """
    settings = _settings()
    wait_s = seconds_param("wait", 0.0, settings.wait_max_s)
    redirect = request.args.get("redirect")
    if redirect not in (None, "result"):
        raise RequestError(
            400, "invalid-query", "Invalid query", "redirect must be 'result'"
        )
    if not TASK_ID.fullmatch(task_id):
        raise _no_such_task(task_id)

    clients = _clients()
    fields = clients.store.get(task_id)
    if fields is None:
        raise _no_such_task(task_id)
    if wait_s > 0 and not TaskStatus(fields[b"status"].decode()).is_final:
        fields = _wait_finished(clients, task_id, wait_s) or fields
    if redirect and fields[b"status"] == TaskStatus.SUCCEEDED.value.encode():
        location = f"/v1/tasks/{task_id}/result"
        redirect_response = Response(b"", 303, headers={"Location": location})
        # No body, so no media type (Flask would say text/html).
        del redirect_response.headers["Content-Type"]
        return redirect_response
    return Response(record_json(fields), 200, mimetype="application/json")


@api.get("/v1/tasks/<task_id>/result")
def get_result(task_id: str) -> Response:
    """A succeeded task's result itself; a 409 problem while it has none."""
    if not TASK_ID.fullmatch(task_id):
        raise _no_such_task(task_id)
    fields = _clients().store.get(task_id)
    if fields is None:
        raise _no_such_task(task_id)
    status = fields[b"status"].decode()
    if status != TaskStatus.SUCCEEDED:
        raise RequestError(
            409,
            "task-not-succeeded",
            "Task has no result",
            f"the task is {status}; only a succeeded task has a result",
        )
    return Response(fields.get(b"result", b"null"), 200, mimetype="application/json")


@api.delete("/v1/tasks/<task_id>")
def cancel_task(task_id: str) -> Response:
    """Cancel a queued or running task; a finished one is a 409 problem."""
    if not TASK_ID.fullmatch(task_id):
        raise _no_such_task(task_id)

    clients = _clients()
    cancellation = clients.store.cancel(task_id)
    if cancellation.previous == "missing":
        raise _no_such_task(task_id)
    if cancellation.previous not in (TaskStatus.QUEUED, TaskStatus.RUNNING):
        raise TaskFinishedError(cancellation.previous)
    # The broker drops it from its queue, or asks its worker to stop it.
    clients.dispatcher.cancel(task_id, cancellation.owner)

    fields = clients.store.get(task_id)
    if fields is None:
        raise _no_such_task(task_id)
    return Response(record_json(fields), 200, mimetype="application/json")


def _run(
    name: str,
    body: bytes,
    arguments: dict[str, Any],
    wait_s: float,
    time_limit_s: float,
    clients: Clients,
    idempotency: Idempotency | None = None,
) -> Response:
    spec = clients.catalog.spec(name)
    spec.check(arguments)
    if spec.time_limit_s > 0:
        time_limit_s = min(time_limit_s or spec.time_limit_s, spec.time_limit_s)
    task_id = uuid.uuid4().hex
    bind_task(task_id)
    created = clients.records.create(
        NewTask(
            task_id, name, body, max(1, spec.max_attempts), time_limit_s, idempotency
        )
    )
    if not created.created:
        return _replay(clients, created.existing, idempotency, wait_s)
    # Watch before sending: the task may end before the broker's reply comes
    # back, or its reply may be lost with a broker restart; Redis still says.
    finished = clients.watcher.watch(task_id) if wait_s > 0 else None
    try:
        ended, ahead = _submit_and_wait(
            clients, task_id, name, body, time_limit_s, wait_s, finished, idempotency
        )
    finally:
        if finished is not None:
            clients.watcher.unwatch(task_id, finished)

    if ended is None:
        return _accepted(clients, task_id, name, polled=wait_s > 0, ahead=ahead)
    return _finished(ended)


def _replay(
    clients: Clients, existing: str, idempotency: Idempotency | None, wait_s: float
) -> Response:
    """Answer a repeated Idempotency-Key with the task the first request made."""
    task_id, _, digest = existing.partition(":")
    if idempotency is None or digest != idempotency.request_digest:
        raise key_reused_error()
    # The key expires no later than the record (TTL setting check), so the
    # record is there; it may end while we wait, like a long-poll.
    fields = clients.store.get(task_id)
    if fields is not None and wait_s > 0:
        fields = _wait_finished(clients, task_id, wait_s) or fields
    if fields is None:
        raise _no_such_task(task_id)
    ended = _ended(fields)
    if ended is not None:
        return _finished(ended)
    headers = {
        "Location": f"/v1/tasks/{task_id}",
        "Retry-After": str(retry_after_s(fields, _settings().retry_after_s)),
    }
    return Response(
        record_json(fields), 202, headers=headers, mimetype="application/json"
    )


def _submit_and_wait(
    clients: Clients,
    task_id: str,
    name: str,
    body: bytes,
    time_limit_s: float,
    wait_s: float,
    finished: Event | None,
    idempotency: Idempotency | None,
) -> tuple[Ended | None, int]:
    """Send the task; how it ended if it ends within ``wait_s``.

    Also returns how many tasks of its name the broker had queued before it,
    for the ``Retry-After`` of a ``202``.
    """
    reply_by = time.monotonic() + wait_s if finished is not None else 0.0
    try:
        ticket = clients.dispatcher.submit(task_id, name, body, time_limit_s, reply_by)
        count_submitted(name)
    except Exception:
        # The client never hears of this id; a stale record would only confuse,
        # and the key must be free for the client's retry.
        clients.store.discard(task_id, name, idempotency)
        raise

    try:
        if finished is None:
            return None, ticket.ahead
        if not ticket.reply.ready():
            remaining_s = max(0.0, reply_by - time.monotonic())
            gevent.wait([ticket.reply, finished], timeout=remaining_s, count=1)
        if finished.is_set() and not ticket.reply.ready():
            # The finish script publishes before the pool sends the reply, so
            # the reply is normally right behind: take it rather than read the
            # record again. Only a lost reply costs the grace.
            ticket.reply.wait(min(REPLY_GRACE_S, max(0.0, reply_by - time.monotonic())))
        reply = clients.dispatcher.wait_reply(ticket, 0)
        if reply is not None:
            return Ended(reply.payload, reply.header.detail), 0
    finally:
        clients.dispatcher.release(ticket)

    if not finished.is_set():
        return None, 0
    fields = clients.store.get(task_id)
    if fields is None:
        return None, 0
    return _ended(fields), 0


def _ended(fields: dict[bytes, bytes]) -> Ended | None:
    """The ended task of a raw record; None while it goes on."""
    status = fields[b"status"].decode()
    if not TaskStatus(status).is_final:
        return None
    return Ended(record_json(fields), status)


def _finished(ended: Ended) -> Response:
    """The answer for a task that ended: its record, or the problem it ended with.

    A success is answered with the record's bytes as they came; only the other
    endings are decoded, to build their problem.
    """
    if ended.status == TaskStatus.SUCCEEDED:
        return Response(ended.record, 200, mimetype="application/json")
    resource = orjson.loads(ended.record)
    if resource["status"] == TaskStatus.CANCELLED:
        return problem(
            409,
            "task-cancelled",
            "Task cancelled",
            "the task was cancelled before it ended",
            task_id=resource["id"],
            headers={"Location": f"/v1/tasks/{resource['id']}"},
        )
    if resource["status"] == TaskStatus.FAILED:
        error = resource.get("error") or {}
        if error.get("type") == "InvalidArgumentsError":
            # The task refused its arguments before doing anything: the request's fault.
            return problem(
                422,
                "invalid-arguments",
                "Invalid task arguments",
                error.get("message", ""),
                task_id=resource["id"],
                headers={"Location": f"/v1/tasks/{resource['id']}"},
            )
        return problem(
            500,
            "task-failed",
            "Task failed",
            f"{error.get('type', 'Error')}: {error.get('message', '')}",
            task_id=resource["id"],
            error=error,
            headers={"Location": f"/v1/tasks/{resource['id']}"},
        )
    return Response(ended.record, 200, mimetype="application/json")


def _accepted(
    clients: Clients, task_id: str, name: str, polled: bool, ahead: int
) -> Response:
    """202 with where to look; the body is the task as it stands now.

    A task just accepted is answered from what this process knows (``ahead``,
    from the broker's acceptance); one that was waited for is read again.
    """
    fields = clients.store.get(task_id) if polled else None
    ended = _ended(fields) if fields is not None else None
    if ended is not None:
        # It ended in the moment between the wait and this read.
        return _finished(ended)
    if fields is not None:
        body = record_json(fields)
    else:
        body = orjson.dumps(
            {"id": task_id, "name": name, "status": TaskStatus.QUEUED.value}
        )
    headers = {
        "Location": f"/v1/tasks/{task_id}",
        "Retry-After": str(_retry_after(clients, name, fields, ahead)),
    }
    return Response(body, 202, headers=headers, mimetype="application/json")


def _retry_after(
    clients: Clients, name: str, fields: dict[bytes, bytes] | None, ahead: int
) -> int:
    """Retry-After of a task that goes on; a queued one counts the queue before it."""
    if fields is not None and fields.get(b"status") == TaskStatus.QUEUED.value.encode():
        ahead = clients.store.queued_before(float(fields[b"created_at"]))
    capacity = clients.catalog.capacity(name)
    return retry_after_s(fields, _settings().retry_after_s, ahead, capacity)


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


def _no_such_task(task_id: str) -> RequestError:
    return RequestError(
        404,
        "unknown-task-id",
        "No such task",
        "no task with this id exists (or its record expired)",
    )


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status, mimetype="application/json")


def _body_limits(settings: Settings) -> BodyLimits:
    return BodyLimits(
        settings.max_body_bytes, settings.max_json_depth, settings.max_json_items
    )


def _settings() -> Settings:
    settings: Settings = current_app.config["TASKGATE_SETTINGS"]
    return settings


def _clients() -> Clients:
    services: Services = current_app.extensions["taskgate"]
    return services.get()
