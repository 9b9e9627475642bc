"""Processes under test: start each in its own session, log it, always stop it.

Every server the harness starts (gunicorn, broker, worker pools, Celery) runs in
a new session so that a final KILL reaches its whole process group: a gunicorn
master's workers, a pool's runner children, Celery's prefork children.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tools.redis_server import free_port

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

T = TypeVar("T")

__all__ = [
    "PYTHON",
    "ROOT",
    "Service",
    "StartError",
    "child_env",
    "free_port",
    "raise_fd_limit",
    "wait_until",
]


class StartError(RuntimeError):
    """A service did not come up; the message carries the end of its log."""


def wait_until(
    check: Callable[[], T | None],
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
) -> T:
    """Poll ``check`` until it returns something truthy; StartError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StartError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def raise_fd_limit() -> int:
    """Lift the soft open-file limit to the hard one; children inherit it.

    The concurrency row holds thousands of sockets in one process (client and
    web process alike), far past the usual soft limit of 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Service:
    """One background process group with its output in ``log_dir/<name>.log``."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_dir: Path,
    ) -> None:
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        logger.debug("starting %s: %s", name, " ".join(args))
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The group leader's process id."""
        return self.process.pid

    def alive(self) -> bool:
        """True while the group leader runs."""
        return self.process.poll() is None

    def check_alive(self) -> None:
        """Raise StartError with the log's tail if the process has exited."""
        if not self.alive():
            raise StartError(
                f"{self.name} exited with code {self.process.returncode}:\n"
                f"{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the log, for error messages."""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 15.0) -> None:
        """TERM the leader, KILL the group if it lingers; leave no process behind.

        Only the leader gets the TERM: a gunicorn master, a worker pool or a
        Celery worker stops its own children in order, as in production.
        """
        try:
            if self.alive():
                self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s did not stop in %gs, killing it", self.name, timeout_s
                )
                self._signal_group(signal.SIGKILL)
                self.process.wait(5)
            # Children that outlive their leader (a pool's runners) go too.
            self._signal_group(signal.SIGKILL)
        finally:
            self._log.close()

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)


def child_env(**overrides: str) -> dict[str, str]:
    """This environment without any taskgate setting, plus ``overrides``.

    Settings the caller's shell may have exported (``PORT``, ``REDIS_URL``,
    ``TASKGATE_*``) must not leak into the systems under test.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TASKGATE_", "BENCH_"))
        and key not in ("PORT", "REDIS_URL", "WEB_CONCURRENCY")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env
