"""The limit for the broker row: a minimal load-balancing ROUTER/ROUTER loop.

It speaks taskgate's wire format (:mod:`worker.protocol`) and sends exactly the
messages taskgate's broker sends for a task (``accepted`` to the web side, the
``submit`` to a worker with ``reply_to`` filled in, the ``reply`` back), but keeps
no more than it must: one queue, one list of free worker slots, no per-name
pools, no byte bounds, no heartbeat expiry, no logging. The gap between the two is
what those features and the broker's Python structure cost.

``python -m bench.router --frontend ADDR --backend ADDR`` runs it until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
from collections import deque
from types import FrameType

import orjson
import zmq

from worker.protocol import VERSION

_stopping = False


def route(frontend_address: str, backend_address: str) -> None:
    """Route tasks from the frontend to free worker slots until SIGTERM."""
    context = zmq.Context()
    frontend = _bind(context, frontend_address)
    backend = _bind(context, backend_address)
    poller = zmq.Poller()
    poller.register(frontend, zmq.POLLIN)
    poller.register(backend, zmq.POLLIN)
    # One entry per free slot, least recently used first.
    slots: deque[bytes] = deque()
    waiting: deque[tuple[bytes, bytes, bytes]] = deque()

    while not _stopping:
        ready = dict(poller.poll(200))
        if backend in ready:
            _drain_backend(backend, frontend, slots)
        if frontend in ready:
            _drain_frontend(frontend, waiting)
        while waiting and slots:
            client, header, payload = waiting.popleft()
            backend.send_multipart([slots.popleft(), header, client, payload])

    frontend.close(linger=0)
    backend.close(linger=0)
    context.term()


def _bind(context: zmq.Context[zmq.Socket[bytes]], address: str) -> zmq.Socket[bytes]:
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.bind(address)
    return sock


def _drain_backend(
    backend: zmq.Socket[bytes], frontend: zmq.Socket[bytes], slots: deque[bytes]
) -> None:
    while True:
        try:
            identity, header, reply_to, payload = backend.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        fields = orjson.loads(header)
        command = fields[1]
        if command == "reply":
            if fields[5]:
                frontend.send_multipart([reply_to, header, b"", payload])
            slots.append(identity)
        elif command == "ready":
            slots.extend([identity] * int(orjson.loads(payload)["free"]))


def _drain_frontend(
    frontend: zmq.Socket[bytes], waiting: deque[tuple[bytes, bytes, bytes]]
) -> None:
    while True:
        try:
            client, header, _, payload = frontend.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        _, _, task_id, name, attempt, request_id, _, _ = orjson.loads(header)
        accepted = orjson.dumps(
            [VERSION, "accepted", task_id, name, attempt, request_id, "", 0.0]
        )
        frontend.send_multipart([client, accepted, b"", b""])
        waiting.append((client, header, payload))


def _request_stop(signum: int, frame: FrameType | None) -> None:
    global _stopping
    _stopping = True


def main() -> None:
    """Parse the two addresses and route until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="Minimal ROUTER/ROUTER task router.")
    parser.add_argument("--frontend", required=True)
    parser.add_argument("--backend", required=True)
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    route(options.frontend, options.backend)


if __name__ == "__main__":
    main()
