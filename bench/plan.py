"""What one benchmark invocation measures and how hard: the parsed command line.

The smoke plan keeps the same code paths with tiny numbers (about a second per
row, one run, a handful of connections), so CI proves the harness still works
without spending minutes or asserting any speed.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

# Row groups, in the order they run; ``--only`` takes these names.
GROUPS = (
    "ceiling",
    "latency",
    "sync",
    "async",
    "celery",
    "celery-gevent",
    "broker",
    "concurrency",
    "scaling",
)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a row needs to know about this invocation."""

    duration_s: int
    runs: int
    connections: int
    warmup_s: int
    web_processes: int
    worker_processes: int
    wrk_threads: int
    groups: frozenset[str]
    concurrency: tuple[int, ...]
    sleep_s: float
    hash_megabytes: int
    scaling_processes: tuple[int, ...]
    broker_window: int
    log_dir: Path
    smoke: bool
    profile: bool
    worker_env: dict[str, str] = field(default_factory=dict)

    def wants(self, *groups: str) -> bool:
        """True if any of ``groups`` is to be measured."""
        return any(group in self.groups for group in groups)


def parse(argv: list[str] | None = None) -> tuple[Plan, argparse.Namespace]:
    """The plan for ``argv``, and the raw options (for the report's options)."""
    parser = argparse.ArgumentParser(
        prog="bin/bench", description="Benchmark taskgate against a ceiling and Celery."
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (10)")
    parser.add_argument("--runs", type=int, default=3, help="runs per row (3)")
    parser.add_argument(
        "--connections", type=int, default=64, help="wrk connections (64)"
    )
    parser.add_argument("--web-processes", type=int, default=2, help="gunicorn -w (2)")
    parser.add_argument(
        "--worker-processes", type=int, default=2, help="worker processes (2)"
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated row groups: {','.join(GROUPS)}"
    )
    parser.add_argument(
        "--concurrency", default="2000,10000", help="simultaneous requests (2000,10000)"
    )
    parser.add_argument(
        "--sleep", type=float, default=15.0, help="sleep task seconds (15)"
    )
    parser.add_argument("--megabytes", type=int, default=64, help="hash task size (64)")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra setting for the gevent-mode worker pool (repeatable)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=Path(".taskgate/bench"),
        help="where every process's output goes (default: .taskgate/bench)",
    )
    parser.add_argument("--results", type=Path, help="write the Markdown report here")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the taskgate web process (sync row)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="about a second per row; check answers only",
    )
    options = parser.parse_args(argv)

    groups = _groups(parser, options.only)
    worker_env = dict(item.split("=", 1) for item in options.worker_env if "=" in item)
    cpus = os.cpu_count() or 1
    if options.smoke:
        return Plan(
            duration_s=1,
            runs=1,
            connections=4,
            warmup_s=0,
            web_processes=options.web_processes,
            worker_processes=options.worker_processes,
            wrk_threads=1,
            groups=groups,
            concurrency=(20,),
            sleep_s=0.5,
            hash_megabytes=1,
            scaling_processes=(1, 2),
            broker_window=16,
            log_dir=options.log_dir,
            smoke=True,
            profile=False,
            worker_env=worker_env,
        ), options

    return Plan(
        duration_s=options.duration,
        runs=options.runs,
        connections=options.connections,
        warmup_s=min(2, options.duration),
        web_processes=options.web_processes,
        worker_processes=options.worker_processes,
        wrk_threads=options.wrk_threads,
        groups=groups,
        concurrency=tuple(int(n) for n in options.concurrency.split(",") if n),
        sleep_s=options.sleep,
        hash_megabytes=options.megabytes,
        scaling_processes=tuple(sorted({1, 2, cpus})),
        broker_window=256,
        log_dir=options.log_dir,
        smoke=False,
        profile=options.profile,
        worker_env=worker_env,
    ), options


def _groups(parser: argparse.ArgumentParser, only: str) -> frozenset[str]:
    if not only:
        return frozenset(GROUPS)
    chosen = frozenset(name.strip() for name in only.split(",") if name.strip())
    unknown = chosen - set(GROUPS)
    if unknown:
        parser.error(f"unknown row groups: {', '.join(sorted(unknown))}")
    return chosen
