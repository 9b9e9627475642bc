"""Prometheus metrics of the broker, on their own HTTP port.

The values are read from the broker's state when Prometheus scrapes, by the
exporter's thread, so the routing loop does no metrics work per message. Reading
sizes of dicts the loop changes is safe under the GIL; the numbers of one scrape
may be a message apart from each other.

The registry is a private one holding only this collector, so a
``PROMETHEUS_MULTIPROC_DIR`` in the broker's environment (meant for gunicorn)
changes nothing here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from worker.broker import Broker

logger = logging.getLogger(__name__)


class BrokerCollector(Collector):
    """Gauges of one broker's queues and worker pools, read at scrape time."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the current gauges."""
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


def serve_broker_metrics(broker: Broker, host: str, port: int) -> None:
    """Serve ``/metrics`` of ``broker`` on ``host:port`` from a daemon thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(broker))
    start_http_server(port, addr=host, registry=registry)
    logger.info("broker metrics at http://%s:%d/metrics", host, port)
