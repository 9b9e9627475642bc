"""``GET /v1/tasks/<id>/events``: a task's changes as server-sent events.

Each stream is one greenlet of the gevent worker, woken by the process's single
pub/sub listener (:mod:`app.watch`), never by polling. Every message is the whole
task resource, sent when its status, attempt or progress changed; the stream ends
after the message that carries a final status. Between changes a comment line
goes out every ``TASKGATE_EVENTS_KEEPALIVE_S``, which keeps proxies from cutting
the stream and makes a vanished client show up as a failed write, which ends the
greenlet. A stream also ends after ``TASKGATE_EVENTS_MAX_S``; the client's
``EventSource`` then reconnects and gets the current state first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from flask import Blueprint, Response, current_app

from app.errors import RequestError
from app.routes import TASK_ID
from app.services import Clients, Services
from conf.settings import Settings
from worker.errors import StoreUnavailableError
from worker.store import TaskStatus, record_json

logger = logging.getLogger(__name__)

events = Blueprint("events", __name__)

# How long an EventSource waits before reconnecting, in milliseconds.
RECONNECT_MS = 1000


@events.get("/v1/tasks/<task_id>/events")
def task_events(task_id: str) -> Response:
    """Stream the task's state until it ends."""
    services: Services = current_app.extensions["taskgate"]
    settings: Settings = current_app.config["TASKGATE_SETTINGS"]
    clients = services.get()
    # 404 as a problem before the stream starts; afterwards only events can say.
    if not TASK_ID.fullmatch(task_id) or clients.store.get(task_id) is None:
        raise RequestError(
            404,
            "unknown-task-id",
            "No such task",
            "no task with this id exists (or its record expired)",
        )
    return Response(
        _stream(clients, task_id, settings),
        200,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _stream(clients: Clients, task_id: str, settings: Settings) -> Iterator[bytes]:
    changed = clients.watcher.follow(task_id)
    deadline = time.monotonic() + settings.events_max_s
    last: tuple[bytes | None, ...] | None = None
    number = 0
    try:
        yield f"retry: {RECONNECT_MS}\n\n".encode()
        while True:
            # Clear before reading: a change after the read sets it again.
            changed.clear()
            fields = clients.store.get(task_id)
            if fields is None:
                yield b"event: gone\ndata: {}\n\n"
                return
            state = tuple(fields.get(k) for k in (b"status", b"attempts", b"progress"))
            if state != last:
                last = state
                number += 1
                yield b"id: %d\ndata: %s\n\n" % (number, record_json(fields))
            if TaskStatus(fields[b"status"].decode()).is_final:
                return
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                return
            if not changed.wait(min(settings.events_keepalive_s, remaining_s)):
                yield b": keep-alive\n\n"
    except StoreUnavailableError as exc:
        logger.warning("event stream ended task_id=%s: %s", task_id, exc)
        yield b"event: unavailable\ndata: {}\n\n"
    finally:
        clients.watcher.unfollow(task_id, changed)
