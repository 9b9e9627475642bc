"""Tasks used only by the tests; the test stack's workers import this module."""

from __future__ import annotations

import contextlib
import os
import time

from worker.registry import task


@task("tests.record")
def record(path: str, token: str) -> dict[str, str]:
    """Append ``token`` to the file at ``path``: counts executions across processes."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, f"{token}\n".encode())
    finally:
        os.close(descriptor)
    return {"token": token, "pid": str(os.getpid())}


@task("tests.unserializable")
def unserializable() -> object:
    """Return something JSON cannot hold."""
    return object()


@task("tests.pid_then_sleep")
def pid_then_sleep(path: str, seconds: float) -> dict[str, float]:
    """Write this process's pid to ``path``, then sleep: lets a test kill the runner."""
    with open(path, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(seconds)
    return {"slept": seconds}


@task("tests.stubborn")
def stubborn(path: str, seconds: float) -> dict[str, float]:
    """Ignore cancellation, as badly written task code might: the pool must kill it."""
    with open(path, "w") as handle:
        handle.write(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # Swallowing the cancellation (a BaseException) is the point of this task.
        with contextlib.suppress(BaseException):
            time.sleep(0.05)
    return {"slept": seconds}
