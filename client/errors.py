"""The client's exception tree: one base, then what went wrong and where."""

from __future__ import annotations

from typing import Any

import requests


class TaskgateError(Exception):
    """Base of every error the client raises."""


class TransportError(TaskgateError):
    """The server could not be reached, or did not answer within the timeout."""


class ProblemError(TaskgateError):
    """The server answered with an RFC 9457 problem (or another error status).

    ``type`` is the problem's type URI as sent (relative, ``/problems/...``, or
    ``about:blank``); ``task_id`` is set when the problem is about one task, as a
    failed or cancelled task's is. ``body`` holds every member of the problem.
    """

    def __init__(
        self,
        status: int,
        type: str,  # the RFC 9457 member's name, shadowing the builtin here only
        title: str,
        detail: str,
        task_id: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            f"{status} {title}: {detail}" if detail else f"{status} {title}"
        )
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.task_id = task_id
        self.body = body or {}

    @classmethod
    def from_response(cls, response: requests.Response) -> ProblemError:
        """Read a problem out of an error response; a non-problem body becomes detail."""
        body: dict[str, Any] = {}
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            body = parsed
        detail = body.get("detail")
        if not isinstance(detail, str):
            # gunicorn's own refusals (say, a request line too long) are plain text.
            detail = response.text.strip()[:200]
        task_id = body.get("task_id")
        return cls(
            status=response.status_code,
            type=str(body.get("type", "about:blank")),
            title=str(body.get("title") or response.reason or "Error"),
            detail=detail,
            task_id=task_id if isinstance(task_id, str) else None,
            body=body,
        )


class WaitTimeoutError(TaskgateError):
    """A task did not end within the caller's wait; it goes on in the server.

    ``task`` is the task resource as last read, so the caller can poll it later.
    """

    def __init__(self, task_id: str, task: dict[str, Any]) -> None:
        super().__init__(
            f"task {task_id} did not end in time (status {task.get('status')})"
        )
        self.task_id = task_id
        self.task = task
