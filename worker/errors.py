"""The exception tree shared by the web app, the broker and the workers.

::

    TaskGateError
     +-- ProtocolError            a ZeroMQ message that does not follow worker.protocol
     +-- UnavailableError         a dependency did not answer in time (HTTP 503)
     |    +-- StoreUnavailableError    Redis
     |    +-- BrokerUnavailableError   the broker
     |    +-- QueueFullError           the broker's bounded queue is full
     +-- UnknownTaskError         no worker serves that task name (HTTP 404)
     +-- InvalidArgumentsError    the body does not fit the task's parameters (HTTP 422)
     +-- TaskFinishedError        the task already ended, it cannot be cancelled (HTTP 409)

    TaskCancelled (a BaseException)   raised inside a task whose cancellation was asked
"""

from __future__ import annotations


class TaskGateError(Exception):
    """Root of every error taskgate raises on purpose."""


class ProtocolError(TaskGateError):
    """A message could not be decoded; keeps the raw frames for the log."""

    def __init__(self, reason: str, frames: list[bytes] | None = None) -> None:
        super().__init__(reason)
        self.frames = frames or []


class UnavailableError(TaskGateError):
    """A dependency is down or overloaded; the client may retry later."""


class StoreUnavailableError(UnavailableError):
    """Redis did not answer within its timeout."""


class BrokerUnavailableError(UnavailableError):
    """The broker did not accept the task within its timeout."""


class QueueFullError(UnavailableError):
    """The broker refused the task because its bounded queue is full."""


class UnknownTaskError(TaskGateError):
    """No live worker announced this task name."""


class InvalidArgumentsError(TaskGateError):
    """The arguments do not match the task function's parameters."""


class TaskFinishedError(TaskGateError):
    """The task already reached a final state."""

    def __init__(self, status: str) -> None:
        super().__init__(f"the task already ended: {status}")
        self.status = status


class TaskCancelled(BaseException):
    """Raised inside a running task when a client cancels it.

    A BaseException, so that task code catching ``Exception`` does not swallow it,
    while ``finally`` blocks still run.
    """
