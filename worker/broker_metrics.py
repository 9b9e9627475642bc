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


class BrokerCollector(Collector):
    """Gauges of one broker's queues and worker pools, and its counters."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def collect(self) -> Iterator[Metric]:
        """Yield the current gauges and counters."""
        stats = self._broker.stats()
        for name, documentation, value in (
            ("waiting_tasks", "Tasks queued in the broker", stats.waiting_tasks),
            (
                "waiting_bytes",
                "Payload bytes of the tasks queued in the broker",
                stats.waiting_bytes,
            ),
            (
                "running_tasks",
                "Tasks handed to a worker pool and not yet replied",
                stats.running_tasks,
            ),
            ("live_pools", "Worker pools the broker hears from", stats.live_pools),
            ("free_slots", "Idle task slots across live pools", stats.free_slots),
        ):
            yield GaugeMetricFamily(f"taskgate_broker_{name}", documentation, value)

        yield from self._per_name()
        counts = self._broker.counts
        for attribute, metric, labels, documentation in COUNTERS:
            family = CounterMetricFamily(metric, documentation, labels=labels)
            counter: Counter[tuple[str, ...]] = getattr(counts, attribute)
            for values, total in list(counter.items()):
                family.add_metric(list(values), total)
            yield family

    def _per_name(self) -> Iterator[Metric]:
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
        for name, row in sorted(self._broker.stats_by_name().items()):
            depth.add_metric([name], row.waiting)
            idle_pools.add_metric([name], row.idle_pools)
            idle_slots.add_metric([name], row.idle_slots)
        yield from (depth, idle_pools, idle_slots)


def serve_broker_metrics(broker: Broker, host: str, port: int) -> None:
    """Serve ``/metrics`` of ``broker`` on ``host:port`` from a daemon thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(broker))
    start_http_server(port, addr=host, registry=registry)
    logger.info("broker metrics at http://%s:%d/metrics", host, port)
