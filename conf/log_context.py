"""What a log line is about: the request and the task, carried in context variables.

The web app sets the request id at the start of each request and the task id as
soon as it knows one; a filter on the log handler copies both onto every record.
Context variables are per greenlet under gevent and per thread otherwise, so
concurrent requests never see each other's ids.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("taskgate_request_id", default=None)
task_id: ContextVar[str | None] = ContextVar("taskgate_task_id", default=None)


def bind_request(request: str | None) -> None:
    """Start a request's context: its id, and no task yet."""
    request_id.set(request)
    task_id.set(None)


def bind_task(task: str) -> None:
    """Name the task the current request is about."""
    task_id.set(task)


class ContextFilter(logging.Filter):
    """Put ``request_id`` and ``task_id`` (or None) on every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the attributes; an id given as ``extra=`` by the caller wins."""
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        if getattr(record, "task_id", None) is None:
            record.task_id = task_id.get()
        return True
