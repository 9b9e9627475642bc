"""Load for a broker alone: one submitting client and echo worker peers over ZeroMQ.

The client is a DEALER on the broker's frontend that keeps a bounded window of
tasks outstanding (``submit`` messages as web processes send them); the workers
are DEALERs on the backend that announce ``ready`` and answer each ``submit`` at
once with a ``reply`` carrying the task's request id, as worker pools do. All of
it runs in one thread of the harness process, on the other core than the broker.

The peers' own per-message work is kept small (reply headers are built by
slicing the submit header's bytes) so that the broker, not the load, is what
saturates first; compare the broker's CPU use, which the row reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import zmq

from worker import protocol
from worker.protocol import Command, Header, Message

# A broker forgets a worker after 3 missed heartbeats of 1 s (the defaults).
HEARTBEAT_S = 1.0
DRAIN_LIMIT_S = 5.0
PAYLOAD = b'{"n":1}'
RECORD = b'{"id":"x","name":"echo","status":"succeeded","result":{"n":1}}'

_SUBMIT_PREFIX = b'[%d,"submit"' % protocol.VERSION
_REPLY_PREFIX = b'[%d,"reply"' % protocol.VERSION
_REJECTED_PREFIX = b'[%d,"rejected"' % protocol.VERSION
# The end of a submit header the load sends: empty detail, no time limit.
_SUBMIT_SUFFIX = b'"",0.0]'


class LoadError(RuntimeError):
    """The broker did not route a first task: nothing to measure."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Tasks that made the full round trip within the timed window."""

    tasks: int
    rejected: int
    elapsed_s: float
    # CPU seconds the load thread itself used in the window: near ``elapsed_s``
    # means the load, not the broker, set the pace.
    load_cpu_s: float


def drive(
    frontend: str,
    backend: str,
    duration_s: float,
    window: int,
    workers: int,
    capacity: int,
) -> LoadResult:
    """Keep ``window`` tasks in flight through the broker for ``duration_s``."""
    context = zmq.Context()
    try:
        return _Load(context, frontend, backend, window, workers, capacity).run(
            duration_s
        )
    finally:
        context.destroy(linger=0)


def reply_header(submit_header: bytes) -> bytes:
    """The ``reply`` header for a ``submit`` header, by slicing its encoded bytes.

    ``[2,"submit",id,name,attempt,request_id,"",0.0]`` becomes
    ``[2,"reply",id,name,attempt,request_id,"succeeded",0.0]``.
    """
    middle = submit_header[len(_SUBMIT_PREFIX) : -len(_SUBMIT_SUFFIX)]
    return _REPLY_PREFIX + middle + b'"succeeded",0.0]'


class _Load:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        frontend: str,
        backend: str,
        window: int,
        workers: int,
        capacity: int,
    ) -> None:
        self._window = window
        self._client = self._dealer(context, b"bench-client", frontend)
        self._workers = [
            self._dealer(context, f"bench-worker-{i}".encode(), backend)
            for i in range(workers)
        ]
        announcement = orjson.dumps(
            {"capacity": capacity, "free": capacity, "tasks": ["echo"]}
        )
        for worker in self._workers:
            worker.send_multipart(
                protocol.encode(Message(Header(Command.READY), payload=announcement))
            )
        self._heartbeat = protocol.encode(Message(Header(Command.HEARTBEAT)))
        self._poller = zmq.Poller()
        for sock in (self._client, *self._workers):
            self._poller.register(sock, zmq.POLLIN)
        self._sequence = 0
        self._outstanding = 0
        self._completed = 0
        self._rejected = 0

    @staticmethod
    def _dealer(
        context: zmq.Context[zmq.Socket[bytes]], identity: bytes, address: str
    ) -> zmq.Socket[bytes]:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, identity)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        return sock

    def run(self, duration_s: float) -> LoadResult:
        # One task first: proves the routing works before the clock starts.
        self._submit()
        self._pump_until(lambda: self._completed > 0, time.monotonic() + 10.0)
        if self._completed == 0:
            raise LoadError("the broker routed no task within 10 s")

        self._completed = 0
        start = time.monotonic()
        start_cpu = time.thread_time()
        end = start + duration_s
        self._pump_until(lambda: False, end, keep_full=True)
        elapsed_s = time.monotonic() - start
        load_cpu_s = time.thread_time() - start_cpu
        counted = self._completed
        # Let the window drain so the broker is idle for the next run.
        self._pump_until(
            lambda: self._outstanding == 0, time.monotonic() + DRAIN_LIMIT_S
        )
        return LoadResult(counted, self._rejected, elapsed_s, load_cpu_s)

    def _pump_until(
        self, done: Callable[[], bool], deadline: float, keep_full: bool = False
    ) -> None:
        """Move messages until ``done()`` or ``deadline``, heartbeating meanwhile."""
        next_beat = time.monotonic() + HEARTBEAT_S
        while not done() and time.monotonic() < deadline:
            while keep_full and self._outstanding < self._window:
                self._submit()
            for sock, _ in self._poller.poll(100):
                if sock is self._client:
                    self._read_client()
                else:
                    self._answer(sock)
            if time.monotonic() >= next_beat:
                for worker in self._workers:
                    worker.send_multipart(self._heartbeat)
                next_beat += HEARTBEAT_S

    def _submit(self) -> None:
        self._sequence += 1
        header = Header(
            Command.SUBMIT, f"{self._sequence:032x}", "echo", 1, str(self._sequence)
        )
        self._client.send_multipart(protocol.encode(Message(header, payload=PAYLOAD)))
        self._outstanding += 1

    def _read_client(self) -> None:
        while True:
            try:
                header = self._client.recv_multipart(zmq.NOBLOCK)[0]
            except zmq.Again:
                return
            if header.startswith(_REPLY_PREFIX):
                self._outstanding -= 1
                self._completed += 1
            elif header.startswith(_REJECTED_PREFIX):
                self._outstanding -= 1
                self._rejected += 1

    def _answer(self, worker: zmq.Socket[bytes]) -> None:
        while True:
            try:
                header, reply_to, _ = worker.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if header.startswith(_SUBMIT_PREFIX):
                worker.send_multipart([reply_header(header), reply_to, RECORD])
