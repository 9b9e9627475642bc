"""The broker: hands each task to one idle worker and routes the reply back.

Two ROUTER sockets: the frontend for web processes, the backend for worker pools.
Per task name the broker keeps the pools with free slots in least-recently-used
order and one bounded queue of waiting tasks. A pool announces its names and free
slots (``ready``), and each ``reply`` frees a slot. A pool that stays silent for
``heartbeat_interval_s * heartbeat_liveness`` is forgotten.

The broker holds no task state that is not also in Redis: a task's record is
written before the web process sends it here.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from types import FrameType

import orjson
import zmq

from conf.settings import Settings
from worker import protocol
from worker.errors import ProtocolError
from worker.protocol import Command, Header, Message

logger = logging.getLogger(__name__)

# Messages handled per socket per turn, so one busy side cannot starve the other.
BATCH = 512


@dataclass(slots=True)
class PendingTask:
    """A task waiting in the broker for a worker."""

    header: Header
    reply_to: bytes
    payload: bytes


@dataclass(slots=True)
class WorkerState:
    """What the broker knows of one worker pool."""

    identity: bytes
    tasks: frozenset[str]
    capacity: int
    free: int
    expires_at: float
    in_flight: dict[str, PendingTask] = field(default_factory=dict)


class Broker:
    """Load-balancing ROUTER/ROUTER broker; call :meth:`run` or :meth:`poll_once`."""

    def __init__(
        self, settings: Settings, context: zmq.Context[zmq.Socket[bytes]] | None = None
    ) -> None:
        self._settings = settings
        self._context = context or zmq.Context.instance()
        self._workers: dict[bytes, WorkerState] = {}
        self._idle: dict[str, OrderedDict[bytes, None]] = {}
        self._queues: dict[str, deque[PendingTask]] = {}
        self._waiting = 0
        self._waiting_bytes = 0
        self._stopping = False
        self._next_expiry_check = 0.0
        self.frontend = self._bind(settings.broker_frontend)
        self.backend = self._bind(settings.broker_backend)
        self._poller = zmq.Poller()
        self._poller.register(self.backend, zmq.POLLIN)
        self._poller.register(self.frontend, zmq.POLLIN)

    def _bind(self, address: str) -> zmq.Socket[bytes]:
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # Fail loudly (EHOSTUNREACH) instead of silently dropping a message for a
        # peer that is gone, so a task is never handed to a vanished worker.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.bind(address)
        return sock

    @property
    def waiting(self) -> int:
        """Tasks queued in the broker across all names."""
        return self._waiting

    def run(self) -> None:
        """Route until SIGTERM or SIGINT."""
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        logger.info(
            "broker started frontend=%s backend=%s",
            self._settings.broker_frontend,
            self._settings.broker_backend,
        )
        while not self._stopping:
            self.poll_once(timeout_ms=self._settings.heartbeat_interval_s * 1000)
        self.close()
        logger.info("broker stopped waiting=%d", self._waiting)

    def close(self) -> None:
        """Close both sockets at once; queued tasks stay `queued` in Redis."""
        self.frontend.close(linger=0)
        self.backend.close(linger=0)

    def poll_once(self, timeout_ms: float) -> None:
        """Wait up to ``timeout_ms`` for messages and handle one batch from each side."""
        ready = dict(self._poller.poll(int(timeout_ms)))
        # Workers first: their replies free the slots that waiting tasks need.
        if self.backend in ready:
            self._drain(self.backend, self._handle_worker)
        if self.frontend in ready:
            self._drain(self.frontend, self._handle_client)

        now = time.monotonic()
        if now >= self._next_expiry_check:
            self._expire_workers(now)
            self._next_expiry_check = now + self._settings.heartbeat_interval_s

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _drain(self, sock: zmq.Socket[bytes], handle: object) -> None:
        for _ in range(BATCH):
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:
                logger.warning("dropped message without identity frame")
                continue
            try:
                message = protocol.decode(frames[1:])
            except ProtocolError as exc:
                logger.warning("dropped malformed message from %r: %s", frames[0], exc)
                continue
            handle(frames[0], message)  # type: ignore[operator]

    # Web processes ---------------------------------------------------------

    def _handle_client(self, client: bytes, message: Message) -> None:
        header = message.header
        if header.command is not Command.SUBMIT:
            logger.warning("unexpected command from web process: %s", header.command)
            return

        size = len(message.payload)
        if (
            self._waiting >= self._settings.queue_limit
            or self._waiting_bytes + size > self._settings.queue_max_bytes
        ):
            logger.warning(
                "queue full, rejected task_id=%s waiting=%d",
                header.task_id,
                self._waiting,
            )
            self._send_client(
                client,
                Header(
                    Command.REJECTED,
                    header.task_id,
                    header.name,
                    header.attempt,
                    header.request_id,
                    "queue_full",
                ),
            )
            return

        self._send_client(
            client,
            Header(
                Command.ACCEPTED,
                header.task_id,
                header.name,
                header.attempt,
                header.request_id,
            ),
        )
        self._queues.setdefault(header.name, deque()).append(
            PendingTask(header, client, message.payload)
        )
        self._waiting += 1
        self._waiting_bytes += size
        self._dispatch(header.name)

    def _send_client(self, client: bytes, header: Header, payload: bytes = b"") -> None:
        try:
            self.frontend.send_multipart(
                [client, *protocol.encode(Message(header, payload=payload))],
                flags=zmq.NOBLOCK,
            )
        except zmq.ZMQError as exc:
            # The web process is gone or not reading; its request falls back to
            # polling Redis.
            logger.debug("cannot reach web process %r: %s", client, exc)

    # Worker pools ----------------------------------------------------------

    def _handle_worker(self, identity: bytes, message: Message) -> None:
        command = message.header.command
        worker = self._workers.get(identity)
        if command is Command.READY:
            self._register(identity, message.payload)
            return
        if command is Command.REPLY:
            self._complete(identity, worker, message)
            return
        if worker is None:
            # A pool we forgot (or never met, after a broker restart).
            self._send_worker(identity, Message(Header(Command.DISCONNECT)))
            return
        if command is Command.HEARTBEAT:
            worker.expires_at = time.monotonic() + self._settings.worker_liveness_s
        elif command is Command.DISCONNECT:
            logger.info(
                "worker left identity=%r in_flight=%d", identity, len(worker.in_flight)
            )
            self._forget(worker)
        else:
            logger.warning("unexpected command from worker %r: %s", identity, command)

    def _register(self, identity: bytes, payload: bytes) -> None:
        try:
            announcement = orjson.loads(payload)
            tasks = frozenset(str(name) for name in announcement["tasks"])
            capacity = int(announcement["capacity"])
            free = int(announcement["free"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            logger.warning("dropped malformed ready from %r: %s", identity, exc)
            return

        previous = self._workers.pop(identity, None)
        if previous is not None:
            self._remove_from_idle(previous)
        worker = WorkerState(
            identity,
            tasks,
            capacity,
            free,
            time.monotonic() + self._settings.worker_liveness_s,
        )
        if previous is not None:
            worker.in_flight = previous.in_flight
        self._workers[identity] = worker
        logger.info(
            "worker ready identity=%r capacity=%d free=%d tasks=%s",
            identity,
            capacity,
            free,
            ",".join(sorted(tasks)),
        )
        for name in tasks:
            if worker.free > 0:
                self._idle.setdefault(name, OrderedDict())[identity] = None
            self._dispatch(name)

    def _complete(
        self, identity: bytes, worker: WorkerState | None, message: Message
    ) -> None:
        header = message.header
        if header.request_id:
            self._send_client(message.reply_to, header, message.payload)
        if worker is None:
            self._send_worker(identity, Message(Header(Command.DISCONNECT)))
            return

        worker.expires_at = time.monotonic() + self._settings.worker_liveness_s
        if worker.in_flight.pop(header.task_id, None) is None:
            return
        worker.free += 1
        for name in worker.tasks:
            idle = self._idle.setdefault(name, OrderedDict())
            if identity not in idle:
                idle[identity] = None
            self._dispatch(name)

    def _dispatch(self, name: str) -> None:
        """Hand waiting tasks of ``name`` to idle workers, least recently used first."""
        queue = self._queues.get(name)
        idle = self._idle.get(name)
        while queue and idle:
            identity = next(iter(idle))
            worker = self._workers[identity]
            task = queue.popleft()
            self._waiting -= 1
            self._waiting_bytes -= len(task.payload)

            message = Message(task.header, task.reply_to, task.payload)
            if not self._send_worker(identity, message):
                # The worker vanished: keep the task at the head of the line.
                queue.appendleft(task)
                self._waiting += 1
                self._waiting_bytes += len(task.payload)
                self._forget(worker)
                continue

            worker.in_flight[task.header.task_id] = task
            worker.free -= 1
            if worker.free > 0:
                idle.move_to_end(identity)
            else:
                self._remove_from_idle(worker)

    def _send_worker(self, identity: bytes, message: Message) -> bool:
        try:
            self.backend.send_multipart(
                [identity, *protocol.encode(message)], flags=zmq.NOBLOCK
            )
        except zmq.ZMQError as exc:
            logger.warning("cannot reach worker %r: %s", identity, exc)
            return False
        return True

    def _expire_workers(self, now: float) -> None:
        for worker in [w for w in self._workers.values() if w.expires_at < now]:
            logger.warning(
                "worker missed heartbeats, forgotten identity=%r in_flight=%d",
                worker.identity,
                len(worker.in_flight),
            )
            self._forget(worker)

    def _forget(self, worker: WorkerState) -> None:
        # Known limit: tasks in flight on a forgotten worker are not dispatched
        # again yet; their records stay `running` in Redis.
        self._remove_from_idle(worker)
        self._workers.pop(worker.identity, None)

    def _remove_from_idle(self, worker: WorkerState) -> None:
        for name in worker.tasks:
            idle = self._idle.get(name)
            if idle is not None:
                idle.pop(worker.identity, None)


def main() -> None:
    """``python -m worker.broker``: run the broker with the environment's settings."""
    from conf.logging import configure_logging
    from conf.settings import load

    settings = load()
    configure_logging(settings.log_level)
    try:
        broker = Broker(settings)
    except zmq.ZMQError as exc:
        sys.exit(f"taskgate: the broker cannot listen: {exc}")
    broker.run()


if __name__ == "__main__":
    # Run through the imported module, so its logger is named "worker.broker"
    # rather than "__main__".
    from worker.broker import main as run_broker

    run_broker()
