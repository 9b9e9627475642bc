"""``python -m bench``: start each system in turn, measure its rows, print one table.

Systems run one at a time on the same machine, each stopped before the next
starts, so no row competes with another system for the two cores. One failing
system (a peer that will not start) is reported and the others still run; the
exit status is 1 if anything failed. ``--smoke`` additionally requires every row
to have answered without errors.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from bench import breakdown, profile, report, wrk
from bench.broker_rows import broker_rows
from bench.concurrency_rows import MISSING, concurrency_rows
from bench.http_rows import ceiling_rows, celery_rows, echo_load, taskgate_rows
from bench.plan import Plan, parse
from bench.procs import raise_fd_limit
from bench.results import Row
from bench.scaling_rows import scaling_rows
from bench.systems import (
    WebConfig,
    celery_backlog,
    start_ceiling,
    start_celery,
    start_redis,
)
from bench.taskgate import Taskgate

logger = logging.getLogger(__name__)

# The latency breakdown: this many sequential calls, or this long, at most.
BREAKDOWN_CALLS = 2000
BREAKDOWN_LIMIT_S = 20.0
SMOKE_BREAKDOWN_CALLS = 20

# Table order: row key prefixes, in the order of the brief's numbering.
ORDER = (
    "ceiling@",
    "sync@",
    "async-",
    "celery-prefork",
    "celery-gevent",
    "broker-",
    "concurrency@",
    "scaling@",
)

Step = Callable[[ExitStack, list[Row]], None]


def main(argv: list[str] | None = None) -> int:
    """Run the plan the command line asks for; the process exit status."""
    plan, options = parse(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # A TERM (timeout, CI) unwinds the ExitStacks, which stop every process.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    fd_limit = raise_fd_limit()
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    logger.info("logs in %s; open-file limit %d", plan.log_dir, fd_limit)

    started = time.monotonic()
    load_before = os.getloadavg()
    rows, failures, extras = run(plan)
    rows.sort(key=_rank)
    print()
    print(report.render_text(rows))
    for line in extras:
        print(line)
    if plan.smoke:
        failures += smoke_failures(rows)
    for failure in failures:
        print(f"FAILED: {failure}")
    elapsed_s = time.monotonic() - started
    print(f"bench: {len(rows)} rows in {elapsed_s:.0f} s")

    if options.results is not None:
        command = "bin/bench " + shlex.join(argv if argv is not None else sys.argv[1:])
        text = report.render_results(rows, command, plan, failures, extras, load_before)
        Path(options.results).write_text(text)
        print(f"bench: wrote {options.results}")
    return 1 if failures else 0


def run(plan: Plan) -> tuple[list[Row], list[str], list[str]]:
    """Measure every wanted group; rows, failures, and extra report lines."""
    rows: list[Row] = []
    failures: list[str] = []
    extras: list[str] = []
    web = WebConfig(processes=plan.web_processes)
    with ExitStack() as stack:
        redis_url = start_redis(stack, plan.log_dir)

        def ceiling(inner: ExitStack, out: list[Row]) -> None:
            base_url, meter = start_ceiling(inner, plan.log_dir, web)
            out += ceiling_rows(base_url, plan, meter)

        def taskgate(inner: ExitStack, out: list[Row]) -> None:
            system = Taskgate(
                inner, f"{redis_url}/0", plan.log_dir, web, plan.worker_processes
            )
            out += taskgate_rows(system, plan)
            if plan.wants("latency"):
                extras.append(
                    breakdown.measure(
                        system.base_url,
                        system.redis_url,
                        SMOKE_BREAKDOWN_CALLS if plan.smoke else BREAKDOWN_CALLS,
                        BREAKDOWN_LIMIT_S,
                    )
                )
            if plan.profile:
                extras.append(_profile(system, plan))
            if plan.wants("scaling"):
                out += scaling_rows(system, plan)

        def celery(pool: str) -> Step:
            def step(inner: ExitStack, out: list[Row]) -> None:
                base_url, meter = start_celery(
                    inner, redis_url, plan.log_dir, web, plan.worker_processes, pool
                )
                backlog = functools.partial(celery_backlog, redis_url)
                out += celery_rows(base_url, plan, pool, backlog, meter)

            return step

        steps: list[tuple[tuple[str, ...], Step]] = [
            (("ceiling", "latency"), ceiling),
            (("sync", "latency", "async", "scaling"), taskgate),
            (("celery",), celery("prefork")),
            (("celery-gevent",), celery("gevent")),
            (("broker",), lambda inner, out: out.extend(broker_rows(plan))),
            (
                ("concurrency",),
                lambda inner, out: out.extend(concurrency_rows(inner, redis_url, plan)),
            ),
        ]
        for groups, step in steps:
            if not plan.wants(*groups):
                continue
            try:
                with ExitStack() as inner:
                    step(inner, rows)
            # Any failure of one system is reported, and must not hide the others.
            except Exception as exc:
                logger.exception("%s failed", groups[0])
                failures.append(f"{'/'.join(groups)}: {type(exc).__name__}: {exc}")
    return rows, failures, extras


def smoke_failures(rows: list[Row]) -> list[str]:
    """What the smoke mode found wrong: rows without answers or with errors."""
    failures = []
    for row in rows:
        if row.missing is not None:
            if row.missing != MISSING:
                failures.append(f"{row.label}: {row.missing}")
            continue
        if not row.samples or not all(sample.count > 0 for sample in row.samples):
            failures.append(f"{row.label}: no answers")
        if row.errors:
            failures.append(f"{row.label}: {row.errors} errors")
    return failures


def _profile(system: Taskgate, plan: Plan) -> str:
    pid = system.web_worker_pids()[0]
    load = echo_load(system.base_url, plan, plan.connections)
    logger.info("profiling web process pid=%d with py-spy", pid)
    summary = profile.record(pid, load, plan.log_dir)
    web = f"\npy-spy, taskgate sync echo, {plan.connections} conn, web pid {pid}:\n{summary}"

    logger.info("profiling the worker pool's parent with cProfile")
    stats_path = plan.log_dir / "taskgate-pool.prof"
    system.restart_pool(plan.worker_processes, profile_to=stats_path)
    system.wait_serving("echo", {"n": 0})
    sample = wrk.run(load)
    # Stopping the profiled pool makes cProfile write its file.
    system.restart_pool(plan.worker_processes)
    return web + "\n\n" + profile.summarize_pool(stats_path, sample.count)


def _rank(row: Row) -> tuple[int, int]:
    for index, prefix in enumerate(ORDER):
        if row.key.startswith(prefix):
            # Within a group: more connections or more processes last, 1-conn rows after.
            return index, 1 if row.key.endswith("@1") and prefix != "scaling@" else 0
    return len(ORDER), 0


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
