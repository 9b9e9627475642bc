"""Start taskgate as its Procfile does: broker, worker pool and gunicorn.

All on private ports and one private Redis database. The worker pool can be
restarted with another process count or settings (the scaling and concurrency
rows) while the broker and the web processes keep running.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path

import psutil
import redis

from bench import cpu, probe
from bench.procs import PYTHON, Service, child_env, free_port, wait_until
from bench.systems import STARTUP_TIMEOUT_S, WebConfig, start_web
from worker.store import TASK_TYPES_KEY, UNFINISHED_KEY

logger = logging.getLogger(__name__)


class Taskgate:
    """A running taskgate; stopped with the ExitStack it was started on."""

    def __init__(
        self,
        stack: ExitStack,
        redis_url: str,
        log_dir: Path,
        web: WebConfig,
        worker_processes: int,
        settings: dict[str, str] | None = None,
    ) -> None:
        self._stack = stack
        self._log_dir = log_dir
        self.redis_url = redis_url
        self._redis = redis.Redis.from_url(redis_url)
        stack.callback(self._redis.close)
        self._redis.flushdb()
        self.env = child_env(
            REDIS_URL=redis_url,
            TASKGATE_BROKER_FRONTEND=f"tcp://127.0.0.1:{free_port()}",
            TASKGATE_BROKER_BACKEND=f"tcp://127.0.0.1:{free_port()}",
            **(settings or {}),
        )
        self.pool: Service | None = None
        self._pools_started = 0
        # Stopped in this order: the web, then the pool, then the broker. A pool
        # stopped under a live web process leaves requests waiting for replies
        # that never come, and gunicorn's graceful stop waits for them.
        self._web_stack = ExitStack()
        self.broker = Service(
            "taskgate-broker", [PYTHON, "-m", "worker.broker"], self.env, log_dir
        )
        stack.callback(self._stop)
        self.restart_pool(worker_processes)
        self.web, self.base_url = start_web(
            self._web_stack, "taskgate-web", "wsgi:app", self.env, log_dir, web
        )
        self.wait_serving("echo", {"n": 0})

    def _stop(self) -> None:
        self._web_stack.close()
        if self.pool is not None:
            self.pool.stop()
        self.broker.stop()

    def restart_pool(
        self,
        processes: int,
        settings: dict[str, str] | None = None,
        profile_to: Path | None = None,
    ) -> None:
        """Replace the worker pool by one with ``processes`` children and ``settings``.

        Waits for the tasks in flight to end first: a stopping pool cuts them off
        and their requests would wait out their whole wait. With ``profile_to``
        the pool's parent runs under cProfile, which writes its statistics
        there when the pool stops.
        """
        if self.pool is not None:
            wait_until(
                lambda: self.unfinished() == 0, STARTUP_TIMEOUT_S, "tasks to end"
            )
            self.pool.stop()
        self._redis.delete(TASK_TYPES_KEY)
        env = {
            **self.env,
            "TASKGATE_WORKER_PROCESSES": str(processes),
            **(settings or {}),
        }
        self._pools_started += 1
        profiler = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
        self.pool = Service(
            f"taskgate-pool-{self._pools_started}",
            [PYTHON, *profiler, "-m", "worker"],
            env,
            self._log_dir,
        )

        def announced() -> bool:
            assert self.pool is not None
            self.pool.check_alive()
            self.broker.check_alive()
            return bool(self._redis.hexists(TASK_TYPES_KEY, "echo"))

        wait_until(
            announced, STARTUP_TIMEOUT_S, "the worker pool to announce its tasks"
        )

    def wait_serving(self, name: str, arguments: dict[str, object]) -> None:
        """Wait until a synchronous call of ``name`` succeeds (the web's catalog is fresh)."""

        def served() -> bool:
            answer = probe.call(
                "POST", f"{self.base_url}/v1/tasks/{name}", arguments, 10
            )
            return answer.status == 200

        wait_until(served, STARTUP_TIMEOUT_S, f"taskgate to run {name}", interval_s=0.2)

    def unfinished(self) -> int:
        """Tasks recorded but not finished yet."""
        return int(self._redis.zcard(UNFINISHED_KEY))

    def meter(self) -> cpu.Meter:
        """CPU readers of the web processes, the current pool, the broker and Redis."""

        def pool_s() -> float:
            return cpu.process_tree_s(self.pool.pid)() if self.pool is not None else 0.0

        return {
            "web": cpu.process_tree_s(self.web.pid),
            "pool": pool_s,
            "broker": cpu.process_tree_s(self.broker.pid),
            "redis": cpu.redis_s(self.redis_url),
        }

    def web_worker_pids(self) -> list[int]:
        """Process ids of gunicorn's worker processes (not the master)."""
        return [child.pid for child in psutil.Process(self.web.pid).children()]
