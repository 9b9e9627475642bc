"""Prometheus metrics of the broker, on their own HTTP port.

Gauges are read from the broker's state when Prometheus scrapes, by the exporter's
thread; counters are plain integers the routing loop adds to (:class:`BrokerCounts`),
so the loop does no more per message than an addition. Reading sizes of dicts the
loop changes is safe under the GIL; the numbers of one scrape may be a message
apart from each other.

The registry is a private one holding only this collector, so a
``PROMETHEUS_MULTIPROC_DIR`` in the broker's environment (meant for gunicorn)
changes nothing here.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from worker.broker import Broker

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class BrokerCounts:
    """Events the broker counts as they happen; labels are tuples of values.

    Task names come from web processes that checked them against the names live
    pools announced, so the ``name`` labels stay few.
    """

    # (name,)
    accepted: Counter[tuple[str, ...]] = field(default_factory=Counter)
    # (name, reason)
    rejected: Counter[tuple[str, ...]] = field(default_factory=Counter)
    # (name, reason): a task queued again for another attempt.
    requeued: Counter[tuple[str, ...]] = field(default_factory=Counter)
    # (reason,): "missed_heartbeats", "unreachable" or "left".
    pools_forgotten: Counter[tuple[str, ...]] = field(default_factory=Counter)
    # (operation,): Redis calls of recovery that failed.
    redis_errors: Counter[tuple[str, ...]] = field(default_factory=Counter)
    # (side, kind): messages dropped or not delivered.
    message_errors: Counter[tuple[str, ...]] = field(default_factory=Counter)


# Attribute of BrokerCounts, metric name (``_total`` is added), labels, help.
COUNTERS = (
    (
        "accepted",
        "taskgate_broker_accepted_tasks",
        ["name"],
        "Tasks the broker accepted from web processes",
    ),
    (
        "rejected",
        "taskgate_broker_rejected_tasks",
        ["name", "reason"],
        "Tasks the broker refused (queue full)",
    ),
    (
        "requeued",
        "taskgate_broker_requeued_tasks",
        ["name", "reason"],
        "Tasks queued again: handed back by a pool (pool_returned), taken from a "
        "lost pool (worker_lost) or found ownerless in Redis (recovered)",
    ),
    (
        "pools_forgotten",
        "taskgate_broker_pools_forgotten",
        ["reason"],
        "Worker pools dropped: missed heartbeats, unreachable, or left",
    ),
    (
        "redis_errors",
        "taskgate_broker_redis_errors",
        ["operation"],
        "Redis calls of the broker that failed",
    ),
    (
        "message_errors",
        "taskgate_broker_message_errors",
        ["side", "kind"],
        "Messages dropped as malformed or not delivered to a peer",
    ),
)


# Gauges of the broker's state: name (after ``taskgate_broker_``) and help.
GAUGES = (
    ("waiting_tasks", "Tasks queued in the broker"),
    ("waiting_bytes", "Payload bytes of the tasks queued in the broker"),
    ("running_tasks", "Tasks handed to a worker pool and not yet replied"),
    ("live_pools", "Worker pools the broker hears from"),
    ("free_slots", "Idle task slots across live pools"),
)


class BrokerCollector(Collector):
    """Gauges of one broker's queues and worker pools, and its counters.

    With a standby broker the routing :class:`Broker` changes at each activation
    and is None while standing by: ``broker`` is then set by the standby loop, and
    a scrape reports zeros and ``taskgate_broker_active 0``.
    """

    def __init__(self, broker: Broker | None) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        """Yield the current gauges and counters."""
        broker = self.broker  # read once: the standby loop may swap it meanwhile
        yield GaugeMetricFamily(
            "taskgate_broker_active",
            "1 while this broker routes (holds the lease with a standby), else 0",
            1 if broker is not None else 0,
        )
        sizes = (0, 0, 0, 0, 0)
        if broker is not None:
            stats = broker.stats()
            sizes = (
                stats.waiting_tasks,
                stats.waiting_bytes,
                stats.running_tasks,
                stats.live_pools,
                stats.free_slots,
            )
        for (name, documentation), value in zip(GAUGES, sizes, strict=True):
            yield GaugeMetricFamily(f"taskgate_broker_{name}", documentation, value)

        yield from self._per_name(broker)
        # A fresh broker at each activation counts from zero (a counter reset).
        counts = broker.counts if broker is not None else BrokerCounts()
        for attribute, metric, labels, documentation in COUNTERS:
            family = CounterMetricFamily(metric, documentation, labels=labels)
            counter: Counter[tuple[str, ...]] = getattr(counts, attribute)
            for values, total in list(counter.items()):
                family.add_metric(list(values), total)
            yield family

    def _per_name(self, broker: Broker | None) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "taskgate_broker_queue_depth",
            "Tasks waiting in the broker, by task name",
            labels=["name"],
        )
        idle_pools = GaugeMetricFamily(
            "taskgate_broker_idle_pools",
            "Pools with a free slot that serve the task name",
            labels=["name"],
        )
        idle_slots = GaugeMetricFamily(
            "taskgate_broker_idle_slots",
            "Free slots of the pools that serve the task name (a pool serving "
            "several names counts its slots for each)",
            labels=["name"],
        )
        by_name = broker.stats_by_name() if broker is not None else {}
        for name, row in sorted(by_name.items()):
            depth.add_metric([name], row.waiting)
            idle_pools.add_metric([name], row.idle_pools)
            idle_slots.add_metric([name], row.idle_slots)
        yield from (depth, idle_pools, idle_slots)


def serve_broker_metrics(
    broker: Broker | None, host: str, port: int
) -> BrokerCollector:
    """Serve ``/metrics`` of ``broker`` on ``host:port`` from a daemon thread."""
    collector = BrokerCollector(broker)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    start_http_server(port, addr=host, registry=registry)
    logger.info("broker metrics at http://%s:%d/metrics", host, port)
    return collector
