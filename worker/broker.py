"""The broker: hands each task to one idle worker and routes the reply back.

Two ROUTER sockets: the frontend for web processes, the backend for worker pools.
Per task name the broker keeps the pools with free slots in least-recently-used
order and one bounded queue of waiting tasks. A pool announces its names, its free
slots and the tasks it runs (``ready``); each ``reply`` frees a slot. A pool that
stays silent for ``heartbeat_interval_s * heartbeat_liveness`` is forgotten and its
tasks are given back in Redis and queued again (see :mod:`worker.recovery`).

The broker holds no task state that is not also in Redis: a task's record is
written before the web process sends it here, so a restarted broker rebuilds its
queues from Redis.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType

import orjson
import zmq

from conf.settings import Settings
from worker import curve, protocol
from worker.broker_metrics import BrokerCounts
from worker.curve import CurveConfigError
from worker.errors import ProtocolError
from worker.gatekeeper import Gatekeeper
from worker.protocol import Command, Header, Message
from worker.recovery import Recovery
from worker.store import TaskStatus, TaskStore, connect_redis

logger = logging.getLogger(__name__)

# Messages handled per socket per turn, so one busy side cannot starve the other.
BATCH = 512
BROKER_REDIS_TIMEOUT_S = 0.5
FINAL_STATUSES = frozenset(status.value for status in TaskStatus if status.is_final)


@dataclass(slots=True)
class PendingTask:
    """A task the broker holds: waiting in a queue, or in flight on a worker."""

    header: Header
    reply_to: bytes
    payload: bytes
    # The header frame as the web process sent it, forwarded to the worker as
    # is; empty once the header changed (then it is encoded again).
    frame: bytes = b""


@dataclass(slots=True)
class WorkerState:
    """What the broker knows of one worker pool."""

    identity: bytes
    tasks: frozenset[str]
    capacity: int
    free: int
    expires_at: float
    draining: bool = False
    in_flight: dict[str, PendingTask] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BrokerStats:
    """Sizes of the broker's state at one moment."""

    waiting_tasks: int
    waiting_bytes: int
    running_tasks: int
    live_pools: int
    free_slots: int


@dataclass(frozen=True, slots=True)
class NameStats:
    """Waiting tasks and idle capacity for one task name."""

    waiting: int
    idle_pools: int
    idle_slots: int


class Broker:
    """Load-balancing ROUTER/ROUTER broker; call :meth:`run` or :meth:`poll_once`."""

    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self._settings = settings
        self._context = context or zmq.Context.instance()
        self._workers: dict[bytes, WorkerState] = {}
        self._idle: dict[str, OrderedDict[bytes, None]] = {}
        self._queues: dict[str, deque[PendingTask]] = {}
        self._queued: dict[str, PendingTask] = {}
        self._owner_of: dict[str, bytes] = {}
        self._waiting_bytes = 0
        self._stopping = False
        self._next_expiry_check = 0.0
        self.counts = BrokerCounts()
        self.frontend_address = bind_address(
            settings.broker_bind_frontend, settings.broker_frontends
        )
        self.backend_address = bind_address(
            settings.broker_bind_backend, settings.broker_backends
        )
        self._curve = curve.server_keys(settings)
        self._gatekeeper: Gatekeeper | None = None
        if self._curve is not None:
            # Answers ZAP before the sockets bind: a CURVE handshake that no
            # handler answers would be refused (ZAP_ENFORCE_DOMAIN).
            self._gatekeeper = Gatekeeper(self._context, self._curve)
            self._gatekeeper.start()
        try:
            self.frontend = self._bind(self.frontend_address)
            self.backend = self._bind(self.backend_address)
        except zmq.ZMQError:
            if self._gatekeeper is not None:
                self._gatekeeper.stop()
            raise
        if self._gatekeeper is not None:
            self._gatekeeper.watch(
                {
                    self.frontend_address: self.frontend,
                    self.backend_address: self.backend,
                }
            )
        self._poller = zmq.Poller()
        self._poller.register(self.backend, zmq.POLLIN)
        self._poller.register(self.frontend, zmq.POLLIN)
        self.recovery = Recovery(self, store, settings)

    def _bind(self, address: str) -> zmq.Socket[bytes]:
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # Fail loudly (EHOSTUNREACH) instead of silently dropping a message for a
        # peer that is gone, so a task is never handed to a vanished worker.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        curve.secure_server(sock, self._curve)
        try:
            sock.bind(address)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        return sock

    @property
    def waiting(self) -> int:
        """Tasks queued in the broker across all names."""
        return len(self._queued)

    def stats(self) -> BrokerStats:
        """A snapshot of the queues and pools, for metrics."""
        workers = list(self._workers.values())
        return BrokerStats(
            waiting_tasks=len(self._queued),
            waiting_bytes=self._waiting_bytes,
            running_tasks=len(self._owner_of),
            live_pools=len(workers),
            free_slots=sum(worker.free for worker in workers),
        )

    def stats_by_name(self) -> dict[str, NameStats]:
        """Per task name: tasks waiting, and pools and slots free to take one."""
        workers = self._workers
        names = {name for worker in list(workers.values()) for name in worker.tasks}
        names.update(self._queues)
        stats = {}
        for name in names:
            queue = self._queues.get(name)
            idle = list(self._idle.get(name, ()))
            free = [workers[i].free for i in idle if i in workers]
            stats[name] = NameStats(len(queue or ()), len(free), sum(free))
        return stats

    def knows(self, task_id: str) -> bool:
        """True if the task waits in a queue here or runs on a live worker."""
        return task_id in self._queued or task_id in self._owner_of

    def is_live(self, owner: str) -> bool:
        """True if ``owner`` (a pool identity) is a worker the broker hears from."""
        return owner.encode() in self._workers

    @property
    def stopping(self) -> bool:
        """True once SIGTERM or SIGINT asked the broker to stop."""
        return self._stopping

    def run(self, keep_running: Callable[[], bool] | None = None) -> None:
        """Route until SIGTERM or SIGINT, or until ``keep_running`` says no."""
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        logger.info(
            "broker started frontend=%s backend=%s curve=%s",
            self.frontend_address,
            self.backend_address,
            "on" if self._curve else "off",
        )
        while not self._stopping:
            if keep_running is not None and not keep_running():
                break
            self.poll_once(timeout_ms=100)
        self.close()
        logger.info("broker stopped waiting=%d", self.waiting)

    def close(self) -> None:
        """Close both sockets at once; queued tasks stay `queued` in Redis."""
        if self._gatekeeper is not None:
            self._gatekeeper.stop()
        self.frontend.close(linger=0)
        self.backend.close(linger=0)

    def poll_once(self, timeout_ms: int) -> None:
        """Wait up to ``timeout_ms`` for messages, handle a batch from each side."""
        ready = dict(self._poller.poll(timeout_ms))
        # Workers first: their replies free the slots that waiting tasks need.
        if self.backend in ready:
            self._drain(self.backend, self._handle_worker)
        if self.frontend in ready:
            self._drain(self.frontend, self._handle_client)

        now = time.monotonic()
        if now >= self._next_expiry_check:
            self._expire_workers(now)
            self._next_expiry_check = now + self._settings.heartbeat_interval_s
        self.recovery.step(now)

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _drain(
        self,
        sock: zmq.Socket[bytes],
        handle: Callable[[bytes, Message, bytes], None],
    ) -> None:
        """Handle up to BATCH messages: sender, decoded message, raw header frame."""
        side = "worker" if sock is self.backend else "web"
        for _ in range(BATCH):
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:
                logger.warning("dropped message without identity frame")
                self.counts.message_errors[side, "malformed"] += 1
                continue
            try:
                message = protocol.decode(frames[1:])
            except ProtocolError as exc:
                logger.warning("dropped malformed message from %r: %s", frames[0], exc)
                self.counts.message_errors[side, "malformed"] += 1
                continue
            handle(frames[0], message, frames[1])

    # Web processes -----------------------------------------------------------

    def _handle_client(self, client: bytes, message: Message, frame: bytes) -> None:
        header = message.header
        if header.command is Command.SUBMIT:
            self._submit(client, message, frame)
        elif header.command is Command.CANCEL:
            self._cancel(header)
        elif header.command is Command.PING:
            self.send_client(client, Header(Command.PONG, request_id=header.request_id))
        else:
            logger.warning("unexpected command from web process: %s", header.command)

    def _submit(self, client: bytes, message: Message, frame: bytes) -> None:
        header = message.header
        queued = self._queued.get(header.task_id)
        if queued is not None:
            # Recovery queued it first; let the reply find this request.
            queued.header = replace(queued.header, request_id=header.request_id)
            queued.frame = b""
            queued.reply_to = client
            self._accept(client, header, 0)
            return
        if header.task_id in self._owner_of:
            self._accept(client, header, 0)
            return

        if (
            self.waiting >= self._settings.queue_limit
            or self._waiting_bytes + len(message.payload)
            > self._settings.queue_max_bytes
        ):
            logger.warning(
                "queue full, rejected task_id=%s waiting=%d",
                header.task_id,
                self.waiting,
            )
            rejected = Header(
                Command.REJECTED,
                header.task_id,
                header.name,
                header.attempt,
                header.request_id,
                "queue_full",
            )
            self.send_client(client, rejected)
            self.counts.rejected[header.name, "queue_full"] += 1
            return

        self.counts.accepted[header.name,] += 1
        self.enqueue(PendingTask(header, client, message.payload, frame))
        # The acceptance says how many tasks of its name wait before it, for
        # the Retry-After of a 202; 0 when it went to a worker at once.
        queued_now = header.task_id in self._queued
        self._accept(
            client, header, len(self._queues[header.name]) - 1 if queued_now else 0
        )

    def _accept(self, client: bytes, header: Header, ahead: int) -> None:
        accepted = Header(
            Command.ACCEPTED,
            header.task_id,
            header.name,
            header.attempt,
            header.request_id,
            str(ahead),
        )
        self.send_client(client, accepted)

    def _cancel(self, header: Header) -> None:
        queued = self._queued.pop(header.task_id, None)
        if queued is not None:
            self._queues[queued.header.name].remove(queued)
            self._waiting_bytes -= len(queued.payload)
            return
        owner = self._owner_of.get(header.task_id) or header.detail.encode()
        if owner in self._workers:
            self._send_worker(owner, Message(Header(Command.CANCEL, header.task_id)))

    def send_client(self, client: bytes, header: Header, payload: bytes = b"") -> None:
        """Send to a web process; a gone one is no error (its client polls Redis)."""
        self._send_frames(
            self.frontend, [client, protocol.encode_header(header), b"", payload]
        )

    def _send_frames(self, sock: zmq.Socket[bytes], frames: list[bytes]) -> bool:
        """Send without blocking; False if the peer is gone or its pipe is full."""
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if sock is self.backend:
                logger.warning("cannot reach worker %r: %s", frames[0], exc)
                self.counts.message_errors["worker", "undeliverable"] += 1
            else:
                # A gone web process is no error: its client reads Redis.
                logger.debug("cannot reach web process %r: %s", frames[0], exc)
                self.counts.message_errors["web", "undeliverable"] += 1
            return False
        return True

    # Queues ------------------------------------------------------------------

    def enqueue(self, task: PendingTask, front: bool = False) -> None:
        """Queue a task for its name and hand out what can be handed out."""
        queue = self._queues.setdefault(task.header.name, deque())
        if front:
            queue.appendleft(task)
        else:
            queue.append(task)
        self._queued[task.header.task_id] = task
        self._waiting_bytes += len(task.payload)
        self._dispatch(task.header.name)

    def _dispatch(self, name: str) -> None:
        """Hand waiting tasks of ``name`` to idle workers, least recently used first."""
        queue = self._queues.get(name)
        idle = self._idle.get(name)
        while queue and idle:
            identity = next(iter(idle))
            worker = self._workers[identity]
            task = queue.popleft()
            del self._queued[task.header.task_id]
            self._waiting_bytes -= len(task.payload)

            frame = task.frame or protocol.encode_header(
                replace(task.header, command=Command.SUBMIT)
            )
            if not self._send_frames(
                self.backend, [identity, frame, task.reply_to, task.payload]
            ):
                # The worker vanished: keep the task at the head of the line.
                queue.appendleft(task)
                self._queued[task.header.task_id] = task
                self._waiting_bytes += len(task.payload)
                self._forget(worker, "unreachable")
                continue

            worker.in_flight[task.header.task_id] = task
            self._owner_of[task.header.task_id] = identity
            worker.free -= 1
            if worker.free > 0:
                idle.move_to_end(identity)
            else:
                self._remove_from_idle(worker)

    # Worker pools ------------------------------------------------------------

    def _handle_worker(self, identity: bytes, message: Message, frame: bytes) -> None:
        command = message.header.command
        worker = self._workers.get(identity)
        if command is Command.READY:
            self._register(identity, message.payload)
            return
        if command is Command.REPLY:
            self._complete(identity, worker, message, frame)
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
            self._forget(worker, "left")
        else:
            logger.warning("unexpected command from worker %r: %s", identity, command)

    def _register(self, identity: bytes, payload: bytes) -> None:
        try:
            announcement = orjson.loads(payload)
            tasks = frozenset(str(name) for name in announcement["tasks"])
            capacity = int(announcement["capacity"])
            free = int(announcement["free"])
            draining = bool(announcement.get("draining", False))
            running = [
                (str(t), str(n), int(a)) for t, n, a in announcement.get("running", [])
            ]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            logger.warning("dropped malformed ready from %r: %s", identity, exc)
            return

        previous = self._workers.pop(identity, None)
        worker = WorkerState(
            identity,
            tasks,
            capacity,
            free,
            time.monotonic() + self._settings.worker_liveness_s,
            draining,
        )
        self._workers[identity] = worker
        if previous is not None:
            self._remove_from_idle(previous)
        self._adopt_running(worker, previous, running)

        if previous is None or previous.draining != draining:
            logger.info(
                "worker ready identity=%r capacity=%d free=%d draining=%s tasks=%s",
                identity,
                capacity,
                free,
                draining,
                ",".join(sorted(tasks)),
            )
        if not draining and worker.free > 0:
            for name in tasks:
                self._idle.setdefault(name, OrderedDict())[identity] = None
        for name in tasks:
            self._dispatch(name)

    def _adopt_running(
        self,
        worker: WorkerState,
        previous: WorkerState | None,
        running: list[tuple[str, str, int]],
    ) -> None:
        """Take the pool's word for what it runs; queue again what it lost on the way."""
        known = previous.in_flight if previous is not None else {}
        for task_id, name, attempt in running:
            task = known.pop(task_id, None) or PendingTask(
                Header(Command.SUBMIT, task_id, name, attempt), b"", b""
            )
            worker.in_flight[task_id] = task
            self._owner_of[task_id] = worker.identity
        for task_id, task in known.items():
            # Sent to the pool but not in its list: lost in transit. The attempt
            # number is unchanged, so a start that did happen is not repeated.
            self._owner_of.pop(task_id, None)
            self.enqueue(task, front=True)

    def _complete(
        self,
        identity: bytes,
        worker: WorkerState | None,
        message: Message,
        frame: bytes,
    ) -> None:
        header = message.header
        task = worker.in_flight.pop(header.task_id, None) if worker else None
        if task is not None:
            self._owner_of.pop(header.task_id, None)

        if header.detail == "requeued":
            self.recovery.requeue(task, header)
        elif header.request_id and header.detail in FINAL_STATUSES:
            # The reply goes to the web process as the pool sent it.
            self._send_frames(
                self.frontend, [message.reply_to, frame, b"", message.payload]
            )

        if worker is None:
            self._send_worker(identity, Message(Header(Command.DISCONNECT)))
            return
        worker.expires_at = time.monotonic() + self._settings.worker_liveness_s
        if task is None:
            return
        worker.free += 1
        if worker.draining:
            return
        if worker.free == 1:
            # It was full, so in no idle list: it is again, for each name.
            for name in worker.tasks:
                self._idle.setdefault(name, OrderedDict())[identity] = None
        for name in worker.tasks:
            if self._queues.get(name):
                self._dispatch(name)

    def _send_worker(self, identity: bytes, message: Message) -> bool:
        return self._send_frames(self.backend, [identity, *protocol.encode(message)])

    def _expire_workers(self, now: float) -> None:
        for worker in [w for w in self._workers.values() if w.expires_at < now]:
            logger.warning(
                "worker missed heartbeats, forgotten identity=%r in_flight=%d",
                worker.identity,
                len(worker.in_flight),
            )
            self._forget(worker, "missed_heartbeats")

    def _forget(self, worker: WorkerState, reason: str) -> None:
        """Drop a pool and give back, in Redis, every task it was running."""
        self.counts.pools_forgotten[reason,] += 1
        self._remove_from_idle(worker)
        self._workers.pop(worker.identity, None)
        lost = list(worker.in_flight.values())
        worker.in_flight.clear()
        for task in lost:
            self._owner_of.pop(task.header.task_id, None)
            self.recovery.reclaim(task, worker.identity.decode())

    def _remove_from_idle(self, worker: WorkerState) -> None:
        for name in worker.tasks:
            idle = self._idle.get(name)
            if idle is not None:
                idle.pop(worker.identity, None)


def bind_address(bind: str, listed: list[str]) -> str:
    """The address this broker binds: the explicit one, or the only one listed."""
    if bind:
        return bind
    if len(listed) != 1:
        raise ValueError(
            "several broker addresses are listed: set TASKGATE_BROKER_BIND_FRONTEND "
            "and TASKGATE_BROKER_BIND_BACKEND to this broker's own"
        )
    return listed[0]


def main() -> None:
    """``python -m worker.broker``: run the broker with the environment's settings."""
    from conf.logging import configure_logging
    from conf.settings import load
    from worker.broker_metrics import serve_broker_metrics

    settings = load()
    configure_logging(settings.log_level, settings.log_format)
    # Recovery's Redis calls run in the routing loop: a short timeout bounds how
    # long an unreachable Redis can hold routing up (once per recovery interval).
    timeout_s = min(settings.redis_timeout_s, BROKER_REDIS_TIMEOUT_S)
    standby = len(settings.broker_frontends) > 1
    if standby:
        # The lease is renewed in the same loop: a call must fail well within
        # the lease's last third (see worker.lease).
        timeout_s = min(timeout_s, settings.broker_lease_s / 10)
    client = connect_redis(settings, pool_size=4, timeout_s=timeout_s)
    store = TaskStore(client, settings.result_ttl_s)
    try:
        # Checked now, not at the first takeover: a standby with unusable keys
        # would otherwise stand by happily and die at the moment it is needed.
        curve.server_keys(settings)
    except CurveConfigError as exc:
        sys.exit(f"taskgate: {exc}")
    metrics = None
    if settings.broker_metrics_port:
        # Served before binding: a standby reports active=0 until it routes.
        try:
            metrics = serve_broker_metrics(
                None, settings.host, settings.broker_metrics_port
            )
        except OSError as exc:
            sys.exit(f"taskgate: the broker cannot serve metrics: {exc}")
    if standby:
        # Several brokers listed: this one is active only while it holds the lease.
        from worker.standby import run_standby

        sys.exit(run_standby(settings, store, metrics))
    try:
        broker = Broker(settings, store)
    except zmq.ZMQError as exc:
        sys.exit(f"taskgate: the broker cannot listen: {exc}")
    except (CurveConfigError, ValueError) as exc:
        sys.exit(f"taskgate: {exc}")
    if metrics is not None:
        metrics.broker = broker
    broker.run()


if __name__ == "__main__":
    # Run through the imported module, so its logger is named "worker.broker"
    # rather than "__main__".
    from worker.broker import main as run_broker

    run_broker()
