"""Fixtures: a private Redis server, settings on free ports, and a full stack.

Tests never skip for want of Redis: the session starts its own ``redis-server``
(see tools.redis_server) on a free loopback port.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from conf.settings import Settings
from tests.helpers import ManagedProcess, python_args, wait_for
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


@dataclass
class Stack:
    """A running taskgate: broker, worker pool and gunicorn, on private ports."""

    base_url: str
    env: dict[str, str]
    broker: ManagedProcess
    pool: ManagedProcess
    web: ManagedProcess
    redis_url: str

    def url(self, path: str) -> str:
        return self.base_url + path


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
            return requests.get(base_url + "/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            assert web.alive(), web.log()
            return False

    try:
        wait_for(healthy, timeout_s=30, interval_s=0.1, what="gunicorn to answer /healthz")
    except BaseException:
        web.stop()
        raise
    return web


@pytest.fixture(scope="session")
def stack(
    redis_server_instance: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The whole system on database 1 of the private Redis, shared by e2e tests."""
    log_dir = tmp_path_factory.mktemp("stack-logs")
    redis_url = redis_server_instance.url(1)
    redis.Redis.from_url(redis_url).flushdb()
    env = stack_env(redis_url)
    started: list[ManagedProcess] = []
    try:
        broker = ManagedProcess(
            "broker", python_args("-m", "worker.broker"), env, log_dir
        )
        started.append(broker)
        pool = ManagedProcess("pool", python_args("-m", "worker"), env, log_dir)
        started.append(pool)
        web = start_web(env, log_dir)
        started.append(web)
        store = TaskStore(redis.Redis.from_url(redis_url), result_ttl_s=600)
        wait_for(
            lambda: "echo" in store.read_task_types(),
            timeout_s=30,
            what="workers to announce their tasks",
        )
        yield Stack(
            f"http://127.0.0.1:{env['PORT']}", env, broker, pool, web, redis_url
        )
    finally:
        for process in reversed(started):
            process.stop()
