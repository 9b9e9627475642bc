"""Shared test helpers: deadline polling and managed subprocesses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


def flush_redis(url: str) -> None:
    """Empty one Redis database with a client closed at once, leaving no socket open."""
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        client.flushdb()


def wait_for(
    check: Callable[[], T],
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


class ManagedProcess:
    """A child process in its own session, logged to a file, always stopped."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log_dir: Path
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process's whole group."""
        if self.alive():
            os.killpg(self.process.pid, signum)

    def stop(self, timeout_s: float = 10.0) -> int:
        """TERM the group, then KILL it if it lingers; return the exit code."""
        try:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(5)
            # Children that outlived their leader are stopped too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        finally:
            self._log.close()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def python_args(*args: str) -> list[str]:
    """Run with this interpreter (the project's virtual environment)."""
    return [sys.executable, *args]


def run_bin_run(
    env: dict[str, str], *args: str
) -> tuple[subprocess.Popen[str], str, str]:
    """Run ``python -m tools.stack`` (bin/run) to its exit; its output as text.

    For runs expected to stop by themselves (a bad setting, a taken port); one
    that does not within a minute is stopped, and the test fails.
    """
    run = subprocess.Popen(
        python_args("-m", "tools.stack", *args),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = run.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        run.terminate()  # it stops what it started
        run.communicate(timeout=60)
        raise
    return run, stdout, stderr
