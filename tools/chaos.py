"""Chaos check: submit tasks while killing parts of a live stack; nothing may be lost.

``python -m tools.chaos --tasks 300`` starts a private stack on free loopback ports
(a durable Redis, the broker, a worker pool and gunicorn), submits ``--tasks``
tasks through the HTTP API as ``202``s while it kills, at random moments, worker
child processes, the whole worker pool, the broker and gunicorn's web processes,
and restarts what gunicorn does not restart itself. Then it lets the system drain
and prints one line::

    submitted N, succeeded S, failed F, cancelled C, stuck 0, lost 0, ran-twice D

``lost`` counts accepted tasks whose record is gone; ``stuck`` those that did not
end within the drain time; ``ran-twice`` those whose code ran more than once
(allowed: delivery is at least once). The exit status is 1 if any task is stuck or
lost. Every failure is listed with its cause. All traffic stays on 127.0.0.1, and
every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import requests

from tools import redis_server

ROOT = Path(__file__).resolve().parent.parent
FINAL = ("succeeded", "failed", "cancelled")


class Process:
    """One process (and its children) in its own session, logging to a file."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log_dir: Path
    ) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.popen = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                self.args,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the process and everything in its session."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def restart(self) -> None:
        self.kill()
        self.popen = self._spawn()

    def children(self) -> list[int]:
        try:
            with open(
                f"/proc/{self.popen.pid}/task/{self.popen.pid}/children"
            ) as found:
                return [int(pid) for pid in found.read().split()]
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(15)
        self.kill()


class Chaos:
    """The stack, the submitting clients and the killer, for one run."""

    def __init__(self, options: argparse.Namespace, work_dir: Path) -> None:
        self.options = options
        self.random = random.Random(options.seed)
        self.work_dir = work_dir
        self.journal = work_dir / "executions.txt"
        self.redis_port = redis_server.free_port()
        self.env = dict(os.environ)
        self.env.update(
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            PORT=str(redis_server.free_port()),
            WEB_CONCURRENCY="2",
            TASKGATE_HOST="127.0.0.1",
            TASKGATE_BROKER_FRONTEND=f"tcp://127.0.0.1:{redis_server.free_port()}",
            TASKGATE_BROKER_BACKEND=f"tcp://127.0.0.1:{redis_server.free_port()}",
            TASKGATE_WORKER_PROCESSES=str(options.workers),
            TASKGATE_TASK_MODULES="worker.tasks,tools.chaos_tasks",
            TASKGATE_HEARTBEAT_INTERVAL_S="0.25",
            TASKGATE_RECOVERY_INTERVAL_S="0.5",
            TASKGATE_RECOVERY_MIN_AGE_S="1",
            TASKGATE_REDIS_TIMEOUT_S="1",
            TASKGATE_LOG_LEVEL="WARNING",
        )
        self.base_url = f"http://127.0.0.1:{self.env['PORT']}"
        self.accepted: dict[str, str] = {}  # task id -> token
        self.refused = 0
        self.kills: collections.Counter[str] = collections.Counter()
        self.submitting = True
        self.started_at = time.monotonic()

    def start(self) -> None:
        self.redis = redis_server.start(
            self.redis_port, self.work_dir / "redis", durable=True
        )
        python = sys.executable
        self.broker = Process(
            "broker", [python, "-m", "worker.broker"], self.env, self.work_dir
        )
        self.pool = Process("pool", [python, "-m", "worker"], self.env, self.work_dir)
        self.web = Process(
            "web",
            [python, "-m", "gunicorn", "-c", "conf/gunicorn.conf.py", "wsgi:app"],
            self.env,
            self.work_dir,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                answer = requests.post(
                    self.base_url + "/v1/tasks/echo", json={}, timeout=5
                )
                if answer.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(
            "the stack did not come up within 60 s; logs in " + str(self.work_dir)
        )

    def stop(self) -> None:
        for process in (self.web, self.pool, self.broker):
            process.stop()
        self.redis.terminate()
        self.redis.wait(10)

    def submit(self, index: int) -> None:
        """Submit one task on schedule, retrying refusals and broken connections (bounded)."""
        due = self.started_at + index * self.options.duration_s / max(
            1, self.options.tasks
        )
        time.sleep(max(0.0, due - time.monotonic()))
        for attempt in range(100):
            token = f"{index}-{attempt}"
            body = {
                "token": token,
                "path": str(self.journal),
                "seconds": self.random.random() * self.options.task_seconds,
            }
            try:
                answer = requests.post(
                    self.base_url + "/v1/tasks/chaos.work",
                    json=body,
                    params={"wait": "0"},
                    timeout=10,
                )
            except requests.RequestException:
                answer = None
            if answer is not None and answer.status_code == 202:
                self.accepted[answer.json()["id"]] = token
                if self.random.random() < self.options.cancel_share:
                    self.cancel(answer.json()["id"])
                return
            time.sleep(0.2)
        self.refused += 1

    def cancel(self, task_id: str) -> None:
        # Whether it took, the record says at the end.
        with contextlib.suppress(requests.RequestException):
            requests.delete(f"{self.base_url}/v1/tasks/{task_id}", timeout=10)

    def kill_now_and_then(self) -> None:
        """Kill something every so often while clients submit, then make all whole."""
        while self.submitting:
            time.sleep(self.random.uniform(0.3, self.options.kill_every_s))
            target = self.random.choice(["child", "child", "pool", "broker", "web"])
            if target == "child" and self.pool.children():
                os.kill(self.random.choice(self.pool.children()), signal.SIGKILL)
            elif target == "pool":
                self.pool.restart()
            elif target == "broker":
                self.broker.kill()
                time.sleep(self.random.uniform(0, 1))
                self.broker.restart()
            elif target == "web" and self.web.children():
                os.kill(self.random.choice(self.web.children()), signal.SIGKILL)
            else:
                continue
            self.kills[target] += 1

    def drain(self) -> dict[str, dict[bytes, bytes] | None]:
        """Wait for every accepted task to end (or the drain time to pass); read them."""
        records: dict[str, dict[bytes, bytes] | None] = {}
        with redis.Redis(port=self.redis_port, socket_timeout=5) as client:
            deadline = time.monotonic() + self.options.drain_s
            pending = set(self.accepted)
            while pending and time.monotonic() < deadline:
                pipe = client.pipeline(transaction=False)
                ordered = sorted(pending)
                for task_id in ordered:
                    pipe.hgetall(f"taskgate:task:{task_id}")
                for task_id, fields in zip(ordered, pipe.execute(), strict=True):
                    records[task_id] = fields or None
                    if not fields or fields[b"status"].decode() in FINAL:
                        pending.discard(task_id)
                time.sleep(0.5)
        return records

    def report(self, records: dict[str, dict[bytes, bytes] | None]) -> bool:
        line, ok, causes = tally(self.accepted, records, read_runs(self.journal))
        print(f"kills: {dict(self.kills)}; refused after retries: {self.refused}")
        for cause, count in causes.most_common():
            print(f"failed x{count}: {cause}")
        print(line, flush=True)
        return ok


def read_runs(journal: Path) -> collections.Counter[str]:
    """How often each token's task code ran, from the journal the tasks append to."""
    if not journal.exists():
        return collections.Counter()
    return collections.Counter(journal.read_text().split())


def tally(
    accepted: dict[str, str],
    records: Mapping[str, dict[bytes, bytes] | None],
    runs: collections.Counter[str],
) -> tuple[str, bool, collections.Counter[str]]:
    """The summary line, whether nothing is stuck or lost, and the failure causes.

    ``accepted`` maps task id to token, ``records`` task id to its final Redis
    record (None if gone).
    """
    statuses: collections.Counter[str] = collections.Counter()
    causes: collections.Counter[str] = collections.Counter()
    ran_twice = 0
    for task_id, token in accepted.items():
        fields = records.get(task_id)
        if fields is None:
            statuses["lost"] += 1
            continue
        status = fields[b"status"].decode()
        statuses[status if status in FINAL else "stuck"] += 1
        if status == "failed":
            causes[fields.get(b"error", b"?").decode()] += 1
        if runs[token] > 1:
            ran_twice += 1

    line = (
        f"submitted {len(accepted)}, succeeded {statuses['succeeded']}, "
        f"failed {statuses['failed']}, cancelled {statuses['cancelled']}, "
        f"stuck {statuses['stuck']}, lost {statuses['lost']}, ran-twice {ran_twice}"
    )
    return line, statuses["stuck"] == 0 and statuses["lost"] == 0, causes


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Kill parts of a live stack; lose nothing."
    )
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--duration-s",
        type=float,
        default=15.0,
        help="spread the submissions over this long, so kills land among them",
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--task-seconds",
        type=float,
        default=0.05,
        help="each task sleeps up to this long",
    )
    parser.add_argument(
        "--kill-every-s",
        type=float,
        default=1.5,
        help="longest pause between two kills",
    )
    parser.add_argument("--cancel-share", type=float, default=0.02)
    parser.add_argument("--drain-s", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-logs", action="store_true")
    options = parser.parse_args()

    work_dir = Path(tempfile.mkdtemp(prefix="taskgate-chaos-"))
    chaos = Chaos(options, work_dir)
    try:
        chaos.start()
        chaos.started_at = time.monotonic()
        killer = threading.Thread(target=chaos.kill_now_and_then, daemon=True)
        killer.start()
        with ThreadPoolExecutor(max_workers=options.clients) as clients:
            list(clients.map(chaos.submit, range(options.tasks)))
        chaos.submitting = False
        killer.join(30)
        # Make the stack whole again: gunicorn restarts its own workers.
        for process in (chaos.broker, chaos.pool):
            if process.popen.poll() is not None:
                process.restart()
        ok = chaos.report(chaos.drain())
    finally:
        chaos.stop()
        if options.keep_logs:
            print(f"logs in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
