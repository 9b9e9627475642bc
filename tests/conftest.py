"""Fixtures: a private Redis server, settings on free ports, and a full stack.

Tests never skip for want of Redis: the session starts its own ``redis-server``
(see tools.redis_server) on a free loopback port.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from conf.settings import Settings
from tests.helpers import ManagedProcess, flush_redis, python_args, wait_for
from tools import redis_server
from worker.store import TaskStore


@dataclass
class RedisServer:
    port: int
    process: object

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def redis_server_instance(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisServer]:
    port = redis_server.free_port()
    process = redis_server.start(port, tmp_path_factory.mktemp("redis"))
    yield RedisServer(port, process)
    process.terminate()
    process.wait(10)


@pytest.fixture
def redis_client(redis_server_instance: RedisServer) -> Iterator[redis.Redis]:
    """A client on database 0, emptied before each test."""
    client = redis.Redis.from_url(redis_server_instance.url(0), socket_timeout=5)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def store(redis_client: redis.Redis) -> TaskStore:
    return TaskStore(redis_client, result_ttl_s=600)


@pytest.fixture
def settings(redis_server_instance: RedisServer) -> Settings:
    """Settings for in-process tests: private Redis, broker on free ports."""
    return Settings(
        redis_url=redis_server_instance.url(0),
        broker_frontend=f"tcp://127.0.0.1:{redis_server.free_port()}",
        broker_backend=f"tcp://127.0.0.1:{redis_server.free_port()}",
        heartbeat_interval_s=0.2,
        heartbeat_liveness=3,
        worker_processes=2,
        task_modules="worker.tasks,tests.e2e_tasks",
        shutdown_grace_s=2.0,
    )


def stack_env(redis_url: str, **overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TASKGATE_") and key not in ("PORT", "REDIS_URL")
    }
    env.update(
        REDIS_URL=redis_url,
        PORT=str(redis_server.free_port()),
        WEB_CONCURRENCY="2",
        TASKGATE_BROKER_FRONTEND=f"tcp://127.0.0.1:{redis_server.free_port()}",
        TASKGATE_BROKER_BACKEND=f"tcp://127.0.0.1:{redis_server.free_port()}",
        TASKGATE_WORKER_PROCESSES="4",
        TASKGATE_TASK_MODULES="worker.tasks,tests.e2e_tasks",
        TASKGATE_HEARTBEAT_INTERVAL_S="0.25",
        TASKGATE_SHUTDOWN_GRACE_S="2",
    )
    env.update(overrides)
    return env


def start_web(env: dict[str, str], log_dir: Path, name: str = "web") -> ManagedProcess:
    """Start gunicorn as the Procfile does and wait for /healthz."""
    web = ManagedProcess(
        name,
        python_args("-m", "gunicorn", "-c", "conf/gunicorn.conf.py", "wsgi:app"),
        env,
        log_dir,
    )
    base_url = f"http://127.0.0.1:{env['PORT']}"

    def healthy() -> bool:
        try:
            return requests.get(base_url + "/healthz", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            assert web.alive(), web.log()
            return False

    try:
        wait_for(
            healthy, timeout_s=30, interval_s=0.1, what="gunicorn to answer /healthz"
        )
    except BaseException:
        web.stop()
        raise
    return web


class Stack:
    """A taskgate of real processes on private ports; every process is stopped at the end."""

    def __init__(self, redis_url: str, log_dir: Path, **overrides: str) -> None:
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.env = stack_env(redis_url, **overrides)
        self.base_url = f"http://127.0.0.1:{self.env['PORT']}"
        self.store = TaskStore(redis.Redis.from_url(redis_url), result_ttl_s=600)
        self.processes: list[ManagedProcess] = []
        self._names = 0

    def url(self, path: str) -> str:
        return self.base_url + path

    def _start(self, kind: str, args: list[str]) -> ManagedProcess:
        self._names += 1
        process = ManagedProcess(
            f"{kind}-{self._names}", python_args(*args), self.env, self.log_dir
        )
        self.processes.append(process)
        return process

    def start_broker(self) -> ManagedProcess:
        return self._start("broker", ["-m", "worker.broker"])

    def start_pool(self) -> ManagedProcess:
        return self._start("pool", ["-m", "worker"])

    def start_web(self) -> ManagedProcess:
        self._names += 1
        web = start_web(self.env, self.log_dir, name=f"web-{self._names}")
        self.processes.append(web)
        return web

    def start_all(self) -> Stack:
        self.broker = self.start_broker()
        self.pool = self.start_pool()
        self.web = self.start_web()
        wait_for(
            lambda: "echo" in self.store.read_task_types(),
            timeout_s=30,
            what="workers to announce their tasks",
        )
        return self

    def stop_all(self) -> None:
        """Stop every process, then close the store's client (safe to call twice)."""
        for process in reversed(self.processes):
            process.stop()
        self.store.client.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in self.processes)


@pytest.fixture(scope="session")
def stack(
    redis_server_instance: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The whole system on database 1 of the private Redis, shared by e2e tests."""
    redis_url = redis_server_instance.url(1)
    flush_redis(redis_url)
    running = Stack(redis_url, tmp_path_factory.mktemp("stack-logs"))
    try:
        yield running.start_all()
    finally:
        running.stop_all()


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Private stacks for tests that kill and restart parts; stopped after the test."""
    made: list[Stack] = []

    def make(redis_url: str, **overrides: str) -> Stack:
        flush_redis(redis_url)
        made.append(Stack(redis_url, tmp_path / f"stack{len(made)}", **overrides))
        made[-1].log_dir.mkdir()
        return made[-1]

    yield make
    for one in made:
        one.stop_all()
