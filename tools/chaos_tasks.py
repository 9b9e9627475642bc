"""The task the chaos check runs: it journals each execution, then sleeps a little."""

from __future__ import annotations

import os
import time

from worker.registry import task


@task("chaos.work")
def work(token: str, path: str, seconds: float) -> dict[str, str]:
    """Append ``token`` to the journal at ``path`` (one line per run), sleep, return it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, f"{token}\n".encode())
    finally:
        os.close(descriptor)
    time.sleep(seconds)
    return {"token": token}
