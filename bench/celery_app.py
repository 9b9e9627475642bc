"""The peer system: Celery with one ``echo`` task, Redis as broker and result store.

Both URLs come from the environment so the benchmark's private Redis is used and
no other Redis on the machine is touched:

- ``BENCH_CELERY_BROKER_URL``: where tasks are queued
- ``BENCH_CELERY_RESULT_URL``: where results are stored

Run a worker with ``celery -A bench.celery_app worker``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

app = Celery(
    "bench",
    broker=os.environ["BENCH_CELERY_BROKER_URL"],
    backend=os.environ["BENCH_CELERY_RESULT_URL"],
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    # Like taskgate, keep each task's status: Celery marks STARTED only when asked.
    task_track_started=True,
)


# Celery ships no type hints; its decorator is untyped.
@app.task(name="echo")  # type: ignore[untyped-decorator]
def echo(**arguments: Any) -> dict[str, Any]:
    """Return the keyword arguments unchanged, as taskgate's ``echo`` does."""
    return arguments
