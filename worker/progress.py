"""Progress reports from inside a running task.

Task code calls :func:`report_progress`; the runner process installs a sink that
forwards each report to the pool parent, which stores it on the task record. Outside
a worker (a unit test calling the task function directly) reports go nowhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

logger = logging.getLogger(__name__)

ProgressSink = Callable[[dict[str, Any]], None]

# A context variable, so that in gevent mode each task's greenlet has its own.
_sink: ContextVar[ProgressSink | None] = ContextVar(
    "taskgate_progress_sink", default=None
)


def report_progress(
    current: float, total: float | None = None, message: str | None = None
) -> None:
    """Tell clients how far the running task has come, e.g. ``report_progress(3, 10)``."""
    sink = _sink.get()
    if sink is None:
        logger.debug("progress outside a worker: current=%s total=%s", current, total)
        return
    sink({"current": current, "total": total, "message": message})


def install_sink(sink: ProgressSink | None) -> None:
    """Route reports of this process to ``sink`` (the runner does this)."""
    _sink.set(sink)
