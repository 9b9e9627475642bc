"""The concurrency rows: N simultaneous synchronous ``sleep`` calls to ONE web process.

This is the claim in the README ("one web process holds thousands of waiting
requests"): every request waits ``sleep_s`` seconds for its task, so all N are
open at once. It only means something when the worker pool runs many tasks per
process, the gevent mode (``TASKGATE_WORKER_MODE=gevent``) that is being added to
the product. Each worker process then runs up to N / worker processes tasks at
once (``TASKGATE_WORKER_CONCURRENCY``), so the pool as a whole holds all N. When
the running product does not know that setting, or its tasks
do not run concurrently, the rows say so instead of failing. In smoke mode the
client and the memory sampler are still exercised, on as many requests as there
are worker processes.

The client is :mod:`bench.flood` in its own process; the web process's resident
memory is sampled from /proc while it runs.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from bench import probe
from bench.http_rows import drain_backlog
from bench.plan import Plan
from bench.procs import PYTHON, StartError, wait_until
from bench.results import Row, Sample
from bench.systems import WebConfig
from bench.taskgate import Taskgate
from conf.settings import Settings

logger = logging.getLogger(__name__)

MISSING = "n/a: worker gevent mode missing"
SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
PROBE_TASKS_PER_PROCESS = 10
PROBE_SLEEP_S = 1.0
# Connect storms and dispatch of thousands of tasks take a while on 2 cores.
FLOOD_MARGIN_S = 60.0
MIB = 1024 * 1024


def concurrency_rows(stack: ExitStack, redis_url: str, plan: Plan) -> list[Row]:
    """One row per N in ``plan.concurrency``: requests completed with the right result."""
    rows = [
        Row(
            f"concurrency@{count}",
            f"taskgate sync sleep {plan.sleep_s:g}s x {count}, 1 web process",
            "completed",
            reference=count,
        )
        for count in plan.concurrency
    ]
    if "worker_mode" not in Settings.model_fields:
        _mark_missing(rows, "TASKGATE_WORKER_MODE is not a setting of this product")
        if plan.smoke:
            _exercise_client(stack, redis_url, plan, {})
        return rows

    backlog = max(plan.concurrency)
    somaxconn_note = _raise_somaxconn(stack, backlog)
    taskgate = _start(stack, redis_url, plan, backlog, _gevent_settings(plan))
    if not _runs_concurrently(taskgate, plan):
        _mark_missing(
            rows, "tasks did not run concurrently in TASKGATE_WORKER_MODE=gevent"
        )
        return rows

    for row, count in zip(rows, plan.concurrency, strict=True):
        logger.info("measuring %s (%d runs)", row.label, plan.runs)
        peaks = []
        for _ in range(plan.runs):
            sample, peak_rss = _flood_once(taskgate, count, plan.sleep_s)
            row.samples.append(sample)
            peaks.append(peak_rss)
            drain_backlog(taskgate.unfinished, "taskgate")
        row.notes.append(f"peak web RSS {max(peaks) / MIB:.0f} MiB")
        row.notes.append("ratio = completed / N; latency of completed requests")
        row.notes.append(somaxconn_note)
    return rows


def _gevent_settings(plan: Plan) -> dict[str, str]:
    return {
        "TASKGATE_WORKER_MODE": "gevent",
        "TASKGATE_WORKER_CONCURRENCY": str(
            -(-max(plan.concurrency) // plan.worker_processes)
        ),
        # The wait must outlast the sleep plus the dispatch of every task, which
        # for 10,000 requests on one process takes seconds of its CPU; this row
        # is about holding requests, not about a router's 30 s cut.
        "TASKGATE_WAIT_MAX_S": "120",
        "TASKGATE_WAIT_DEFAULT_S": "120",
        "TASKGATE_QUEUE_LIMIT": str(2 * max(plan.concurrency)),
        **plan.worker_env,
    }


def _start(
    stack: ExitStack, redis_url: str, plan: Plan, backlog: int, settings: dict[str, str]
) -> Taskgate:
    web = WebConfig(processes=1, backlog=backlog)
    return Taskgate(
        stack, f"{redis_url}/0", plan.log_dir, web, plan.worker_processes, settings
    )


def _mark_missing(rows: list[Row], reason: str) -> None:
    for row in rows:
        row.missing = MISSING
        row.notes.append(reason)


def _exercise_client(
    stack: ExitStack, redis_url: str, plan: Plan, settings: dict[str, str]
) -> None:
    """Smoke only: run the flood client on one request per (prefork) worker process."""
    taskgate = _start(stack, redis_url, plan, 128, settings)
    sample, _ = _flood_once(taskgate, plan.worker_processes, plan.sleep_s)
    if sample.errors:
        raise probe.ProbeError(f"flood client: {sample.errors} requests failed")


def _runs_concurrently(taskgate: Taskgate, plan: Plan) -> bool:
    """Submit many 1 s sleeps at once; True if they all end in about a second."""
    count = PROBE_TASKS_PER_PROCESS * plan.worker_processes
    for _ in range(count):
        answer = probe.call(
            "POST",
            taskgate.base_url + "/v1/tasks/sleep?wait=0",
            {"seconds": PROBE_SLEEP_S},
        )
        probe.expect(answer, 202, "taskgate async sleep")
    try:
        wait_until(
            lambda: taskgate.unfinished() == 0, 3 * PROBE_SLEEP_S, "sleeps to end"
        )
    except StartError:
        drain_backlog(taskgate.unfinished, "taskgate")
        return False
    return True


def _flood_once(taskgate: Taskgate, count: int, sleep_s: float) -> tuple[Sample, int]:
    """One flood of ``count`` sync sleeps; the sample and the web process's peak RSS."""
    web_pid = taskgate.web_worker_pids()[0]
    port = urlsplit(taskgate.base_url).port
    timeout_s = sleep_s + FLOOD_MARGIN_S
    args = [
        PYTHON,
        "-m",
        "bench.flood",
        "--port",
        str(port),
        "--path",
        "/v1/tasks/sleep",
    ]
    args += [
        "--body",
        json.dumps({"seconds": sleep_s}),
        "--expect",
        json.dumps({"slept": sleep_s}),
    ]
    args += ["--count", str(count), "--timeout-s", str(timeout_s)]

    sampler = RssSampler(web_pid)
    sampler.start()
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout_s + 60, check=True
        )
    finally:
        sampler.stop()
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    if summary["ok"] != count:
        logger.warning("flood of %d: %s", count, summary["outcomes"])
    sample = Sample(
        rate=summary["ok"],
        p50_ms=None if summary["p50_s"] is None else summary["p50_s"] * 1000,
        p99_ms=None if summary["p99_s"] is None else summary["p99_s"] * 1000,
        errors=count - summary["ok"],
        count=summary["ok"],
    )
    return sample, sampler.peak_rss


class RssSampler:
    """Samples one process's resident memory every 50 ms in a thread; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self._process = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_rss = 0

    def start(self) -> None:
        """Begin sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Take a last sample and stop."""
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            try:
                self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            if self._stop.wait(self._interval_s):
                return


def _raise_somaxconn(stack: ExitStack, backlog: int) -> str:
    """Lift the kernel's listen-queue cap to ``backlog`` if allowed; say what happened."""
    try:
        current = int(SOMAXCONN.read_text())
    except OSError:
        return "somaxconn unreadable"
    if current >= backlog:
        return f"somaxconn {current}"
    try:
        SOMAXCONN.write_text(str(backlog))
    except OSError as exc:
        return f"somaxconn stays {current} (cannot raise: {exc.strerror})"
    stack.callback(SOMAXCONN.write_text, str(current))
    return f"somaxconn raised {current} -> {backlog} for the run"
