"""Prometheus metrics of one worker pool, on their own HTTP port.

The pool parent counts into :class:`PoolCounts` as tasks start and finish (an
addition, and a bisect for the run time); the exporter's thread turns the counts
and the pool's gauges into the text format when Prometheus scrapes. Children are
never asked: the parent sees every start, outcome and death already. A gevent-mode
pool is counted the same way, its slots being greenlets instead of processes.

As with the broker, the registry is private and the values plain integers, so a
``PROMETHEUS_MULTIPROC_DIR`` set for gunicorn changes nothing here.

Known limit: each pool needs its own port; two pools on one host given the same
``TASKGATE_WORKER_METRICS_PORT`` make the second one exit at start.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

# Upper bounds (seconds) of the run-time buckets: from quick calls up to the
# default time limit of 600 s.
RUN_TIME_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)


@dataclass(slots=True)
class RunTimes:
    """A histogram of one task name's run times: counts per bucket, and the sum."""

    # One count per bucket of RUN_TIME_BUCKETS, plus the last one for +Inf.
    counts: list[int] = field(default_factory=lambda: [0] * (len(RUN_TIME_BUCKETS) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        """Count one run of ``seconds``."""
        self.counts[bisect.bisect_left(RUN_TIME_BUCKETS, seconds)] += 1
        self.total_s += seconds


@dataclass(slots=True)
class PoolCounts:
    """What the pool parent counts; labels are tuples of values."""

    # (name,)
    started: Counter[tuple[str, ...]] = field(default_factory=Counter)
    # (name, status): outcomes written to Redis.
    finished: Counter[tuple[str, ...]] = field(default_factory=Counter)
    # (name,): attempts lost with their process, handed back to run again.
    attempts_lost: Counter[tuple[str, ...]] = field(default_factory=Counter)
    # (reason,): child processes replaced.
    child_restarts: Counter[tuple[str, ...]] = field(default_factory=Counter)
    # (operation,): Redis calls that failed.
    redis_errors: Counter[tuple[str, ...]] = field(default_factory=Counter)
    run_times: dict[str, RunTimes] = field(default_factory=dict)

    def observe_run(self, name: str, seconds: float) -> None:
        """Count one run of task ``name`` that took ``seconds``."""
        times = self.run_times.get(name)
        if times is None:
            times = self.run_times[name] = RunTimes()
        times.observe(seconds)


@dataclass(frozen=True, slots=True)
class PoolGauges:
    """The pool's state at one moment."""

    identity: str
    mode: str
    processes: int
    slots: int
    busy_slots: int
    backlog: int
    unwritten_results: int
    draining: bool


# Attribute of PoolCounts, metric name (``_total`` is added), labels, help.
COUNTERS = (
    ("started", "taskgate_pool_tasks_started", ["name"], "Tasks handed to a child"),
    (
        "finished",
        "taskgate_pool_tasks_finished",
        ["name", "status"],
        "Task attempts whose outcome was written to Redis, by final status",
    ),
    (
        "attempts_lost",
        "taskgate_pool_attempts_lost",
        ["name"],
        "Attempts lost with their child process or at shutdown, handed back",
    ),
    (
        "child_restarts",
        "taskgate_pool_child_restarts",
        ["reason"],
        "Child processes replaced: time_limit, cancelled, or died",
    ),
    (
        "redis_errors",
        "taskgate_pool_redis_errors",
        ["operation"],
        "Redis calls of the pool parent that failed",
    ),
)


class PoolCollector(Collector):
    """The pool's counters, run-time histograms and gauges, read at scrape time."""

    def __init__(self, counts: PoolCounts, gauges: Callable[[], PoolGauges]) -> None:
        self._counts = counts
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        """Yield the current values."""
        now = self._gauges()
        info = GaugeMetricFamily(
            "taskgate_pool_info",
            "This pool's identity and mode",
            labels=["identity", "mode"],
        )
        info.add_metric([now.identity, now.mode], 1)
        yield info
        for name, documentation, value in (
            ("processes", "Child processes", now.processes),
            ("slots", "Tasks the pool can run at once", now.slots),
            ("busy_slots", "Slots running a task", now.busy_slots),
            ("backlog", "Tasks received and not yet handed to a child", now.backlog),
            (
                "unwritten_results",
                "Outcomes kept in memory until Redis takes them",
                now.unwritten_results,
            ),
            ("draining", "1 while the pool takes no tasks", int(now.draining)),
        ):
            yield GaugeMetricFamily(f"taskgate_pool_{name}", documentation, value)

        for attribute, metric, labels, documentation in COUNTERS:
            family = CounterMetricFamily(metric, documentation, labels=labels)
            counter: Counter[tuple[str, ...]] = getattr(self._counts, attribute)
            for values, total in list(counter.items()):
                family.add_metric(list(values), total)
            yield family
        yield self._run_times()

    def _run_times(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "taskgate_pool_task_run_seconds",
            "Time from handing a task to a child to its outcome, by task name",
            labels=["name"],
        )
        for name, times in list(self._counts.run_times.items()):
            counts = list(times.counts)
            buckets = []
            cumulative = 0
            for bound, count in zip(
                (*RUN_TIME_BUCKETS, float("inf")), counts, strict=True
            ):
                cumulative += count
                buckets.append((_bound_text(bound), float(cumulative)))
            family.add_metric([name], buckets, times.total_s)
        return family


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def serve_pool_metrics(
    counts: PoolCounts, gauges: Callable[[], PoolGauges], host: str, port: int
) -> None:
    """Serve ``/metrics`` of one pool on ``host:port`` from a daemon thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(counts, gauges))
    start_http_server(port, addr=host, registry=registry)
    logger.info("worker pool metrics at http://%s:%d/metrics", host, port)
