"""The web process's ZeroMQ client: one DEALER socket shared by every request.

Each request greenlet sends its task and waits on its own :class:`Ticket`; a single
reader greenlet receives everything the broker sends back and hands each message to
the ticket whose request id it carries. Messages for requests that already gave up
are dropped. So one process holds thousands of waiting requests with one socket.

Green sockets allow one waiting greenlet per direction. The reader is the only one
that receives; senders never wait, because every send is non-blocking: a full or
unconnected pipe to the broker means the broker is unavailable (HTTP 503).

The socket is made on first use in the process that uses it (after gunicorn forks),
never at import time.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

import gevent
import zmq.green as zmq
from gevent.event import AsyncResult
from zmq.utils.monitor import recv_monitor_message

from worker import protocol
from worker.curve import (
    REFUSAL_EVENTS,
    ClientKeys,
    log_refusal,
    reconnect_max_ms,
    secure_client,
)
from worker.errors import BrokerUnavailableError, ProtocolError, QueueFullError
from worker.protocol import Command, Header, Message

logger = logging.getLogger(__name__)

# With a standby broker listed: how long a submit waits for its acceptance
# before it is sent again (see Dispatcher._wait_accepted).
RESEND_AFTER_S = 1.0


class Ticket:
    """One request's view of its task: the broker's acceptance, then the reply.

    A *quiet* ticket belongs to a request that waits for the reply anyway: the
    broker's acceptance is only noted, not woken for, so a task that ends at
    once costs its request one wake-up instead of two. A rejection or the reply
    wakes it at once; the acceptance is checked when the wait for it runs out.
    """

    __slots__ = ("request_id", "accepted", "reply", "quiet", "acknowledged")

    def __init__(self, request_id: str, quiet: bool = False) -> None:
        self.request_id = request_id
        # Set by the broker's answer (accepted, rejected, pong) or by the reply.
        self.accepted: AsyncResult = AsyncResult()
        self.reply: AsyncResult = AsyncResult()
        self.quiet = quiet
        # The acceptance a quiet ticket noted without waking its request.
        self.acknowledged: Message | None = None

    def answer(self) -> Message | None:
        """The broker's answer so far (or the reply, which implies acceptance)."""
        if self.accepted.ready():
            answer: Message = self.accepted.get(block=False)
            return answer
        return self.acknowledged

    @property
    def ahead(self) -> int:
        """How many tasks of its name waited before it when the broker queued it."""
        answer = self.answer()
        if answer is None or answer.header.command is not Command.ACCEPTED:
            return 0
        detail = answer.header.detail
        return int(detail) if detail.isdigit() else 0


class Dispatcher:
    """Sends tasks to the broker and routes the broker's answers to their tickets."""

    def __init__(
        self,
        address: str | Sequence[str],
        accept_timeout_s: float,
        context: zmq.Context[Any] | None = None,
        curve_keys: ClientKeys | None = None,
    ) -> None:
        self._addresses = [address] if isinstance(address, str) else list(address)
        self._accept_timeout_s = accept_timeout_s
        self._context = context or zmq.Context()
        self._ids = itertools.count(1)
        self._tickets: dict[str, Ticket] = {}
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(
            zmq.IDENTITY, f"web-{os.getpid()}-{uuid.uuid4().hex[:8]}".encode()
        )
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.IMMEDIATE, 1)
        self._socket.setsockopt(zmq.SNDHWM, 10_000)
        self._socket.setsockopt(zmq.RCVHWM, 100_000)
        self._socket.setsockopt(
            zmq.RECONNECT_IVL_MAX, reconnect_max_ms(len(self._addresses))
        )
        secure_client(self._socket, curve_keys)
        self._refusals: zmq.Socket[Any] | None = None
        self._refusal_watch: gevent.Greenlet | None = None
        if curve_keys is not None:
            self._refusals = self._socket.get_monitor_socket(REFUSAL_EVENTS)
            self._refusal_watch = gevent.spawn(self._report_refusal, self._refusals)
        # Every broker listed: only the active one listens, and IMMEDIATE sends
        # only over completed connections, so messages go to it alone.
        for each in self._addresses:
            self._socket.connect(each)
        self._reader = gevent.spawn(self._read_forever)

    @property
    def waiting(self) -> int:
        """Requests currently waiting for the broker."""
        return len(self._tickets)

    def submit(
        self,
        task_id: str,
        name: str,
        payload: bytes,
        time_limit_s: float = 0.0,
        reply_by: float = 0.0,
    ) -> Ticket:
        """Send a task and wait until the broker has queued it.

        ``reply_by`` (a ``time.monotonic()`` moment) is for a caller that waits
        for the reply until then: the acceptance is checked without a wake-up
        of its own, and a reply that comes first ends the wait at once.

        Raises BrokerUnavailableError when the broker is not connected or does not
        answer within the accept timeout, QueueFullError when it refuses the task.
        The caller must :meth:`release` the ticket when done with it.
        """
        ticket = Ticket(str(next(self._ids)), quiet=reply_by > time.monotonic())
        header = Header(
            Command.SUBMIT,
            task_id,
            name,
            1,
            ticket.request_id,
            time_limit_s=time_limit_s,
        )
        self._tickets[ticket.request_id] = ticket
        deadline = time.monotonic() + self._accept_timeout_s
        frames = protocol.encode(Message(header, payload=payload))
        try:
            self._send(frames, deadline)
            answer = self._wait_accepted(ticket, frames, deadline, reply_by)
        except BrokerUnavailableError:
            self.release(ticket)
            raise
        if answer is None:
            self.release(ticket)
            raise BrokerUnavailableError("broker did not accept the task in time")
        if answer.header.command is Command.REJECTED:
            self.release(ticket)
            raise QueueFullError(f"broker refused the task: {answer.header.detail}")
        return ticket

    def _wait_accepted(
        self, ticket: Ticket, frames: list[bytes], deadline: float, reply_by: float
    ) -> Message | None:
        """The broker's answer to a submit, or None at the deadline.

        A quiet ticket sleeps until the reply, a rejection, ``reply_by`` or the
        deadline, whichever comes first, and then looks at what was noted.

        With a standby broker listed, a submit sent to the active broker just as
        it died is lost with its connection; it is sent again each
        RESEND_AFTER_S, and so reaches the broker that took over. The broker
        takes a task id it holds already as the same task.
        """
        resend = len(self._addresses) > 1
        resend_at = time.monotonic() + RESEND_AFTER_S
        while True:
            now = time.monotonic()
            if ticket.quiet and now >= reply_by:
                ticket.quiet = False  # from now on the acceptance wakes us
            answer = ticket.answer()
            if answer is not None:
                return answer
            if now >= deadline:
                return None
            if resend and now >= resend_at:
                self._send(frames, deadline)
                resend_at = now + RESEND_AFTER_S
            wake_at = deadline
            if ticket.quiet:
                wake_at = min(wake_at, reply_by)
            if resend:
                wake_at = min(wake_at, resend_at)
            ticket.accepted.wait(max(0.0, wake_at - now))

    def _send(self, frames: list[bytes], deadline: float) -> None:
        """Send without ever blocking on the socket; retry while not yet connected.

        A new process's socket needs a moment to connect, and a restarted broker
        a moment to be reached again, so a refused send is retried until the
        deadline rather than failing the request at once.
        """
        pause_s = 0.002
        while True:
            try:
                self._socket.send_multipart(frames, flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                if time.monotonic() + pause_s > deadline:
                    raise BrokerUnavailableError("broker is not connected") from None
            gevent.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.1)

    def ping(self, timeout_s: float) -> bool:
        """Whether the broker answers a ``ping`` within ``timeout_s`` seconds.

        A real round trip through this process's socket and reader greenlet: it
        proves the broker's loop runs, not only that a TCP connection is up.
        """
        ticket = Ticket(str(next(self._ids)))
        self._tickets[ticket.request_id] = ticket
        header = Header(Command.PING, request_id=ticket.request_id)
        deadline = time.monotonic() + timeout_s
        try:
            self._send(protocol.encode(Message(header)), deadline)
            answer = ticket.accepted.wait(max(0.0, deadline - time.monotonic()))
            return answer is not None
        except BrokerUnavailableError:
            return False
        finally:
            self.release(ticket)

    def cancel(self, task_id: str, owner: str) -> None:
        """Ask the broker to stop a running task; best effort, never waits.

        The record is already ``cancelled`` in Redis. If this message is lost
        (broker down), the task runs to its end and its result is discarded.
        """
        header = Header(Command.CANCEL, task_id, detail=owner)
        try:
            self._socket.send_multipart(
                protocol.encode(Message(header)), flags=zmq.NOBLOCK
            )
        except zmq.Again:
            logger.warning(
                "cancel not delivered, broker not connected task_id=%s", task_id
            )

    def wait_reply(self, ticket: Ticket, timeout_s: float) -> Message | None:
        """The reply (the finished record's JSON, its status in ``detail``), or None.

        None if it did not come within ``timeout_s``.
        """
        message: Message | None = ticket.reply.wait(timeout_s)
        return message

    def release(self, ticket: Ticket) -> None:
        """Stop routing messages to ``ticket``; later ones are dropped."""
        self._tickets.pop(ticket.request_id, None)

    def close(self) -> None:
        """Stop the reader and close the socket."""
        self._reader.kill(block=False)
        if self._refusal_watch is not None and self._refusals is not None:
            self._refusal_watch.kill(block=False)
            self._refusals.close(linger=0)
        self._socket.close(linger=0)

    def _report_refusal(self, monitor: zmq.Socket[Any]) -> None:
        """Log once if a broker refuses our CURVE handshake (it is not retried)."""
        try:
            event = recv_monitor_message(monitor)
            log_refusal(event["endpoint"], event["event"], "web process")
        except zmq.ZMQError:
            return  # closed with the dispatcher

    def _read_forever(self) -> None:
        while True:
            try:
                frames = self._socket.recv_multipart()
            except zmq.ContextTerminated:
                return
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ENOTSOCK:
                    return
                logger.error("broker socket error: %s", exc)
                gevent.sleep(0.1)
                continue

            try:
                message = protocol.decode(frames)
            except ProtocolError as exc:
                logger.warning("dropped malformed message from broker: %s", exc)
                continue
            self._route(message)

    def _route(self, message: Message) -> None:
        ticket = self._tickets.get(message.header.request_id)
        if ticket is None:
            logger.debug(
                "dropped late message request_id=%s task_id=%s",
                message.header.request_id,
                message.header.task_id,
            )
            return

        command = message.header.command
        if command is Command.REPLY:
            # A reply also proves acceptance, should it overtake the ack.
            if not ticket.accepted.ready():
                ticket.accepted.set(message)
            ticket.reply.set(message)
        elif command is Command.ACCEPTED and ticket.quiet:
            ticket.acknowledged = message
        elif command in (Command.ACCEPTED, Command.REJECTED, Command.PONG):
            if not ticket.accepted.ready():
                ticket.accepted.set(message)
        else:
            logger.warning("unexpected command from broker: %s", command)
