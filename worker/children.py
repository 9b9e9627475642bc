"""The pool's runner children: starting them and stopping them on purpose.

A child is a spawned process running :func:`worker.runner.main`, joined to the
pool parent by a pipe. The parent kills a child for two reasons only, recorded in
:attr:`Child.ending` so that its death is read right: the task overran its time
limit, or a client cancelled it and it did not stop within the grace period.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from enum import Enum
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from worker import runner
from worker.protocol import Header

logger = logging.getLogger(__name__)

# Spawned children start clean: no inherited ZeroMQ context, Redis pool or locks.
_CONTEXT = multiprocessing.get_context("spawn")


@dataclass(slots=True)
class Assignment:
    """A task handed to this pool, as the broker sent it."""

    header: Header
    reply_to: bytes
    payload: bytes


class Ending(Enum):
    """Why the parent is stopping a child's task."""

    NONE = "none"
    CANCELLED = "cancelled"
    TIME_LIMIT = "time_limit"


@dataclass(slots=True)
class Child:
    """One runner process and the task it is running, if any."""

    process: BaseProcess
    conn: Connection
    assignment: Assignment | None = None
    # Monotonic times: when the running task overruns its limit, and when a
    # cancelled task that has not stopped gets killed.
    deadline: float = math.inf
    kill_at: float = math.inf
    ending: Ending = Ending.NONE
    started_at: float = field(default_factory=time.monotonic)

    @property
    def idle(self) -> bool:
        """True when the child can take a task."""
        return self.assignment is None

    def give(self, assignment: Assignment, time_limit_s: float) -> None:
        """Send ``assignment`` to the child and start its clock."""
        header = assignment.header
        self.assignment = assignment
        self.deadline = time.monotonic() + time_limit_s
        self.kill_at = math.inf
        self.ending = Ending.NONE
        self.conn.send(
            (header.task_id, header.name, header.attempt, assignment.payload)
        )

    def take_back(self) -> Assignment | None:
        """Clear the child's task and return it."""
        assignment = self.assignment
        self.assignment = None
        self.deadline = math.inf
        self.kill_at = math.inf
        return assignment

    def cancel(self, grace_s: float) -> None:
        """Ask the running task to stop, and schedule a kill after ``grace_s``."""
        self.ending = Ending.CANCELLED
        self.kill_at = time.monotonic() + grace_s
        self._signal(runner.CANCEL_SIGNAL)

    def kill(self, ending: Ending | None = None) -> None:
        """Kill the process now; its pipe then reports the death."""
        if ending is not None:
            self.ending = ending
        self.kill_at = math.inf
        self.deadline = math.inf
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        pid = self.process.pid
        if pid is not None and self.process.exitcode is None:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                logger.debug("child already gone pid=%s", pid)


def spawn_child(module_names: list[str], log_level: str) -> Child:
    """Start a runner process that imports ``module_names``."""
    parent_end, child_end = _CONTEXT.Pipe()
    process = _CONTEXT.Process(
        target=runner.main,
        args=(child_end, module_names, log_level),
        name="taskgate-runner",
    )
    process.start()
    child_end.close()
    return Child(process, parent_end)


def stop_children(children: list[Child], timeout_s: float = 5.0) -> None:
    """Close every child's pipe (an idle child then exits), then KILL stragglers."""
    for child in children:
        child.conn.close()
    deadline = time.monotonic() + timeout_s
    for child in children:
        child.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if child.process.is_alive():
            child.process.kill()
            child.process.join()
