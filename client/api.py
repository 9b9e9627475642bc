"""The HTTP client: submit tasks, follow them to their end, read and cancel them.

A task that does not end within the server's wait is answered ``202`` with its
``Location``; :meth:`Client.run` follows it there with long-polls
(``GET /v1/tasks/<id>?wait=S``), each of which the server ends as soon as the task
does. A long-poll that comes back early, before the task ended, is followed by a
pause of the ``Retry-After`` the server last gave, so a client never spins.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

import requests

from client.errors import ProblemError, TransportError, WaitTimeoutError

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
# The server caps one wait at TASKGATE_WAIT_MAX_S (25 s by default); asking for
# more only makes it answer at its cap, so long-polls ask for at most this much.
LONG_POLL_S = 20.0
# The slowest the client polls when the server's Retry-After asks for more.
MAX_PAUSE_S = 5.0

TaskObserver = Callable[[dict[str, Any]], None]


class Client:
    """One taskgate API at ``base_url``; safe to share between threads.

    ``timeout_s`` bounds each HTTP exchange beyond the wait the request itself asks
    the server for (connect, send, and the answer's arrival). Every method raises
    :class:`ProblemError` when the server answers an error, :class:`TransportError`
    when it cannot be reached in time.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout_s = timeout_s
        self._owns_session = session is None
        self._session = session or requests.Session()
        if api_key:
            self._session.headers["Authorization"] = f"Bearer {api_key}"

    def close(self) -> None:
        """Close the kept-alive connections of the session this client made.

        A session passed in belongs to the caller and stays open.
        """
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def submit(self, name: str, /, **arguments: Any) -> dict[str, Any]:
        """Queue task ``name`` and return its resource at once (``id``, ``status``)."""
        response = self._request(
            "POST", f"v1/tasks/{name}", params={"wait": "0"}, json=arguments
        )
        task: dict[str, Any] = response.json()
        return task

    def run(
        self,
        name: str,
        /,
        *,
        wait_s: float = 60.0,
        on_update: TaskObserver | None = None,
        **arguments: Any,
    ) -> Any:
        """Run task ``name`` and return its result, waiting up to ``wait_s`` seconds.

        ``wait_s`` and ``on_update`` are this method's own: a task parameter of
        either name cannot be passed here (use :meth:`submit` and :meth:`wait`).
        ``on_update`` is called with the task resource after each poll, e.g. to
        show progress. Raises :class:`ProblemError` when the task failed (``500``
        ``task-failed``) or was cancelled (``409`` ``task-cancelled``), whether it
        ended during the first request or later; :class:`WaitTimeoutError` when it
        did not end in time (it goes on in the server).
        """
        deadline = time.monotonic() + wait_s
        response = self._request(
            "POST",
            f"v1/tasks/{name}",
            params={"wait": _seconds(min(wait_s, LONG_POLL_S))},
            json=arguments,
            wait_s=min(wait_s, LONG_POLL_S),
        )
        task: dict[str, Any] = response.json()
        if response.status_code == 202:
            if on_update is not None:
                on_update(task)
            task = self._follow(
                urljoin(self.base_url, response.headers.get("Location", "")),
                task,
                deadline,
                _retry_after_s(response),
                on_update,
                LONG_POLL_S,
            )
        return result_of(task)

    def wait(
        self,
        task_id: str,
        wait_s: float,
        on_update: TaskObserver | None = None,
        poll_s: float = LONG_POLL_S,
    ) -> dict[str, Any]:
        """Long-poll task ``task_id`` until it ends; return its final resource.

        A long-poll answers when the task ends, not when it reports progress, so a
        caller that shows progress passes a short ``poll_s`` (seconds per
        long-poll) to hear of it that often. Raises :class:`WaitTimeoutError` if
        the task has not ended after ``wait_s``.
        """
        deadline = time.monotonic() + wait_s
        url = urljoin(self.base_url, f"v1/tasks/{task_id}")
        return self._follow(url, self.get(task_id), deadline, 1.0, on_update, poll_s)

    def get(self, task_id: str, wait_s: float = 0.0) -> dict[str, Any]:
        """The task resource; ``wait_s`` > 0 long-polls until it ends or time runs out."""
        params = {"wait": _seconds(wait_s)} if wait_s > 0 else None
        response = self._request(
            "GET", f"v1/tasks/{task_id}", params=params, wait_s=wait_s
        )
        task: dict[str, Any] = response.json()
        return task

    def list(
        self,
        name: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of tasks, newest first: ``{"tasks": [...], "next_cursor": ...}``."""
        params = {
            key: str(value)
            for key, value in (
                ("name", name),
                ("status", status),
                ("limit", limit),
                ("cursor", cursor),
            )
            if value is not None
        }
        page: dict[str, Any] = self._request("GET", "v1/tasks", params=params).json()
        return page

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a queued or running task; return it, now ``cancelled``."""
        task: dict[str, Any] = self._request("DELETE", f"v1/tasks/{task_id}").json()
        return task

    def workers(self) -> builtins.list[dict[str, Any]]:
        """The live worker pools."""
        workers: builtins.list[dict[str, Any]] = self._request(
            "GET", "v1/workers"
        ).json()["workers"]
        return workers

    def task_types(self) -> builtins.list[dict[str, Any]]:
        """The task names live workers serve, with their parameters."""
        types: builtins.list[dict[str, Any]] = self._request(
            "GET", "v1/task-types"
        ).json()["task_types"]
        return types

    def _follow(
        self,
        url: str,
        task: dict[str, Any],
        deadline: float,
        pause_s: float,
        on_update: TaskObserver | None,
        poll_s: float,
    ) -> dict[str, Any]:
        """Long-poll ``url``, ``poll_s`` at a time, until the task ends or ``deadline``."""
        while task.get("status") not in FINAL_STATUSES:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise WaitTimeoutError(str(task.get("id")), task)
            this_poll_s = min(left_s, poll_s)
            started = time.monotonic()
            task = self._request(
                "GET", url, params={"wait": _seconds(this_poll_s)}, wait_s=this_poll_s
            ).json()
            if on_update is not None:
                on_update(task)
            early_s = this_poll_s - (time.monotonic() - started)
            if task.get("status") not in FINAL_STATUSES and early_s > 0:
                time.sleep(min(pause_s, early_s, MAX_PAUSE_S))
        return task

    def _request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        wait_s: float = 0.0,
    ) -> requests.Response:
        url = urljoin(self.base_url, path)
        try:
            response = self._session.request(
                method, url, params=params, json=json, timeout=wait_s + self.timeout_s
            )
        except requests.RequestException as exc:
            # requests' own message nests the whole retry history; the class says it.
            raise TransportError(
                f"{method} {url}: no answer ({type(exc).__name__})"
            ) from exc
        if response.status_code >= 400:
            raise ProblemError.from_response(response)
        return response


def result_of(task: dict[str, Any]) -> Any:
    """A finished task's result; a problem like the server's for one that did not succeed."""
    status = task.get("status")
    task_id = task.get("id")
    if status == "succeeded":
        return task.get("result")
    if status == "cancelled":
        raise ProblemError(
            409,
            "/problems/task-cancelled",
            "Task cancelled",
            "the task was cancelled before it ended",
            task_id=task_id,
        )
    error = task.get("error") or {}
    raise ProblemError(
        500,
        "/problems/task-failed",
        "Task failed",
        f"{error.get('type', 'Error')}: {error.get('message', '')}",
        task_id=task_id,
        body={"error": error},
    )


def _retry_after_s(response: requests.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        # An HTTP date instead of seconds: taskgate never sends one.
        return 1.0


def _seconds(value: float) -> str:
    """A wait as the plain decimal the server accepts (no exponent)."""
    return f"{max(0.0, value):.3f}"
