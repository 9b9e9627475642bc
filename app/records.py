"""Batched creation of task records in the web process.

Every accepted task needs its ``queued`` record in Redis before it is sent to the
broker, one round trip each. Requests write records leader-and-follower style: a
request that finds no write under way writes its record itself, and with it every
record that other requests ask for meanwhile, in one transaction per round. So a
lone request pays one round trip and no extra greenlet switch, and a thousand
concurrent submits cost a few round trips, not a thousand.
"""

from __future__ import annotations

import logging

import gevent
from gevent.event import AsyncResult

from worker.errors import StoreUnavailableError
from worker.store import Created, NewTask, TaskStore

logger = logging.getLogger(__name__)

# The most records one transaction carries; more go in the next round.
MAX_BATCH = 500


class RecordWriter:
    """Creates records for many requests at once; each request waits for its own."""

    def __init__(self, store: TaskStore, timeout_s: float) -> None:
        self._store = store
        # A write waits its turn behind at most a few rounds, each bounded by
        # the Redis timeout: past that, something is wrong.
        self._timeout_s = 3 * timeout_s + 1
        self._pending: list[tuple[NewTask, AsyncResult]] = []
        self._writing = False

    def create(self, task: NewTask) -> Created:
        """Write ``task``'s record; StoreUnavailableError if Redis did not take it.

        Returns what the store says: created, or the task an idempotency key
        already names.
        """
        written = AsyncResult()
        self._pending.append((task, written))
        if not self._writing:
            self._write_pending()
        try:
            created: Created = written.get(timeout=self._timeout_s)
        except gevent.Timeout:
            raise StoreUnavailableError("the record was not written in time") from None
        return created

    def _write_pending(self) -> None:
        """Write rounds until nothing is pending; others queue up while a round runs."""
        self._writing = True
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                self._write(batch)
        finally:
            self._writing = False
            if self._pending:
                # This greenlet was killed mid-round: hand over to a fresh one.
                gevent.spawn(self._write_pending)

    def _write(self, batch: list[tuple[NewTask, AsyncResult]]) -> None:
        try:
            outcomes = self._store.create_many([task for task, _ in batch])
        except StoreUnavailableError as exc:
            for _, written in batch:
                written.set_exception(exc)
            return
        for (_, written), created in zip(batch, outcomes, strict=True):
            written.set(created)
