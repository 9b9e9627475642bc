"""Example tasks, served by default (``TASKGATE_TASK_MODULES=worker.tasks``)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from worker.errors import InvalidArgumentsError
from worker.progress import report_progress
from worker.registry import task

MAX_SLEEP_S = 3600.0
MAX_HASH_MEGABYTES = 1024


@task("echo")
def echo(**arguments: Any) -> dict[str, Any]:
    """Return the keyword arguments unchanged."""
    return arguments


@task("sleep")
def sleep(seconds: float) -> dict[str, float]:
    """Sleep for ``seconds`` (at most an hour), then say how long."""
    if not 0 <= seconds <= MAX_SLEEP_S:
        raise InvalidArgumentsError(f"seconds must be between 0 and {MAX_SLEEP_S:g}")
    time.sleep(seconds)
    return {"slept": seconds}


@task("hash")
def hash_data(megabytes: int = 1) -> dict[str, Any]:
    """Hash ``megabytes`` MiB of generated data with SHA-256: pure CPU work."""
    if not 1 <= megabytes <= MAX_HASH_MEGABYTES:
        raise InvalidArgumentsError(
            f"megabytes must be between 1 and {MAX_HASH_MEGABYTES}"
        )
    digest = hashlib.sha256()
    block = bytes(range(256)) * 4096  # 1 MiB
    for index in range(megabytes):
        digest.update(block)
        digest.update(index.to_bytes(4, "big"))
    return {"megabytes": megabytes, "sha256": digest.hexdigest()}


@task("countdown")
def countdown(steps: int = 5, interval_s: float = 0.5) -> dict[str, int]:
    """Count down ``steps`` steps of ``interval_s`` seconds, reporting progress."""
    if not 1 <= steps <= 1000 or not 0 <= interval_s <= 60:
        raise InvalidArgumentsError("steps must be 1..1000 and interval_s 0..60")
    for step in range(steps):
        report_progress(step, steps, f"step {step + 1} of {steps}")
        time.sleep(interval_s)
    report_progress(steps, steps, "done")
    return {"steps": steps}


@task("fail")
def fail(message: str = "this task always fails") -> None:
    """Raise RuntimeError: shows how a failing task is reported."""
    raise RuntimeError(message)


@task("process")
def process(data: Any) -> dict[str, Any]:
    """The origin example: mark ``data`` as processed."""
    return {"processed": True, "result": f"Processed: {data}"}
