"""The worker pool: a parent that owns the broker socket and N runner children.

The parent announces the task names it serves and its free slots to the broker,
sends heartbeats, hands each task it receives to an idle child over a pipe, writes
the task's state transitions to Redis and replies through the broker. Children
only compute (see :mod:`worker.runner`), so a busy child never silences the
heartbeats and a child that dies is noticed at once and replaced.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import orjson
import zmq

from conf.settings import Settings
from worker import protocol, registry, runner
from worker.errors import ProtocolError, StoreUnavailableError
from worker.protocol import Command, Header, Message
from worker.store import Outcome, TaskStatus, TaskStore, connect, record_json

logger = logging.getLogger(__name__)

# Spawned children start clean: no inherited ZeroMQ context, Redis pool or locks.
_CHILDREN = multiprocessing.get_context("spawn")


@dataclass(slots=True)
class Assignment:
    """A task handed to this pool, as the broker sent it."""

    header: Header
    reply_to: bytes
    payload: bytes


@dataclass(slots=True)
class Child:
    """One runner process and the task it is running, if any."""

    process: BaseProcess
    conn: Connection
    assignment: Assignment | None = None
    started_at: float = field(default_factory=time.monotonic)


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
            name: definition.spec.to_dict()
            for name, definition in registry.load_modules(
                settings.task_module_names
            ).items()
        }
        self._children: list[Child] = []
        self._backlog: deque[Assignment] = deque()
        self._stopping = False
        self._socket = self._make_socket()

    @property
    def identity(self) -> str:
        """This pool's name on the broker and in the logs."""
        return self._identity

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop the children within the grace period."""
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        for _ in range(self._settings.worker_processes):
            self._children.append(self._spawn_child())
        logger.info(
            "worker pool started identity=%s processes=%d tasks=%s",
            self._identity,
            len(self._children),
            ",".join(sorted(self._specs)),
        )

        self._announce()
        next_beat = time.monotonic()
        while not self._stopping:
            next_beat = self._serve_once(next_beat)

        self._shutdown()

    def _serve_once(self, next_beat: float) -> float:
        """One turn: wait for the socket or a child, handle what arrived, beat if due."""
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        for child in self._children:
            poller.register(child.conn.fileno(), zmq.POLLIN)

        timeout_ms = max(0.0, next_beat - time.monotonic()) * 1000
        ready = dict(poller.poll(int(timeout_ms)))
        if self._socket in ready:
            self._drain_socket()
        for child in list(self._children):
            if child.conn.fileno() in ready:
                self._drain_child(child)

        if time.monotonic() >= next_beat:
            self._heartbeat()
            next_beat = time.monotonic() + self._settings.heartbeat_interval_s
        return next_beat

    def _make_socket(self) -> zmq.Socket[bytes]:
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self._identity.encode())
        sock.setsockopt(zmq.LINGER, 0)
        # Queue nothing for a broker that is not connected: heartbeats and replies
        # sent then are dropped (the result is in Redis already) and the broker
        # learns about us from the next heartbeat.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.connect(self._settings.broker_backend)
        return sock

    def _send(self, message: Message) -> None:
        try:
            self._socket.send_multipart(protocol.encode(message), flags=zmq.NOBLOCK)
        except zmq.Again:
            logger.debug("broker not connected; dropped %s", message.header.command)

    # Broker side -----------------------------------------------------------

    def _announce(self) -> None:
        """Tell the broker what we serve and how many tasks we can take now."""
        free = sum(1 for child in self._children if child.assignment is None)
        announcement = {
            "capacity": len(self._children),
            "free": max(0, free - len(self._backlog)),
            "tasks": sorted(self._specs),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        self._send(Message(Header(Command.READY), payload=orjson.dumps(announcement)))
        self._publish_task_types()

    def _heartbeat(self) -> None:
        self._send(Message(Header(Command.HEARTBEAT)))
        self._publish_task_types()

    def _publish_task_types(self) -> None:
        try:
            self._store.announce_task_types(self._specs)
        except StoreUnavailableError as exc:
            logger.warning("cannot announce task types: %s", exc)

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
                self._accept(
                    Assignment(message.header, message.reply_to, message.payload)
                )
            elif command is Command.DISCONNECT:
                logger.info("broker does not know us; announcing again")
                self._announce()
            else:
                logger.warning("unexpected command from broker: %s", command)

    def _accept(self, assignment: Assignment) -> None:
        idle = next(
            (child for child in self._children if child.assignment is None), None
        )
        if idle is None:
            # The broker counts our free slots, so this only happens when a child
            # was being replaced; the task runs as soon as a child is free.
            self._backlog.append(assignment)
            return
        self._start(idle, assignment)

    def _start(self, child: Child, assignment: Assignment) -> None:
        header = assignment.header
        try:
            owned = self._store.start(header.task_id, header.attempt)
        except StoreUnavailableError as exc:
            # Known limit: the task stays `queued` in Redis and is not retried
            # until recovery from Redis exists; the broker slot is released.
            logger.error("cannot start task task_id=%s: %s", header.task_id, exc)
            owned = False
        if not owned:
            logger.info(
                "skipped task not waiting for this attempt task_id=%s attempt=%d",
                header.task_id,
                header.attempt,
            )
            self._reply_skipped(header)
            return

        child.assignment = assignment
        child.conn.send(
            (header.task_id, header.name, header.attempt, assignment.payload)
        )
        logger.debug("task started task_id=%s name=%s", header.task_id, header.name)

    def _reply_skipped(self, header: Header) -> None:
        """Free the broker slot without answering any request."""
        self._send(
            Message(
                Header(
                    Command.REPLY,
                    header.task_id,
                    header.name,
                    header.attempt,
                    request_id="",
                    detail="skipped",
                )
            )
        )

    # Children side ---------------------------------------------------------

    def _spawn_child(self) -> Child:
        parent_end, child_end = _CHILDREN.Pipe()
        process = _CHILDREN.Process(
            target=runner.main,
            args=(
                child_end,
                self._settings.task_module_names,
                self._settings.log_level,
            ),
            name="taskgate-runner",
        )
        process.start()
        child_end.close()
        return Child(process, parent_end)

    def _drain_child(self, child: Child) -> None:
        try:
            while child.conn.poll():
                self._handle_child_message(child, child.conn.recv())
        except (EOFError, OSError):
            self._replace_dead_child(child)

    def _handle_child_message(self, child: Child, message: tuple[Any, ...]) -> None:
        kind, task_id, attempt = message[0], message[1], message[2]
        if kind == "progress":
            try:
                self._store.set_progress(task_id, attempt, message[3])
            except StoreUnavailableError as exc:
                logger.warning("progress not stored task_id=%s: %s", task_id, exc)
            return

        status, body, trace = message[3], message[4], message[5]
        assignment = child.assignment
        child.assignment = None
        if assignment is not None:
            self._finish(assignment, Outcome(TaskStatus(status), body, trace))
        self._feed_backlog()

    def _finish(self, assignment: Assignment, outcome: Outcome) -> None:
        """Write the outcome to Redis, then reply to the broker with the record."""
        header = assignment.header
        try:
            record = self._store.finish(header.task_id, header.attempt, outcome)
        except StoreUnavailableError as exc:
            # Known limit: the result is lost and the record stays `running`; a
            # bounded result buffer comes with the reliability work.
            logger.error("result not stored task_id=%s: %s", header.task_id, exc)
            record = None
        if record is None:
            self._reply_skipped(header)
            return

        logger.debug(
            "task finished task_id=%s status=%s", header.task_id, outcome.status
        )
        reply = Header(
            Command.REPLY,
            header.task_id,
            header.name,
            header.attempt,
            header.request_id,
            outcome.status.value,
        )
        self._send(Message(reply, assignment.reply_to, record_json(record)))

    def _replace_dead_child(self, child: Child) -> None:
        child.process.join(timeout=1)
        self._children.remove(child)
        child.conn.close()
        exit_code = child.process.exitcode
        if child.assignment is not None:
            header = child.assignment.header
            logger.error(
                "worker process died exit_code=%s task_id=%s", exit_code, header.task_id
            )
            message = (
                f"the worker process running the task exited with code {exit_code}"
            )
            error = orjson.dumps({"type": "WorkerLost", "message": message})
            self._finish(child.assignment, Outcome(TaskStatus.FAILED, error))
        else:
            logger.error("idle worker process died exit_code=%s", exit_code)

        if not self._stopping:
            self._children.append(self._spawn_child())
            self._feed_backlog()

    def _feed_backlog(self) -> None:
        while self._backlog:
            idle = next(
                (child for child in self._children if child.assignment is None), None
            )
            if idle is None:
                return
            self._start(idle, self._backlog.popleft())

    # Shutdown --------------------------------------------------------------

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        # Only record the request: the main loop does the work.
        self._stopping = True

    def _shutdown(self) -> None:
        """Leave the broker, let running tasks finish within the grace period, stop."""
        logger.info("worker pool stopping identity=%s", self._identity)
        self._send(Message(Header(Command.DISCONNECT)))
        deadline = time.monotonic() + self._settings.shutdown_grace_s
        while (
            any(child.assignment for child in self._children)
            and time.monotonic() < deadline
        ):
            for child in list(self._children):
                if child.assignment is not None and child.conn.poll(0.05):
                    self._drain_child(child)

        for child in self._children:
            if child.assignment is not None:
                # Known limit: this task stays `running` in Redis until recovery
                # from Redis exists.
                logger.warning(
                    "task cut off by shutdown task_id=%s",
                    child.assignment.header.task_id,
                )
            child.conn.close()
            child.process.terminate()
        for child in self._children:
            child.process.join(timeout=5)
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
        self._socket.close(linger=0)
        logger.info("worker pool stopped identity=%s", self._identity)


def main() -> None:
    """``python -m worker``: run a pool with the environment's settings."""
    from conf.logging import configure_logging
    from conf.settings import load

    settings = load()
    configure_logging(settings.log_level)
    client = connect(
        settings.redis_url, pool_size=4, timeout_s=settings.redis_timeout_s
    )
    WorkerPool(settings, TaskStore(client, settings.result_ttl_s)).run()
