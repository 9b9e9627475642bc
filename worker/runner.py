"""One child of the worker pool: runs task functions.

In ``process`` mode a child runs one task at a time; in ``gevent`` mode many, see
:mod:`worker.green_runner`.

The child owns no socket and no Redis connection. It gets work from its pool parent
over a pipe and sends back progress and the outcome; the parent writes them to Redis
and replies through the broker. Keeping I/O in the parent means heartbeats flow
while a child is busy on the CPU, and a child that dies takes nothing with it.

Pipe messages (pickled tuples):

- parent -> child: ``("run", task_id, name, attempt, payload, time_limit_s)`` and,
  in gevent mode, ``("cancel", task_id)``
- child -> parent: ``("progress", task_id, attempt, progress_json)`` and
  ``("done", task_id, attempt, status, body_json, traceback_text)``

In process mode the parent cancels a running task with SIGUSR1, which raises
:class:`~worker.errors.TaskCancelled` inside the task, and kills the child if it
does not stop within the cancel grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

import orjson

from conf.logging import LogFormat, configure_logging
from worker import progress, registry
from worker.errors import InvalidArgumentsError, TaskCancelled, UnknownTaskError
from worker.store import Outcome, TaskStatus, error_json

logger = logging.getLogger(__name__)


# The signal by which the parent cancels the running task.
CANCEL_SIGNAL = signal.SIGUSR1
# How often a child checks that its parent is still alive.
PARENT_CHECK_S = 1.0

_running = False


def _on_cancel(signum: int, frame: FrameType | None) -> None:
    """Raise TaskCancelled inside the running task; ignored between tasks."""
    if _running:
        raise TaskCancelled


def _exit_with_parent(parent_pid: int) -> None:
    """End this child when the pool parent is gone (killed, say), even mid-task."""
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent_pid:
            os._exit(1)


def main(
    conn: Connection,
    module_names: list[str],
    log_level: str,
    log_format: LogFormat,
    concurrency: int = 1,
) -> None:
    """Child entry point: import task modules, then serve the pipe until it closes."""
    if concurrency > 1:
        # Before the task modules import anything that does I/O.
        from worker import green_runner

        green_runner.patch()
    # The parent decides when children stop. Ctrl-C in a terminal, honcho and
    # Procfile platforms signal the whole process group, so children ignore INT
    # and TERM and leave it to the parent to let their tasks finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(
        target=_exit_with_parent, args=(os.getppid(),), daemon=True
    ).start()
    configure_logging(log_level, log_format)
    registry.load_modules(module_names)

    if concurrency > 1:
        green_runner.serve(conn)
    else:
        _serve_one_at_a_time(conn)


def _serve_one_at_a_time(conn: Connection) -> None:
    global _running
    signal.signal(CANCEL_SIGNAL, _on_cancel)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] != "run":
            continue  # cancellation comes as a signal in this mode
        _, task_id, name, attempt, payload, _ = message

        progress.install_sink(progress_sender(conn, task_id, attempt))
        _running = True
        try:
            outcome = run_task(task_id, name, payload)
        except TaskCancelled:
            # Arrived after the task returned, before the flag was lowered.
            outcome = cancelled_outcome()
        _running = False
        progress.install_sink(None)
        send_outcome(conn, task_id, attempt, outcome)


def progress_sender(
    conn: Connection, task_id: str, attempt: int
) -> progress.ProgressSink:
    """A progress sink that forwards reports of one task to the parent."""

    def send(value: dict[str, Any]) -> None:
        conn.send(("progress", task_id, attempt, orjson.dumps(value)))

    return send


def send_outcome(
    conn: Connection, task_id: str, attempt: int, outcome: Outcome
) -> None:
    """Tell the parent how the attempt ended."""
    conn.send(
        (
            "done",
            task_id,
            attempt,
            outcome.status.value,
            outcome.body,
            outcome.traceback,
        )
    )


def run_task(task_id: str, name: str, payload: bytes) -> Outcome:
    """Call the task with its JSON arguments; any exception becomes a failed outcome."""
    try:
        definition = registry.get(name)
        arguments = orjson.loads(payload)
        if not isinstance(arguments, dict):
            raise InvalidArgumentsError("arguments must be a JSON object")
        result = definition.run(arguments)
    except TaskCancelled:
        logger.info("task cancelled task_id=%s name=%s", task_id, name)
        return cancelled_outcome()
    except (UnknownTaskError, InvalidArgumentsError, orjson.JSONDecodeError) as exc:
        logger.warning("task rejected task_id=%s name=%s error=%s", task_id, name, exc)
        return _failure(exc, "")
    except Exception as exc:
        logger.exception("task raised task_id=%s name=%s", task_id, name)
        return _failure(exc, traceback.format_exc())

    try:
        body = orjson.dumps(result)
    except TypeError as exc:
        logger.error(
            "task result is not JSON task_id=%s name=%s error=%s", task_id, name, exc
        )
        return Outcome(
            TaskStatus.FAILED,
            orjson.dumps({"type": "ResultNotSerializable", "message": str(exc)}),
        )
    return Outcome(TaskStatus.SUCCEEDED, body)


def cancelled_outcome() -> Outcome:
    return Outcome(TaskStatus.FAILED, error_json("Cancelled", "the task was cancelled"))


def _failure(exc: BaseException, trace: str) -> Outcome:
    error = {"type": type(exc).__name__, "message": str(exc)}
    return Outcome(TaskStatus.FAILED, orjson.dumps(error), trace)
