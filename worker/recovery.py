"""Recovery: no task that Redis holds as unfinished stays without an owner.

The broker calls into this module in three cases:

- a pool is forgotten (it left, missed its heartbeats, or vanished): each task it
  ran is given back in Redis (``running`` -> ``queued``) and queued again with the
  next attempt number, or ends ``failed`` with ``WorkerLost`` if its attempts are
  used up (:meth:`Recovery.reclaim`);
- a pool replies ``requeued`` for a task it could not finish or start
  (:meth:`Recovery.requeue`);
- periodically (:meth:`Recovery.step`), it reads the unfinished-task index in
  batches and queues the ``queued`` tasks it does not hold (after a broker restart,
  or a message lost on the way) and reclaims ``running`` tasks whose owner is not
  a live pool. The first scan waits one heartbeat liveness period after start, so
  that pools first tell a restarted broker which tasks they run.

Every transition goes through the store's compare-and-set scripts, so two paths
racing for one task cannot both win.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from conf.settings import Settings
from worker.errors import StoreUnavailableError
from worker.protocol import Command, Header
from worker.store import TaskStatus, TaskStore, UnfinishedTask, error_json, record_json

if TYPE_CHECKING:
    from worker.broker import Broker, PendingTask

logger = logging.getLogger(__name__)

# Records read per broker turn, so a long index never stalls routing for long.
SCAN_BATCH = 500


class Recovery:
    """Puts ownerless tasks back in line; driven by the broker's loop."""

    def __init__(self, broker: Broker, store: TaskStore, settings: Settings) -> None:
        self._broker = broker
        self._store = store
        self._settings = settings
        self._cursor = -math.inf
        self._scan_at = time.monotonic() + settings.worker_liveness_s
        self._store_down = False

    def step(self, now: float) -> None:
        """Read the next batch of the unfinished index, if a scan is due."""
        if now < self._scan_at:
            return
        try:
            batch = self._store.unfinished(self._cursor, SCAN_BATCH)
        except StoreUnavailableError as exc:
            self._note_store_down("scan", exc)
            self._scan_at = now + self._settings.recovery_interval_s
            return
        self._store_down = False

        for task, score in batch:
            self._cursor = score
            self._consider(task)
        if len(batch) < SCAN_BATCH:
            self._cursor = -math.inf
            self._scan_at = now + self._settings.recovery_interval_s

    def _consider(self, task: UnfinishedTask) -> None:
        broker = self._broker
        if broker.knows(task.task_id):
            return
        header = Header(
            Command.SUBMIT,
            task.task_id,
            task.name,
            task.attempts + 1,
            time_limit_s=task.time_limit_s,
        )
        if task.status == TaskStatus.QUEUED:
            if time.time() - task.created_at < self._settings.recovery_min_age_s:
                return
            if broker.waiting >= self._settings.queue_limit:
                return
            logger.info("recovered queued task task_id=%s", task.task_id)
            broker.counts.requeued[task.name, "recovered"] += 1
            broker.enqueue(self._pending(header, b"", task.args))
        elif task.status == TaskStatus.RUNNING and not broker.is_live(task.owner):
            running = replace(header, attempt=task.attempts)
            self.reclaim(self._pending(running, b"", task.args), task.owner)

    def reclaim(self, task: PendingTask, owner: str) -> None:
        """Give back ``owner``'s attempt; queue the task again or let it fail."""
        task_id = task.header.task_id
        error = error_json("WorkerLost", "the worker pool running the task was lost")
        try:
            release = self._store.release(task_id, owner, error)
        except StoreUnavailableError as exc:
            # The periodic scan retries: the owner is no longer a live pool.
            self._note_store_down("release", exc)
            return

        if release.outcome == "queued":
            logger.warning(
                "task queued again after losing its worker task_id=%s attempts=%d",
                task_id,
                release.attempts,
            )
            self._broker.counts.requeued[task.header.name, "worker_lost"] += 1
            self._enqueue_again(task, release.attempts + 1)
        else:
            if release.outcome == "failed":
                logger.warning(
                    "task failed: worker lost on its last attempt task_id=%s", task_id
                )
            self._forward_final(task)

    def requeue(self, task: PendingTask | None, header: Header) -> None:
        """A pool handed a task back: queue it as attempt ``header.attempt``."""
        if task is None:
            task = self._pending(header, b"", b"")
        self._broker.counts.requeued[header.name, "pool_returned"] += 1
        self._enqueue_again(task, header.attempt)

    def _enqueue_again(self, task: PendingTask, attempt: int) -> None:
        payload = task.payload
        header = replace(task.header, command=Command.SUBMIT, attempt=attempt)
        if not payload:
            fields = self._read(header.task_id)
            if fields is None or b"args" not in fields:
                return  # gone; or Redis down, and the periodic scan will find it
            payload = fields[b"args"]
            header = replace(
                header, time_limit_s=float(fields.get(b"time_limit_s", b"0"))
            )
        self._broker.enqueue(self._pending(header, task.reply_to, payload), front=True)

    def _forward_final(self, task: PendingTask) -> None:
        """Send a waiting request the task's final record, if it has one."""
        if not task.header.request_id:
            return
        fields = self._read(task.header.task_id)
        if fields is None or not TaskStatus(fields[b"status"].decode()).is_final:
            return
        status = fields[b"status"].decode()
        reply = replace(task.header, command=Command.REPLY, detail=status)
        self._broker.send_client(task.reply_to, reply, record_json(fields))

    def _read(self, task_id: str) -> dict[bytes, bytes] | None:
        try:
            return self._store.get(task_id)
        except StoreUnavailableError as exc:
            self._note_store_down("read", exc)
            return None

    def _pending(self, header: Header, reply_to: bytes, payload: bytes) -> PendingTask:
        from worker.broker import PendingTask

        return PendingTask(header, reply_to, payload)

    def _note_store_down(self, operation: str, exc: StoreUnavailableError) -> None:
        self._broker.counts.redis_errors[operation,] += 1
        if not self._store_down:
            logger.error("recovery paused, Redis unavailable: %s", exc)
        self._store_down = True
