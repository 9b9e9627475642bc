"""The web process's cached view of which task names workers serve.

Workers announce their task names and parameters to Redis with every heartbeat;
the web process reads that table at most once per ``catalog_refresh_s`` and never
imports task code.

Only a table read from Redis may say "no worker serves this name". While Redis
does not answer, the names of the last good read are still served until their
announcements expire; a name that is missing or expired then gets the store's
own 503 (StoreUnavailableError), never a 404: Redis down says nothing about which
workers are up, and the task could not be recorded anyway.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gevent.event import AsyncResult

from worker.errors import StoreUnavailableError, UnknownTaskError
from worker.registry import TaskSpec
from worker.store import TaskStore

logger = logging.getLogger(__name__)


class TaskCatalog:
    """Answers "may I submit task X with these arguments?" from a cached table."""

    def __init__(self, store: TaskStore, refresh_s: float, ttl_s: float) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._ttl_s = ttl_s
        self._specs: dict[str, tuple[TaskSpec, float]] = {}
        # Worker processes per task name, over the live pools.
        self._capacity: dict[str, int] = {}
        self._loaded_at: float | None = None
        # Set while the latest refresh failed: the table may be stale.
        self._refresh_failed: StoreUnavailableError | None = None
        self._reading: AsyncResult | None = None

    def spec(self, name: str) -> TaskSpec:
        """The spec of a live task name; UnknownTaskError otherwise.

        StoreUnavailableError instead when the name is not live in a table whose
        latest refresh failed: only Redis can say that nobody serves it.
        """
        self._refresh_if_due()
        entry = self._specs.get(name)
        if entry is None or entry[1] < time.time() - self._ttl_s:
            if self._refresh_failed is not None:
                raise StoreUnavailableError(
                    f"cannot tell who serves {name!r}: Redis unavailable"
                ) from self._refresh_failed
            raise UnknownTaskError(f"no worker serves a task named {name!r}")
        return entry[0]

    def capacity(self, name: str) -> int:
        """Worker processes that serve ``name`` in live pools (0 when none or unknown)."""
        self._refresh_if_due()
        return self._capacity.get(name, 0)

    def _refresh_if_due(self) -> None:
        now = time.monotonic()
        if self._loaded_at is not None and (
            self._reading is not None or now - self._loaded_at < self._refresh_s
        ):
            # Fresh enough, or another request is reading it: use the table we have.
            return
        if self._reading is not None:
            # No table yet and a read under way: wait for it rather than add one.
            self._reading.get()
            return

        reading = self._reading = AsyncResult()
        try:
            table = self._store.read_task_types()
            workers = self._store.live_workers()
            self._specs = {name: _entry(spec) for name, spec in table.items()}
            capacity: dict[str, int] = {}
            for worker in workers:
                for name in worker.get("tasks", ()):
                    slots = int(worker.get("slots", worker.get("processes", 0)))
                    capacity[name] = capacity.get(name, 0) + slots
            self._capacity = capacity
            self._loaded_at = now
            self._refresh_failed = None
        except StoreUnavailableError as exc:
            reading.set_exception(exc)
            self._refresh_failed = exc
            if self._loaded_at is None:
                raise
            logger.warning("task catalog not refreshed: Redis unavailable")
        finally:
            self._reading = None
            if not reading.ready():
                reading.set(None)


def _entry(announced: dict[str, Any]) -> tuple[TaskSpec, float]:
    return TaskSpec.from_dict(announced), float(announced.get("seen_at", 0.0))
