"""The wire format between web processes, the broker and worker pools. No I/O here.

Every message is three ZeroMQ frames (the ROUTER sockets add the sender's
identity in front, which the sockets' owners strip or add):

1. ``header``: compact JSON array ``[version, command, task_id, name, attempt,
   request_id, detail, time_limit_s]``. ``detail`` is the reason of a
   ``rejected``, the number of tasks of the same name queued before it in an
   ``accepted`` (``"0"`` when it went to a worker at once), the outcome of a
   ``reply`` (below) and the owner's identity in a ``cancel``; ``time_limit_s``
   is the caller's cap on the run time (0: none).
2. ``reply_to``: the identity of the web process a task came from, filled in by the
   broker when it hands the task to a worker and carried back in the reply, so the
   broker routes replies without a lookup. Empty elsewhere.
3. ``payload``: opaque bytes. For ``submit`` the task's keyword arguments as JSON,
   for ``reply`` the finished task record as JSON, for ``ready`` the worker's
   announcement. The broker never decodes task payloads.

Commands, by direction:

========== ================= ==================================================
command    direction         meaning
========== ================= ==================================================
submit     web -> broker     run this task; ``request_id`` names the asking
                             request in its web process
accepted   broker -> web     the task is queued in the broker
rejected   broker -> web     the task was refused; ``detail`` says why
submit     broker -> worker  run this task (``reply_to`` filled in)
reply      worker -> broker  the worker is done with the task; see ``detail``
           broker -> web     forwarded when ``request_id`` is not empty
ready      worker -> broker  announcement: capacity, free slots, task names, the
                             tasks it runs now, whether it is draining
heartbeat  worker -> broker  still alive
cancel     web -> broker     stop this running task; ``detail`` names its owner
           broker -> worker
disconnect both ways         worker -> broker: leaving; broker -> worker: unknown
                             to me, announce yourself again
ping       web -> broker     are you there? (readiness probes); ``request_id``
                             names the asking request
pong       broker -> web     the answer to a ``ping``, same ``request_id``
========== ================= ==================================================

The ``detail`` of a ``reply``: a final status (``succeeded``, ``failed``,
``cancelled``) with the record as payload, forwarded to the web process;
``requeued``, the attempt was lost and the task waits again in Redis, so the
broker queues it once more with the next attempt number; ``skipped``, the task did
not wait for this attempt (nothing to forward).

A receiver drops messages of another ``version`` with a log line; the version
changes whenever the frames or their meaning change. ``ping`` and ``pong`` were
added without a new version: nothing else changed, and a broker from before them
drops a ``ping`` as malformed, so the web process reports it not ready, which is
the truth of an old broker in a mixed deployment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import orjson

from worker.errors import ProtocolError

VERSION = 2


class Command(StrEnum):
    """What a message asks for; see the module docstring for directions."""

    SUBMIT = "submit"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REPLY = "reply"
    READY = "ready"
    HEARTBEAT = "heartbeat"
    CANCEL = "cancel"
    DISCONNECT = "disconnect"
    PING = "ping"
    PONG = "pong"


@dataclass(frozen=True, slots=True)
class Header:
    """The decoded first frame."""

    command: Command
    task_id: str = ""
    name: str = ""
    attempt: int = 0
    request_id: str = ""
    detail: str = ""
    time_limit_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Message:
    """One whole message, without the identity frame a ROUTER adds."""

    header: Header
    reply_to: bytes = b""
    payload: bytes = b""


def encode(message: Message) -> list[bytes]:
    """Frames for ``send_multipart``."""
    return [encode_header(message.header), message.reply_to, message.payload]


def encode_header(header: Header) -> bytes:
    """The first frame alone, for a receiver that forwards the others untouched."""
    return orjson.dumps(
        [
            VERSION,
            header.command.value,
            header.task_id,
            header.name,
            header.attempt,
            header.request_id,
            header.detail,
            header.time_limit_s,
        ]
    )


def decode(frames: Sequence[bytes]) -> Message:
    """Parse frames from ``recv_multipart``; raise :class:`ProtocolError` if malformed."""
    if len(frames) != 3:
        raise ProtocolError(f"expected 3 frames, got {len(frames)}", list(frames))

    try:
        fields = orjson.loads(frames[0])
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"header is not JSON: {exc}", list(frames)) from exc

    if not isinstance(fields, list) or not fields or fields[0] != VERSION:
        version = fields[0] if isinstance(fields, list) and fields else None
        raise ProtocolError(f"unsupported protocol version {version!r}", list(frames))
    if len(fields) != 8:
        raise ProtocolError("header is not an 8-item array", list(frames))
    _, command, task_id, name, attempt, request_id, detail, time_limit_s = fields
    if not all(isinstance(value, str) for value in (task_id, name, request_id, detail)):
        raise ProtocolError("header text fields must be strings", list(frames))
    if not isinstance(attempt, int) or isinstance(attempt, bool):
        raise ProtocolError("attempt must be an integer", list(frames))
    if not isinstance(time_limit_s, int | float) or isinstance(time_limit_s, bool):
        raise ProtocolError("time_limit_s must be a number", list(frames))

    try:
        parsed = Command(command)
    except ValueError as exc:
        raise ProtocolError(f"unknown command {command!r}", list(frames)) from exc

    header = Header(
        parsed, task_id, name, attempt, request_id, detail, float(time_limit_s)
    )
    return Message(header, bytes(frames[1]), bytes(frames[2]))
