"""One child of the worker pool: runs task functions, one at a time.

The child owns no socket and no Redis connection. It gets work from its pool parent
over a pipe and sends back progress and the outcome; the parent writes them to Redis
and replies through the broker. Keeping I/O in the parent means heartbeats flow
while a child is busy on the CPU, and a child that dies takes nothing with it.

Pipe messages (pickled tuples):

- parent -> child: ``(task_id, name, attempt, payload)``
- child -> parent: ``("progress", task_id, attempt, progress_json)`` and
  ``("done", task_id, attempt, status, body_json, traceback_text)``
"""

from __future__ import annotations

import logging
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any

import orjson

from conf.logging import configure_logging
from worker import progress, registry
from worker.errors import InvalidArgumentsError, UnknownTaskError
from worker.store import Outcome, TaskStatus

logger = logging.getLogger(__name__)


def main(conn: Connection, module_names: list[str], log_level: str) -> None:
    """Child entry point: import task modules, then serve the pipe until it closes."""
    # The parent decides when children stop; Ctrl-C in a terminal reaches the
    # whole process group, so children ignore it and wait for the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(log_level)
    registry.load_modules(module_names)

    while True:
        try:
            task_id, name, attempt, payload = conn.recv()
        except (EOFError, OSError):
            return

        def send_progress(
            value: dict[str, Any], task_id: str = task_id, attempt: int = attempt
        ) -> None:
            conn.send(("progress", task_id, attempt, orjson.dumps(value)))

        progress.install_sink(send_progress)
        outcome = run_task(task_id, name, payload)
        progress.install_sink(None)
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
        definition.spec.check(arguments)
        result = definition.function(**arguments)
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


def _failure(exc: BaseException, trace: str) -> Outcome:
    error = {"type": type(exc).__name__, "message": str(exc)}
    return Outcome(TaskStatus.FAILED, orjson.dumps(error), trace)
