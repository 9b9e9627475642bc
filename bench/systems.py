"""Start the systems under test: Redis, the ceiling app, the Celery peer.

Every web server runs as taskgate's does, ``gunicorn -c conf/gunicorn.conf.py``
(gevent worker, worker_connections, keepalive, backlog), with only the WSGI
module, the bind address (loopback, a free port) and the process count set on
the command line, where they override the file.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import redis

from bench import cpu, probe
from bench.procs import PYTHON, Service, child_env, free_port, wait_until
from tools import redis_server

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What every web server of the benchmark shares."""

    processes: int = 2
    # None keeps conf/gunicorn.conf.py's backlog.
    backlog: int | None = None


def gunicorn_args(module: str, port: int, web: WebConfig) -> list[str]:
    """The gunicorn command line of one web server under test."""
    args = [PYTHON, "-m", "gunicorn", "-c", "conf/gunicorn.conf.py"]
    args += ["-b", f"127.0.0.1:{port}", "-w", str(web.processes)]
    if web.backlog is not None:
        args += ["--backlog", str(web.backlog)]
    return [*args, module]


def start_redis(stack: ExitStack, log_dir: Path) -> str:
    """A private, non-durable Redis on a free port; its URL without a database."""
    port = free_port()
    process = redis_server.start(port, log_dir / "redis")

    def stop() -> None:
        process.terminate()
        process.wait(10)

    stack.callback(stop)
    return f"redis://127.0.0.1:{port}"


def flush(url: str) -> None:
    """Empty one Redis database, so a row starts from the same state."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def start_web(
    stack: ExitStack,
    name: str,
    module: str,
    env: dict[str, str],
    log_dir: Path,
    web: WebConfig,
) -> tuple[Service, str]:
    """gunicorn serving ``module``; returns it and its base URL once it answers."""
    port = free_port()
    env = {**env, "PORT": str(port), "WEB_CONCURRENCY": str(web.processes)}
    service = Service(name, gunicorn_args(module, port, web), env, log_dir)
    stack.callback(service.stop)
    base_url = f"http://127.0.0.1:{port}"

    def listening() -> bool:
        service.check_alive()
        try:
            probe.call("GET", base_url + "/", timeout_s=1)
        except OSError:
            return False
        return True

    wait_until(listening, STARTUP_TIMEOUT_S, f"{name} to listen")
    return service, base_url


def start_ceiling(
    stack: ExitStack, log_dir: Path, web: WebConfig
) -> tuple[str, cpu.Meter]:
    """The bare Flask app; its base URL and CPU meter."""
    service, base_url = start_web(
        stack, "ceiling-web", "bench.ceiling_app:app", child_env(), log_dir, web
    )
    return base_url, {"web": cpu.process_tree_s(service.pid)}


def start_celery(
    stack: ExitStack,
    redis_url: str,
    log_dir: Path,
    web: WebConfig,
    workers: int,
    pool: str,
) -> tuple[str, cpu.Meter]:
    """Celery workers and their Flask front; the front's base URL and CPU meter.

    ``pool`` is ``prefork`` (one worker with ``workers`` child processes) or
    ``gevent`` (``workers`` worker processes, each running many greenlets).
    """
    broker_url, result_url = f"{redis_url}/1", f"{redis_url}/2"
    flush(broker_url)
    flush(result_url)
    env = child_env(
        BENCH_CELERY_BROKER_URL=broker_url, BENCH_CELERY_RESULT_URL=result_url
    )
    base = [PYTHON, "-m", "celery", "-A", "bench.celery_app", "worker"]
    # No gossip, mingle or heartbeat: worker-to-worker chatter that only
    # slows the start and has no work to do on one machine.
    quiet = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    if pool == "prefork":
        commands = [
            [*base, "-P", "prefork", "-c", str(workers), "-n", "prefork@bench", *quiet]
        ]
    else:
        commands = [
            [*base, "-P", "gevent", "-c", "100", "-n", f"gevent{i}@bench", *quiet]
            for i in range(workers)
        ]
    workers_s = []
    for index, args in enumerate(commands):
        service = Service(f"celery-{pool}-{index}", args, env, log_dir)
        stack.callback(service.stop)
        workers_s.append(cpu.process_tree_s(service.pid))

    front, base_url = start_web(
        stack, f"celery-{pool}-web", "bench.celery_web:app", env, log_dir, web
    )
    wait_until(
        lambda: (
            probe.call("POST", base_url + "/v1/tasks/echo", {"n": 0}, 5).status == 200
        ),
        STARTUP_TIMEOUT_S,
        "Celery workers to answer",
        interval_s=0.5,
    )
    meter: cpu.Meter = {
        "web": cpu.process_tree_s(front.pid),
        "celery": lambda: sum(read() for read in workers_s),
        "redis": cpu.redis_s(redis_url),
    }
    return base_url, meter


def celery_backlog(redis_url: str) -> int:
    """Tasks still waiting in Celery's default queue."""
    client = redis.Redis.from_url(f"{redis_url}/1")
    try:
        return int(client.llen("celery"))
    finally:
        client.close()
