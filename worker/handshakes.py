"""Which peer failed a handshake with the broker: a plain-text or wrong-key client.

ZeroMQ's monitor events of a failed handshake name the broker's socket, not the
peer. They do come in a fixed order, though: ``EVENT_ACCEPTED`` carries the new
connection's file descriptor, and when its handshake fails libzmq's I/O thread
emits ``HANDSHAKE_FAILED_*`` and at once ``EVENT_DISCONNECTED`` with the same
descriptor, before it closes it. So the watcher reads the peer's IP address as
soon as it sees a connection accepted (``getpeername`` on a duplicate of the
descriptor), keeps it by descriptor until the disconnect, and pins a failure to
the descriptor of the disconnect that follows it.

Each refused IP address is logged once at WARNING (a client reconnecting from a
new port is the same peer); all refusals are counted per socket, and the count is
logged at most once a minute when it grew.

Known limit: a plain-text ZeroMQ client is dropped within a millisecond, often
before this thread reads its address (about a third of the attempts on an idle
loopback, nearly all when the machine is busy); its descriptor is then closed
(the failure is counted, and logged once per socket as ``address=unknown``) or
already reused by another connection (then the read is thrown away). A peer
that keeps its connection open longer before greeting is always named.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

logger = logging.getLogger(__name__)

SUMMARY_INTERVAL_S = 60.0
# Refused IP addresses remembered so each is logged once, and open connections
# whose address is kept: bounds, so a flood of peers cannot grow the memory.
MAX_REMEMBERED_PEERS = 10_000
MAX_OPEN_CONNECTIONS = 10_000
DRAIN_BATCH = 1000
# Events handled in one go before the thread looks at its stop flag again.
MAX_EVENTS_PER_READ = 10 * DRAIN_BATCH
HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)
EVENTS = (
    zmq.EVENT_ACCEPTED | HANDSHAKE_FAILURES | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
)
# Stand-in for the address of a connection whose address could not be read.
UNKNOWN = ""


def peer_ip(fd: int, listening_port: int | None) -> str:
    """The IP address at the other end of socket ``fd``, or UNKNOWN if it is gone.

    Works on a duplicate, so the connection stays open while it is read even if
    libzmq closes its own descriptor meanwhile. A socket whose own port is not
    ``listening_port`` is another one that got the number since: UNKNOWN.
    """
    try:
        duplicate = os.dup(fd)
    except OSError:
        return UNKNOWN
    try:
        sock = socket.socket(fileno=duplicate)
    except OSError:  # the number is already reused, and not by a socket
        os.close(duplicate)
        return UNKNOWN
    try:
        own, peer = sock.getsockname(), sock.getpeername()
    except OSError:
        return UNKNOWN
    finally:
        sock.close()
    if not isinstance(peer, tuple):
        return "local"  # an ipc:// peer has no address
    if listening_port is not None and own[1] != listening_port:
        return UNKNOWN
    return str(peer[0])


@dataclass(slots=True)
class _Socket:
    """What the watcher knows of one broker socket."""

    name: str
    open: dict[int, str] = field(default_factory=dict)
    failed: str | None = None  # event name of a failure awaiting its disconnect
    refused: int = 0
    reported: int = 0
    unknown_logged: bool = False


class HandshakeWatcher:
    """A thread reading the broker sockets' monitors, logging refused peers."""

    def __init__(self, sockets: dict[str, zmq.Socket[Any]]) -> None:
        self._watched = list(sockets.values())
        self._sockets = {
            sock.get_monitor_socket(EVENTS): _Socket(name)
            for name, sock in sockets.items()
        }
        self._refused_ips: set[str] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._watch_forever, name="handshakes", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the monitors; before closing the sockets."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5)
        # Monitoring ends first: libzmq's send of a monitor event blocks once
        # the reading end is closed, and closing the watched socket sends
        # DISCONNECTED events; that would hang its connections open.
        for sock in self._watched:
            sock.disable_monitor()
        for monitor in self._sockets:
            monitor.close(linger=0)

    def _watch_forever(self) -> None:
        poller = zmq.Poller()
        for monitor in self._sockets:
            poller.register(monitor, zmq.POLLIN)
        next_summary = time.monotonic() + SUMMARY_INTERVAL_S
        while not self._stopping.is_set():
            for monitor, _ in poller.poll(200):
                self._read(monitor, self._sockets[monitor])
            if time.monotonic() >= next_summary:
                next_summary = time.monotonic() + SUMMARY_INTERVAL_S
                self._summarize()

    def _read(self, monitor: zmq.Socket[Any], state: _Socket) -> None:
        """Handle every event queued on ``monitor``, in order."""
        queued = deque(_drain(monitor))
        received = len(queued)
        while queued:
            event = queued.popleft()
            kind, fd = event["event"], event["value"]
            if kind == zmq.EVENT_ACCEPTED:
                address = peer_ip(fd, _port(event["endpoint"]))
                # Read the address first, then look at what came meanwhile: if
                # the descriptor was accepted again, the read may be of the newer
                # connection and is not trusted.
                if received < MAX_EVENTS_PER_READ:
                    later = _drain(monitor)
                    received += len(later)
                    queued.extend(later)
                if any(_accepts(later, fd) for later in queued):
                    address = UNKNOWN
                if len(state.open) < MAX_OPEN_CONNECTIONS:
                    state.open[fd] = address
            elif kind & HANDSHAKE_FAILURES:
                state.failed = zmq.Event(kind).name
            elif kind in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
                address = state.open.pop(fd, UNKNOWN)
                if state.failed is not None:
                    self._refuse(state, address, state.failed)
                    state.failed = None

    def _refuse(self, state: _Socket, address: str, event: str) -> None:
        state.refused += 1
        if address == UNKNOWN:
            if not state.unknown_logged:
                state.unknown_logged = True
                logger.warning(
                    "refused a peer whose handshake failed (not CURVE, or the wrong "
                    "broker key) address=unknown socket=%s event=%s",
                    state.name,
                    event,
                )
            return
        if address in self._refused_ips:
            return
        if len(self._refused_ips) >= MAX_REMEMBERED_PEERS:
            return
        self._refused_ips.add(address)
        logger.warning(
            "refused a peer whose handshake failed (not CURVE, or the wrong broker "
            "key) address=%s socket=%s event=%s%s",
            address,
            state.name,
            event,
            (
                "; further new peers are not logged"
                if len(self._refused_ips) == MAX_REMEMBERED_PEERS
                else ""
            ),
        )

    def _summarize(self) -> None:
        for state in self._sockets.values():
            if state.refused > state.reported:
                logger.warning(
                    "refused %d failed handshakes so far socket=%s",
                    state.refused,
                    state.name,
                )
            state.reported = state.refused


def _drain(monitor: zmq.Socket[Any]) -> list[dict[str, Any]]:
    """The events queued now, at most a bounded batch."""
    events: list[dict[str, Any]] = []
    while len(events) < DRAIN_BATCH and monitor.poll(0):
        events.append(dict(recv_monitor_message(monitor)))
    return events


def _port(endpoint: bytes) -> int | None:
    """The port of a ``tcp://host:port`` endpoint; None for other transports."""
    if not endpoint.startswith(b"tcp://"):
        return None
    return int(endpoint.rsplit(b":", 1)[1])


def _accepts(event: dict[str, Any], fd: int) -> bool:
    return bool(event["event"] == zmq.EVENT_ACCEPTED and event["value"] == fd)
