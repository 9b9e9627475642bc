"""A taskgate spread over private hosts: fixtures for the multi-host tests.

Hosts (see :mod:`tests.netns`): ``db`` runs Redis; ``broker-a`` and ``broker-b``
run brokers; ``web`` runs gunicorn; ``worker-1`` to ``worker-3`` run pools. Every
process reaches the others by the private addresses in its settings, as on
separate machines. Redis lives for the module; the processes for one test.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.helpers import ManagedProcess, wait_for
from tests.multihost_tasks import HOST_VARIABLE
from tests.netns import Network, why_namespaces_cannot_be_made
from tools import redis_server
from worker import keys

HOSTS = {
    "db": 2,
    "broker-a": 11,
    "broker-b": 12,
    "web": 21,
    "worker-1": 31,
    "worker-2": 32,
    "worker-3": 33,
}
REDIS_PORT = 6379
HTTP_PORT = 8000
FRONTEND_PORT = 5555
BACKEND_PORT = 5556
# Names whose public keys the brokers accept; "stranger" has a pair but no listing.
LISTED = ("web", "worker-1", "worker-2", "worker-3")


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The private hosts, with Redis running on ``db``; all removed at the end."""
    reason = why_namespaces_cannot_be_made()
    if reason:
        pytest.skip(reason)
    made = Network(f"tg{os.getpid() % 100000}")
    redis_process = None
    try:
        made.create()
        for name, number in HOSTS.items():
            made.add_host(name, number)
        db = made.hosts["db"]
        data_dir = tmp_path_factory.mktemp("netns-redis")
        redis_process = db.run(
            "redis",
            redis_server.command(REDIS_PORT, data_dir, durable=False, bind=db.address),
            dict(os.environ),
            data_dir,
        )
        with redis.Redis(host=db.address, port=REDIS_PORT, socket_timeout=2) as probe:
            wait_for(
                lambda: db.call(_answers, probe),
                timeout_s=15,
                what="Redis on the db host",
            )
        yield made
    finally:
        if redis_process is not None:
            redis_process.stop()
        made.destroy()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


class Cluster:
    """The processes of one test, their settings and keys; all stopped at the end."""

    def __init__(self, network: Network, work_dir: Path, curve: bool) -> None:
        self.network = network
        self.hosts = network.hosts
        self.work_dir = work_dir
        self.curve = curve
        self.key_dir = work_dir / "keys"
        self.authorized = work_dir / "authorized"
        self.authorized.mkdir()
        keys.main([str(self.key_dir), "broker", "stranger", *LISTED])
        for name in LISTED:
            shutil.copy(self.key_dir / f"{name}.key", self.authorized)
        self.processes: list[ManagedProcess] = []
        self.brokers = ["broker-a"]
        db = self.hosts["db"]
        self.redis = redis.Redis(host=db.address, port=REDIS_PORT, socket_timeout=5)
        db.call(self.redis.flushall)

    def address(self, host: str, port: int) -> str:
        return f"tcp://{self.hosts[host].address}:{port}"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("TASKGATE_") and key not in ("PORT", "REDIS_URL")
        }
        env.update(
            REDIS_URL=f"redis://{self.hosts['db'].address}:{REDIS_PORT}/0",
            PORT=str(HTTP_PORT),
            WEB_CONCURRENCY="2",
            TASKGATE_BROKER_FRONTEND=",".join(
                self.address(name, FRONTEND_PORT) for name in self.brokers
            ),
            TASKGATE_BROKER_BACKEND=",".join(
                self.address(name, BACKEND_PORT) for name in self.brokers
            ),
            TASKGATE_WORKER_PROCESSES="2",
            TASKGATE_TASK_MODULES=(
                "worker.tasks,tests.e2e_tasks,tests.multihost_tasks,tools.chaos_tasks"
            ),
            TASKGATE_HEARTBEAT_INTERVAL_S="0.25",
            TASKGATE_HEARTBEAT_LIVENESS="3",
            TASKGATE_RECOVERY_INTERVAL_S="0.5",
            TASKGATE_RECOVERY_MIN_AGE_S="1",
            TASKGATE_REDIS_TIMEOUT_S="1",
            TASKGATE_SHUTDOWN_GRACE_S="2",
            TASKGATE_BROKER_LEASE_S="1.5",
            TASKGATE_LOG_LEVEL="INFO",
        )
        env.update(overrides)
        return env

    def _start(
        self, host: str, kind: str, args: list[str], env: dict[str, str]
    ) -> ManagedProcess:
        name = f"{kind}-{host}-{len(self.processes)}"
        process = self.hosts[host].run_python(name, args, env, self.work_dir)
        self.processes.append(process)
        return process

    def start_broker(self, host: str = "broker-a") -> ManagedProcess:
        env = self.env(
            TASKGATE_BROKER_BIND_FRONTEND=self.address(host, FRONTEND_PORT),
            TASKGATE_BROKER_BIND_BACKEND=self.address(host, BACKEND_PORT),
        )
        if self.curve:
            env.update(
                TASKGATE_CURVE_BROKER_KEY=str(self.key_dir / "broker.key_secret"),
                TASKGATE_CURVE_AUTHORIZED_DIR=str(self.authorized),
            )
        return self._start(host, "broker", ["-m", "worker.broker"], env)

    def client_env(self, key_name: str, **overrides: str) -> dict[str, str]:
        env = self.env(**overrides)
        if self.curve:
            env.update(
                TASKGATE_CURVE_BROKER_KEY=str(self.key_dir / "broker.key"),
                TASKGATE_CURVE_KEY=str(self.key_dir / f"{key_name}.key_secret"),
            )
        return env

    def start_pool(
        self, host: str, key_name: str = "", **overrides: str
    ) -> ManagedProcess:
        env = self.client_env(key_name or host, **overrides)
        env[HOST_VARIABLE] = host
        return self._start(host, "pool", ["-m", "worker"], env)

    def start_web(self) -> ManagedProcess:
        env = self.client_env("web")
        args = ["-m", "gunicorn", "-c", "conf/gunicorn.conf.py", "wsgi:app"]
        web = self._start("web", "web", args, env)
        wait_for(
            lambda: self.web_call(_healthy, self.url("/healthz"), web),
            timeout_s=30,
            interval_s=0.1,
            what="gunicorn on the web host",
        )
        return web

    def url(self, path: str) -> str:
        return f"http://{self.hosts['web'].address}:{HTTP_PORT}{path}"

    def web_call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``function`` from a thread on the web host (HTTP, Redis reads)."""
        return self.hosts["web"].call(function, *args, **kwargs)

    def post(self, path: str, body: dict[str, Any], **params: str) -> requests.Response:
        return self.web_call(
            requests.post, self.url(path), json=body, params=params, timeout=30
        )

    def record(self, task_id: str) -> dict[str, str]:
        fields = self.web_call(self.redis.hgetall, f"taskgate:task:{task_id}")
        return {key.decode(): value.decode() for key, value in fields.items()}

    def pool_identity(self, pool: ManagedProcess) -> str:
        """The identity a pool logs at start (it names the task owner in Redis)."""
        found = wait_for(
            lambda: re.search(r"worker pool started identity=(\S+)", pool.log()),
            timeout_s=30,
            what=f"{pool.name} to start",
        )
        return found.group(1)

    def wait_for_pools(self, count: int) -> None:
        """Wait until ``count`` pools have a live record in Redis."""
        wait_for(
            lambda: self.web_call(self.redis.zcard, "taskgate:workers") >= count,
            timeout_s=30,
            what=f"{count} worker pools to announce themselves",
        )

    def stop_all(self) -> None:
        """Stop every process, then close the Redis client."""
        for process in reversed(self.processes):
            process.stop()
        self.redis.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-4000:]}" for p in self.processes)


def _healthy(url: str, web: ManagedProcess) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except (requests.ConnectionError, requests.Timeout):
        assert web.alive(), web.log()
        return False


@pytest.fixture
def make_cluster(network: Network, tmp_path: Path) -> Iterator[Any]:
    """Clusters for one test; every process stopped afterwards, even on failure."""
    made: list[Cluster] = []

    def make(curve: bool = True) -> Cluster:
        work_dir = tmp_path / f"cluster{len(made)}"
        work_dir.mkdir()
        made.append(Cluster(network, work_dir, curve))
        return made[-1]

    yield make
    for cluster in made:
        cluster.stop_all()
    for host in network.hosts.values():
        host.plug()
