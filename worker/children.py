"""The pool's runner processes and their task slots.

A runner is a spawned process running :func:`worker.runner.main`, joined to the
pool parent by a pipe. In ``process`` mode it runs one task at a time (one slot);
in ``gevent`` mode it runs up to ``worker_concurrency`` tasks at once in greenlets
(that many slots), for I/O-bound tasks.

The parent kills a runner for two reasons only, recorded in :attr:`Slot.ending` so
that its death is read right: a task overran its time limit, or a client cancelled
it and it did not stop within the grace period. In gevent mode the runner enforces
time limits and cancellation inside the greenlet itself; the parent kills the
whole runner only as a backstop (a greenlet stuck on the CPU cannot be
interrupted), and the other tasks of that runner are then handed back.
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

from conf.logging import LogFormat
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
    """Why the parent is stopping a slot's task."""

    NONE = "none"
    CANCELLED = "cancelled"
    TIME_LIMIT = "time_limit"


@dataclass(slots=True, eq=False)
class Runner:
    """One runner process and its slots."""

    process: BaseProcess
    conn: Connection
    green: bool
    slots: list[Slot] = field(default_factory=list)

    def slot_of(self, task_id: str) -> Slot | None:
        """The slot running ``task_id``, if any."""
        return next((s for s in self.slots if s.task_id == task_id), None)

    def kill(self) -> None:
        """Kill the process now; its pipe then reports the death."""
        pid = self.process.pid
        if pid is not None and self.process.exitcode is None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                logger.debug("runner already gone pid=%s", pid)


@dataclass(slots=True, eq=False)
class Slot:
    """Room for one task in a runner, and the task in it, if any."""

    runner: Runner
    assignment: Assignment | None = None
    # Monotonic times: when the running task overruns its limit, and when a
    # cancelled task that has not stopped gets its runner killed.
    deadline: float = math.inf
    kill_at: float = math.inf
    ending: Ending = Ending.NONE
    # Monotonic time the task was handed to the runner, for its run time.
    started_at: float = 0.0

    @property
    def idle(self) -> bool:
        """True when the slot can take a task."""
        return self.assignment is None

    @property
    def task_id(self) -> str | None:
        return self.assignment.header.task_id if self.assignment else None

    def give(self, assignment: Assignment, time_limit_s: float, grace_s: float) -> None:
        """Send ``assignment`` to the runner and start its clock."""
        header = assignment.header
        self.assignment = assignment
        self.started_at = time.monotonic()
        # A green runner stops the task itself at the limit; the parent steps in
        # only if it did not manage to.
        self.deadline = (
            time.monotonic() + time_limit_s + (grace_s if self.runner.green else 0)
        )
        self.kill_at = math.inf
        self.ending = Ending.NONE
        self.runner.conn.send(
            (
                "run",
                header.task_id,
                header.name,
                header.attempt,
                assignment.payload,
                time_limit_s,
            )
        )

    def take_back(self) -> Assignment | None:
        """Clear the slot and return its task."""
        assignment = self.assignment
        self.assignment = None
        self.deadline = math.inf
        self.kill_at = math.inf
        return assignment

    def cancel(self, grace_s: float) -> None:
        """Ask the running task to stop; kill its runner if it has not after ``grace_s``."""
        self.ending = Ending.CANCELLED
        self.kill_at = time.monotonic() + grace_s
        if self.runner.green:
            self.runner.conn.send(("cancel", self.task_id))
            return
        pid = self.runner.process.pid
        if pid is not None and self.runner.process.exitcode is None:
            try:
                os.kill(pid, runner.CANCEL_SIGNAL)
            except ProcessLookupError:
                logger.debug("runner already gone pid=%s", pid)

    def kill(self, ending: Ending | None = None) -> None:
        """Kill the slot's runner (every task in it) now."""
        if ending is not None:
            self.ending = ending
        self.kill_at = math.inf
        self.deadline = math.inf
        self.runner.kill()


def spawn_runner(
    module_names: list[str], log_level: str, log_format: LogFormat, concurrency: int
) -> Runner:
    """Start a runner process with ``concurrency`` slots (gevent mode when above 1)."""
    parent_end, child_end = _CONTEXT.Pipe()
    process = _CONTEXT.Process(
        target=runner.main,
        args=(child_end, module_names, log_level, log_format, concurrency),
        name="taskgate-runner",
    )
    process.start()
    child_end.close()
    spawned = Runner(process, parent_end, green=concurrency > 1)
    spawned.slots = [Slot(spawned) for _ in range(concurrency)]
    return spawned


def stop_runners(runners: list[Runner], timeout_s: float = 5.0) -> None:
    """Close every runner's pipe (an idle runner then exits), then KILL stragglers."""
    for each in runners:
        each.conn.close()
    deadline = time.monotonic() + timeout_s
    for each in runners:
        each.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if each.process.is_alive():
            each.process.kill()
            each.process.join()
