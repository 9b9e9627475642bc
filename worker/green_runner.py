"""Gevent mode of a runner child: many tasks at once, one greenlet each.

For I/O-bound tasks (HTTP calls, sleeps, database queries) one process can wait on
hundreds of tasks at once, as Celery's ``-P gevent`` does. The standard library is
patched before any task module is imported, so their blocking calls yield. The
child enforces each task's time limit and cancellation inside the task's greenlet;
a greenlet that hogs the CPU cannot be interrupted, so the parent kills the whole
child as a backstop, handing its other tasks back.
"""

from __future__ import annotations

import logging
from multiprocessing.connection import Connection

import gevent
import gevent.monkey
import gevent.socket

from worker import progress
from worker.errors import TaskCancelled
from worker.runner import cancelled_outcome, progress_sender, run_task, send_outcome
from worker.store import Outcome, TaskStatus, error_json

logger = logging.getLogger(__name__)


def patch() -> None:
    """Make the standard library cooperative in this process."""
    gevent.monkey.patch_all()


def serve(conn: Connection) -> None:
    """Run each task that arrives in its own greenlet until the pipe closes."""
    running: dict[str, gevent.Greenlet] = {}
    while True:
        try:
            gevent.socket.wait_read(conn.fileno())
            message = conn.recv()
        except (EOFError, OSError):
            return

        if message[0] == "cancel":
            task = running.get(message[1])
            if task is not None:
                task.kill(TaskCancelled, block=False)
            continue

        _, task_id, name, attempt, payload, time_limit_s = message
        running[task_id] = gevent.spawn(
            _run, conn, running, task_id, name, attempt, payload, time_limit_s
        )


def _run(
    conn: Connection,
    running: dict[str, gevent.Greenlet],
    task_id: str,
    name: str,
    attempt: int,
    payload: bytes,
    time_limit_s: float,
) -> None:
    # Each greenlet has its own context, so reports go to the right task.
    progress.install_sink(progress_sender(conn, task_id, attempt))
    limit = gevent.Timeout(time_limit_s if time_limit_s > 0 else None)
    limit.start()
    try:
        outcome = run_task(task_id, name, payload)
    except gevent.Timeout as expired:
        if expired is not limit:
            raise
        logger.warning("task overran its time limit task_id=%s", task_id)
        outcome = Outcome(
            TaskStatus.FAILED,
            error_json("TimeLimitExceeded", "the task ran past its time limit"),
        )
    except TaskCancelled:
        outcome = cancelled_outcome()
    finally:
        limit.close()
        running.pop(task_id, None)
    send_outcome(conn, task_id, attempt, outcome)
