"""Batched creation of task records in the web process.

Every accepted task needs its ``queued`` record in Redis before it is sent to the
broker, one round trip each. Under load, one greenlet per process writes all the
records that requests asked for since its last write in one transaction, so a
thousand concurrent submits cost a few round trips, not a thousand; alone, a
request waits only for its own write plus one greenlet switch.
"""

from __future__ import annotations

import logging

import gevent
from gevent.event import AsyncResult, Event

from worker.errors import StoreUnavailableError
from worker.store import NewTask, TaskStore

logger = logging.getLogger(__name__)

# The most records one transaction carries; more wait for the next one.
MAX_BATCH = 500


class RecordWriter:
    """Creates records for many requests at once; each request waits for its own."""

    def __init__(self, store: TaskStore, timeout_s: float) -> None:
        self._store = store
        # A write waits its turn behind at most one batch, and each batch is
        # bounded by the Redis timeout: past both, something is wrong.
        self._timeout_s = 2 * timeout_s + 1
        self._pending: list[tuple[NewTask, AsyncResult]] = []
        self._wake = Event()
        self._writer = gevent.spawn(self._write_forever)

    def create(self, task: NewTask) -> None:
        """Write ``task``'s record; StoreUnavailableError if Redis did not take it."""
        written = AsyncResult()
        self._pending.append((task, written))
        self._wake.set()
        try:
            written.get(timeout=self._timeout_s)
        except gevent.Timeout:
            raise StoreUnavailableError("the record was not written in time") from None

    def close(self) -> None:
        """Stop the writer greenlet."""
        self._writer.kill(block=False)

    def _write_forever(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                self._write(batch)

    def _write(self, batch: list[tuple[NewTask, AsyncResult]]) -> None:
        try:
            self._store.create_many([task for task, _ in batch])
        except StoreUnavailableError as exc:
            for _, written in batch:
                written.set_exception(exc)
            return
        for _, written in batch:
            written.set(None)
