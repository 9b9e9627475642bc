"""The worker pool: a parent that owns the broker socket and N runner children.

The parent announces the task names it serves and its free slots to the broker,
sends heartbeats, hands each task it receives to an idle child over a pipe, writes
every state transition to Redis and replies through the broker. Children only
compute (see :mod:`worker.runner`), so a busy child never silences the heartbeats,
and a child that dies, overruns its time limit or is cancelled is noticed at once
and replaced.

What happens to a task whose child is lost: the attempt is given back in Redis
(``running`` -> ``queued``) and the broker queues it again, until the task's
attempts are used up; then it ends ``failed`` with ``WorkerLost``. Results that
cannot be written while Redis is down wait in a bounded buffer.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import sys
import time
import uuid
from collections import deque
from dataclasses import replace
from types import FrameType
from typing import Any

import orjson
import zmq

from conf.settings import Settings
from worker import curve, protocol, registry
from worker.children import Assignment, Ending, Runner, Slot, spawn_runner, stop_runners
from worker.curve import reconnect_max_ms
from worker.errors import ProtocolError, StoreUnavailableError
from worker.pool_metrics import PoolCounts, PoolGauges, serve_pool_metrics
from worker.protocol import Command, Header, Message
from worker.store import (
    Outcome,
    TaskStatus,
    TaskStore,
    connect_redis,
    error_json,
    record_json,
)

logger = logging.getLogger(__name__)

# Exit status of a pool whose handshake the broker refused (key or mechanism).
EXIT_REFUSED = 3


class WorkerPool:
    """Supervises runner children and speaks for them to the broker."""

    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._context = context or zmq.Context.instance()
        self._identity = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._specs = {
            name: replace(
                definition.spec,
                max_attempts=definition.spec.max_attempts or settings.max_attempts,
                time_limit_s=definition.spec.time_limit_s or settings.time_limit_s,
            )
            for name, definition in registry.load_modules(
                settings.task_module_names
            ).items()
        }
        self._runners: list[Runner] = []
        self._backlog: deque[Assignment] = deque()
        # Finished attempts whose outcome Redis did not take yet (it was down).
        self._unwritten: deque[tuple[Assignment, Outcome | None]] = deque()
        self._draining = False
        self._stopping = False
        # Whether a broker refused our handshake: the pool then stops, exit 3.
        self.refused = False
        # Attempts this pool finished (any outcome), for GET /v1/workers.
        self._tasks_done = 0
        self.counts = PoolCounts()
        self._poller: zmq.Poller | None = None
        self._socket = self._make_socket()

    @property
    def identity(self) -> str:
        """This pool's name on the broker, in task records and in the logs."""
        return self._identity

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop within the grace period."""
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        for _ in range(self._settings.worker_processes):
            self._add_runner()
        logger.info(
            "worker pool started identity=%s mode=%s processes=%d slots=%d tasks=%s",
            self._identity,
            self._settings.worker_mode,
            len(self._runners),
            len(self._slots),
            ",".join(sorted(self._specs)),
        )

        self._announce()
        next_beat = time.monotonic()
        while not self._stopping:
            next_beat = self._serve_once(next_beat)

        self._shutdown()

    def gauges(self) -> PoolGauges:
        """The pool's state now, for metrics (read from the exporter's thread)."""
        slots = self._slots
        return PoolGauges(
            identity=self._identity,
            mode=self._settings.worker_mode,
            processes=len(self._runners),
            slots=len(slots),
            busy_slots=sum(1 for slot in slots if not slot.idle),
            backlog=len(self._backlog),
            unwritten_results=len(self._unwritten),
            draining=self._draining,
        )

    @property
    def _slots(self) -> list[Slot]:
        return [slot for each in self._runners for slot in each.slots]

    # The loop ---------------------------------------------------------------

    def _serve_once(self, next_beat: float) -> float:
        """One turn: wait for the socket, a child or a deadline; beat if due."""
        wake_at = min(
            [
                next_beat,
                *(slot.deadline for slot in self._slots),
                *(slot.kill_at for slot in self._slots),
            ]
        )
        timeout_ms = max(0, math.ceil((wake_at - time.monotonic()) * 1000))
        ready = dict(self._get_poller().poll(timeout_ms))
        # Everything that arrived in this turn is written to Redis in one round
        # trip (finishes and starts together), not one per task.
        finished: list[tuple[Assignment, Outcome]] = []
        for each in list(self._runners):
            if each.conn.fileno() in ready:
                self._drain_runner(each, finished)
        if self._socket in ready:
            self._drain_socket()
        self._write_turn(finished, self._pairs_to_start())
        self._enforce_deadlines(time.monotonic())

        if time.monotonic() >= next_beat:
            self._heartbeat()
            next_beat = time.monotonic() + self._settings.heartbeat_interval_s
        return next_beat

    def _get_poller(self) -> zmq.Poller:
        if self._poller is None:
            self._poller = zmq.Poller()
            self._poller.register(self._socket, zmq.POLLIN)
            for each in self._runners:
                self._poller.register(each.conn.fileno(), zmq.POLLIN)
        return self._poller

    def _enforce_deadlines(self, now: float) -> None:
        for slot in self._slots:
            if slot.assignment is None:
                continue
            if now >= slot.kill_at:
                logger.warning(
                    "cancelled task did not stop, killing task_id=%s", slot.task_id
                )
                slot.kill()
            elif now >= slot.deadline and slot.ending is Ending.NONE:
                logger.warning(
                    "task overran its time limit, killing task_id=%s", slot.task_id
                )
                slot.kill(Ending.TIME_LIMIT)

    # Broker side -------------------------------------------------------------

    def _make_socket(self) -> zmq.Socket[bytes]:
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self._identity.encode())
        sock.setsockopt(zmq.LINGER, 0)
        # Queue nothing for a broker that is not connected: heartbeats and replies
        # sent then are dropped (results are in Redis already) and the broker
        # learns about us from the next heartbeat. ZeroMQ reconnects by itself,
        # backing off up to RECONNECT_IVL_MAX.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(
            zmq.RECONNECT_IVL_MAX,
            reconnect_max_ms(len(self._settings.broker_backends)),
        )
        keys = curve.client_keys(self._settings)
        curve.secure_client(sock, keys)
        # A refused pool would otherwise stay up, announcing in Redis task names
        # that no broker will ever give it: it stops instead (see main).
        curve.report_refusal(sock, "worker pool", self._stop_refused, keys is not None)
        # With a standby broker both are listed; only the active one listens, and
        # IMMEDIATE sends only over completed connections, so only to it.
        for address in self._settings.broker_backends:
            sock.connect(address)
        return sock

    def _send(self, message: Message) -> None:
        try:
            self._socket.send_multipart(protocol.encode(message), flags=zmq.NOBLOCK)
        except zmq.Again:
            logger.debug("broker not connected; dropped %s", message.header.command)

    def _announce(self) -> None:
        """Tell the broker what we serve, what we run and how many tasks we can take."""
        busy = [slot.assignment for slot in self._slots if slot.assignment]
        running = [
            [a.header.task_id, a.header.name, a.header.attempt]
            for a in [*busy, *self._backlog]
        ]
        free = sum(1 for slot in self._slots if slot.idle) - len(self._backlog)
        announcement = {
            "capacity": len(self._slots),
            "free": max(0, free),
            "tasks": sorted(self._specs),
            "running": running,
            "draining": self._draining,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        self._send(Message(Header(Command.READY), payload=orjson.dumps(announcement)))
        self._publish_task_types()

    def _heartbeat(self) -> None:
        self._send(Message(Header(Command.HEARTBEAT)))
        # While Redis does not answer, one timed-out call per beat is enough: more
        # would delay the next heartbeat until the broker takes us for dead.
        if self._publish_task_types():
            self._write_unwritten()

    def _publish_task_types(self) -> bool:
        """Write what this pool serves and runs to Redis, for the web's catalog."""
        busy = [slot.assignment for slot in self._slots if slot.assignment]
        record = {
            "id": self._identity,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "tasks": sorted(self._specs),
            "processes": len(self._runners),
            # Tasks it can run at once: one per process, or more in gevent mode.
            "slots": len(self._slots),
            "current_tasks": [
                {"id": a.header.task_id, "name": a.header.name} for a in busy
            ],
            "tasks_done": self._tasks_done,
            "draining": self._draining,
        }
        # Twice the broker's liveness: a record outlives a beat or two lost to
        # a slow Redis, never a dead pool for long.
        ttl_s = max(1, math.ceil(2 * self._settings.worker_liveness_s))
        try:
            self._store.announce_task_types(
                {name: spec.to_dict() for name, spec in self._specs.items()}
            )
            self._store.record_worker(self._identity, record, ttl_s)
        except StoreUnavailableError as exc:
            logger.warning("cannot announce task types: %s", exc)
            self.counts.redis_errors["announce",] += 1
            return False
        return True

    def _drain_socket(self) -> None:
        while True:
            try:
                frames = self._socket.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = protocol.decode(frames)
            except ProtocolError as exc:
                logger.warning("dropped malformed message from broker: %s", exc)
                continue

            command = message.header.command
            if command is Command.SUBMIT:
                assignment = Assignment(
                    message.header, message.reply_to, message.payload
                )
                if self._stopping:
                    self._return_unstarted(assignment)
                else:
                    # The broker counts our free slots, so the backlog only holds
                    # tasks for the moment until the next feed (or until a child
                    # that is being replaced is back).
                    self._backlog.append(assignment)
            elif command is Command.CANCEL:
                self._cancel(message.header.task_id)
            elif command is Command.DISCONNECT:
                # Expected at every start (the first announcement can go out
                # before the connection is up) and after a broker restart.
                logger.info(
                    "broker has no record of this pool yet (normal when it "
                    "started or restarted after us); announcing again"
                )
                self._announce()
            else:
                logger.warning("unexpected command from broker: %s", command)

    def _pairs_to_start(self) -> list[tuple[Slot, Assignment]]:
        """Waiting tasks matched with idle children, oldest task first."""
        idle = [slot for slot in self._slots if slot.idle]
        pairs = []
        while self._backlog and idle:
            pairs.append((idle.pop(0), self._backlog.popleft()))
        return pairs

    def _write_turn(
        self,
        finished: list[tuple[Assignment, Outcome]],
        pairs: list[tuple[Slot, Assignment]],
    ) -> None:
        """Write this turn's outcomes and starts in one round trip, then act on them."""
        if not finished and not pairs:
            return
        outcomes = [
            (a.header.task_id, a.header.attempt, outcome) for a, outcome in finished
        ]
        starts = [(a.header.task_id, a.header.attempt) for _, a in pairs]
        try:
            records, owned = self._store.finish_and_start(
                outcomes, starts, self._identity
            )
        except StoreUnavailableError as exc:
            if finished:
                self._finish_failed(finished, exc)
            if pairs:
                self._start_failed(pairs, exc)
            return
        self._finished(finished, records)
        self._started(pairs, owned)

    def _start_failed(
        self, pairs: list[tuple[Slot, Assignment]], exc: StoreUnavailableError
    ) -> None:
        # The tasks stay `queued` in Redis; handing them back lets the broker
        # try again (and recovery finds them should the broker forget them).
        logger.error("cannot start %d tasks: %s", len(pairs), exc)
        self.counts.redis_errors["start",] += 1
        for _, assignment in pairs:
            self._return_unstarted(assignment)

    def _started(self, pairs: list[tuple[Slot, Assignment]], owned: list[bool]) -> None:
        """Give each task Redis let us own to its child; pass the others on."""
        for (slot, assignment), started in zip(pairs, owned, strict=True):
            header = assignment.header
            if not started:
                logger.info(
                    "skipped task not waiting for this attempt task_id=%s attempt=%d",
                    header.task_id,
                    header.attempt,
                )
                self._reply_current(assignment)
                continue
            spec = self._specs.get(header.name)
            limit_s = spec.time_limit_s if spec else self._settings.time_limit_s
            if header.time_limit_s > 0:
                limit_s = min(limit_s, header.time_limit_s)
            slot.give(assignment, limit_s, self._settings.cancel_grace_s)
            self.counts.started[header.name,] += 1
            logger.debug("task started task_id=%s name=%s", header.task_id, header.name)

    def _cancel(self, task_id: str) -> None:
        for slot in self._slots:
            if slot.task_id == task_id:
                logger.info("cancelling running task task_id=%s", task_id)
                slot.cancel(self._settings.cancel_grace_s)
                return
        for assignment in list(self._backlog):
            if assignment.header.task_id == task_id:
                self._backlog.remove(assignment)
                self._reply_current(assignment)
                return

    # Replies -----------------------------------------------------------------

    def _reply(
        self,
        assignment: Assignment,
        detail: str,
        payload: bytes = b"",
        attempt: int | None = None,
        forward: bool = True,
    ) -> None:
        header = assignment.header
        reply = Header(
            Command.REPLY,
            header.task_id,
            header.name,
            header.attempt if attempt is None else attempt,
            header.request_id if forward else "",
            detail,
        )
        self._send(Message(reply, assignment.reply_to, payload))

    def _reply_current(self, assignment: Assignment) -> None:
        """We do not own the task (any more): pass its final record on, if it has one."""
        try:
            fields = self._store.get(assignment.header.task_id)
        except StoreUnavailableError:
            self.counts.redis_errors["read",] += 1
            fields = None
        if fields is not None and TaskStatus(fields[b"status"].decode()).is_final:
            self._reply(assignment, fields[b"status"].decode(), record_json(fields))
        else:
            self._reply(assignment, "skipped", forward=False)

    def _return_unstarted(self, assignment: Assignment) -> None:
        """Hand a task we never started back to the broker, same attempt."""
        self._reply(
            assignment, "requeued", attempt=assignment.header.attempt, forward=False
        )

    def _finish(self, assignment: Assignment, outcome: Outcome) -> None:
        self._write_turn([(assignment, outcome)], [])

    def _finish_failed(
        self, finished: list[tuple[Assignment, Outcome]], exc: StoreUnavailableError
    ) -> None:
        logger.error("%d results kept until Redis is back: %s", len(finished), exc)
        self.counts.redis_errors["finish",] += 1
        for assignment, outcome in finished:
            self._keep_unwritten(assignment, outcome)

    def _finished(
        self,
        finished: list[tuple[Assignment, Outcome]],
        records: list[dict[bytes, bytes] | None],
    ) -> None:
        """Reply to the broker with each written record; pass unwritten ones on."""
        for (assignment, outcome), record in zip(finished, records, strict=True):
            self._tasks_done += 1
            if record is None:
                # The record moved on (cancelled through the API, or given up for
                # a newer attempt): this outcome was not written.
                self.counts.finished[assignment.header.name, "discarded"] += 1
                self._reply_current(assignment)
                continue
            self.counts.finished[assignment.header.name, outcome.status.value] += 1
            logger.debug(
                "task finished task_id=%s status=%s",
                assignment.header.task_id,
                outcome.status,
            )
            self._reply(assignment, outcome.status.value, record_json(record))

    def _give_back(self, assignment: Assignment, reason: str) -> None:
        """Our attempt is lost: queue the task again in Redis, or fail it if none is left."""
        header = assignment.header
        try:
            release = self._store.release(
                header.task_id, self._identity, error_json("WorkerLost", reason)
            )
        except StoreUnavailableError as exc:
            logger.error(
                "lost attempt kept until Redis is back task_id=%s: %s",
                header.task_id,
                exc,
            )
            self.counts.redis_errors["release",] += 1
            self._keep_unwritten(assignment, None)
            return
        self.counts.attempts_lost[header.name,] += 1
        if release.outcome == "queued":
            logger.warning(
                "attempt lost, task queued again task_id=%s attempts=%d",
                header.task_id,
                release.attempts,
            )
            self._reply(
                assignment, "requeued", attempt=release.attempts + 1, forward=False
            )
        else:
            self._reply_current(assignment)

    def _keep_unwritten(self, assignment: Assignment, outcome: Outcome | None) -> None:
        self._unwritten.append((assignment, outcome))
        if len(self._unwritten) >= self._settings.result_buffer and not self._draining:
            logger.error(
                "result buffer full (%d); taking no tasks until Redis is back",
                len(self._unwritten),
            )
            self._draining = True
            self._announce()

    def _write_unwritten(self) -> None:
        """Retry the writes Redis refused, oldest first; stop at the first refusal."""
        for _ in range(len(self._unwritten)):
            assignment, outcome = self._unwritten.popleft()
            before = len(self._unwritten)
            if outcome is None:
                self._give_back(
                    assignment, "the worker process running the task was lost"
                )
            else:
                self._finish(assignment, outcome)
            if len(self._unwritten) > before:
                return  # Redis still down: it went back to the end of the line
        if self._draining and not self._stopping:
            logger.info("result buffer written; taking tasks again")
            self._draining = False
            self._announce()

    # Runners side ------------------------------------------------------------

    def _add_runner(self) -> None:
        settings = self._settings
        concurrency = (
            settings.worker_concurrency if settings.worker_mode == "gevent" else 1
        )
        self._runners.append(
            spawn_runner(
                settings.task_module_names,
                settings.log_level,
                settings.log_format,
                concurrency,
            )
        )
        self._poller = None

    def _drain_runner(
        self, runner: Runner, finished: list[tuple[Assignment, Outcome]]
    ) -> None:
        try:
            while runner.conn.poll():
                self._handle_runner_message(runner, runner.conn.recv(), finished)
        except (EOFError, OSError):
            self._replace_dead_runner(runner)

    def _handle_runner_message(
        self,
        runner: Runner,
        message: tuple[Any, ...],
        finished: list[tuple[Assignment, Outcome]],
    ) -> None:
        kind, task_id, attempt = message[0], message[1], message[2]
        if kind == "progress":
            try:
                self._store.set_progress(task_id, attempt, message[3])
            except StoreUnavailableError as exc:
                logger.warning("progress not stored task_id=%s: %s", task_id, exc)
                self.counts.redis_errors["progress",] += 1
            return

        status, body, trace = message[3], message[4], message[5]
        slot = runner.slot_of(task_id)
        assignment = slot.take_back() if slot else None
        if slot is not None and assignment is not None:
            self.counts.observe_run(
                assignment.header.name, time.monotonic() - slot.started_at
            )
            finished.append((assignment, Outcome(TaskStatus(status), body, trace)))

    def _replace_dead_runner(self, runner: Runner) -> None:
        runner.process.join(timeout=1)
        self._runners.remove(runner)
        self._poller = None
        runner.conn.close()
        exit_code = runner.process.exitcode
        busy = [slot for slot in runner.slots if not slot.idle]
        if not busy and not self._stopping:
            logger.error("idle worker process died exit_code=%s", exit_code)

        if not self._stopping:
            # In gevent mode the kill was for one of the slots; it names the reason.
            endings = {slot.ending for slot in busy}
            reason = "died"
            if Ending.TIME_LIMIT in endings:
                reason = "time_limit"
            elif Ending.CANCELLED in endings:
                reason = "cancelled"
            self.counts.child_restarts[reason,] += 1
        for slot in busy:
            ending = slot.ending
            assignment = slot.take_back()
            assert assignment is not None
            if ending is Ending.TIME_LIMIT:
                error = error_json(
                    "TimeLimitExceeded", "the task ran past its time limit"
                )
                self._finish(assignment, Outcome(TaskStatus.FAILED, error))
            elif ending is Ending.CANCELLED:
                self._reply_current(assignment)
            else:
                logger.error(
                    "worker process died exit_code=%s task_id=%s",
                    exit_code,
                    assignment.header.task_id,
                )
                reason = (
                    f"the worker process running the task exited with code {exit_code}"
                )
                self._give_back(assignment, reason)

        if not self._stopping:
            self._add_runner()

    # Shutdown ----------------------------------------------------------------

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        # Only record the request: the main loop does the work.
        self._stopping = True

    def _stop_refused(self) -> None:
        # Called from the monitor's thread: only record it, as a signal would.
        self.refused = True
        self._stopping = True

    def _shutdown(self) -> None:
        """Take no more tasks, let running ones finish within the grace, hand back the rest."""
        logger.info("worker pool stopping identity=%s", self._identity)
        self._draining = True
        self._announce()
        while self._backlog:
            self._return_unstarted(self._backlog.popleft())

        deadline = time.monotonic() + self._settings.shutdown_grace_s
        next_beat = time.monotonic()
        while (
            any(not slot.idle for slot in self._slots) and time.monotonic() < deadline
        ):
            next_beat = self._serve_once(min(next_beat, deadline))

        for slot in self._slots:
            assignment = slot.take_back()
            if assignment is not None:
                logger.warning(
                    "task handed back at shutdown task_id=%s", assignment.header.task_id
                )
                slot.runner.kill()
                self._give_back(
                    assignment, "the worker pool shut down before the task finished"
                )
        stop_runners(self._runners)
        self._write_unwritten()
        if self._unwritten:
            logger.error(
                "Redis unreachable at shutdown: %d outcomes not written; "
                "recovery will run those tasks again",
                len(self._unwritten),
            )
        self._send(Message(Header(Command.DISCONNECT)))
        self._socket.close(linger=1000)
        # Without Redis the record expires by itself within two liveness periods.
        with contextlib.suppress(StoreUnavailableError):
            self._store.forget_worker(self._identity)
        logger.info("worker pool stopped identity=%s", self._identity)


def main() -> None:
    """``python -m worker``: run a pool with the environment's settings."""
    from conf.logging import configure_logging
    from conf.settings import load

    settings = load()
    configure_logging(settings.log_level, settings.log_format)
    # The pool's Redis calls run in the loop that sends heartbeats: a timeout well
    # under the broker's liveness keeps an unreachable Redis from silencing them.
    timeout_s = min(settings.redis_timeout_s, settings.worker_liveness_s / 4)
    client = connect_redis(settings, pool_size=4, timeout_s=timeout_s)
    try:
        pool = WorkerPool(settings, TaskStore(client, settings.result_ttl_s))
    except ImportError as exc:
        sys.exit(
            f"taskgate: cannot import the task modules {settings.task_modules!r}: {exc}"
        )
    except curve.CurveConfigError as exc:
        sys.exit(f"taskgate: {exc}")
    if settings.worker_metrics_port:
        try:
            serve_pool_metrics(
                pool.counts, pool.gauges, settings.host, settings.worker_metrics_port
            )
        except OSError as exc:
            sys.exit(f"taskgate: the worker pool cannot serve metrics: {exc}")
    pool.run()
    if pool.refused:
        logger.critical("worker pool stopped: the broker refused its handshake")
        sys.exit(EXIT_REFUSED)
