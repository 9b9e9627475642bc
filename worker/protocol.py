"""The wire format between web processes, the broker and worker pools. No I/O here.

Every message is three ZeroMQ frames (the ROUTER sockets add the sender's
identity in front, which the sockets' owners strip or add):

1. ``header``: compact JSON array ``[version, command, task_id, name, attempt,
   request_id, detail]``. ``detail`` is the reason of a ``rejected`` and the final
   status of a ``reply``.
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
reply      worker -> broker  the task ended and its record is in Redis;
           broker -> web     forwarded when ``request_id`` is not empty
ready      worker -> broker  announcement: capacity, free slots, task names
heartbeat  worker -> broker  still alive
disconnect both ways         worker -> broker: leaving; broker -> worker: unknown
                             to me, announce yourself again
========== ================= ==================================================

A receiver drops messages of another ``version`` with a log line; the version
changes whenever the frames or their meaning change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import orjson

from worker.errors import ProtocolError

VERSION = 1


class Command(StrEnum):
    """What a message asks for; see the module docstring for directions."""

    SUBMIT = "submit"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REPLY = "reply"
    READY = "ready"
    HEARTBEAT = "heartbeat"
    DISCONNECT = "disconnect"


@dataclass(frozen=True, slots=True)
class Header:
    """The decoded first frame."""

    command: Command
    task_id: str = ""
    name: str = ""
    attempt: int = 0
    request_id: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """One whole message, without the identity frame a ROUTER adds."""

    header: Header
    reply_to: bytes = b""
    payload: bytes = b""


def encode(message: Message) -> list[bytes]:
    """Frames for ``send_multipart``."""
    header = message.header
    head = orjson.dumps(
        [
            VERSION,
            header.command.value,
            header.task_id,
            header.name,
            header.attempt,
            header.request_id,
            header.detail,
        ]
    )
    return [head, message.reply_to, message.payload]


def decode(frames: Sequence[bytes]) -> Message:
    """Parse frames from ``recv_multipart``; raise :class:`ProtocolError` if malformed."""
    if len(frames) != 3:
        raise ProtocolError(f"expected 3 frames, got {len(frames)}", list(frames))

    try:
        fields = orjson.loads(frames[0])
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"header is not JSON: {exc}", list(frames)) from exc

    if not isinstance(fields, list) or len(fields) != 7:
        raise ProtocolError("header is not a 7-item array", list(frames))
    version, command, task_id, name, attempt, request_id, detail = fields
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r}", list(frames))
    if not all(isinstance(value, str) for value in (task_id, name, request_id, detail)):
        raise ProtocolError("header text fields must be strings", list(frames))
    if not isinstance(attempt, int) or isinstance(attempt, bool):
        raise ProtocolError("attempt must be an integer", list(frames))

    try:
        parsed = Command(command)
    except ValueError as exc:
        raise ProtocolError(f"unknown command {command!r}", list(frames)) from exc

    header = Header(parsed, task_id, name, attempt, request_id, detail)
    return Message(header, bytes(frames[1]), bytes(frames[2]))
