"""Prometheus metrics of the web processes, served at ``GET /metrics``.

Under gunicorn every worker process counts on its own; prometheus-client's
multiprocess mode keeps each process's values in files under
``PROMETHEUS_MULTIPROC_DIR`` (set up by ``conf/gunicorn.conf.py``) and a scrape of
any one worker sums them all. Outside gunicorn (``flask run``, in-process tests) the
directory is unset and the metrics are this process's own.

Labels are bounded: ``route`` is the URL rule (``/v1/tasks/<task_id>``), never the
path, or ``unmatched`` for a path no route has; task ``name`` is counted only once
the broker accepted the task, so only names live workers announced appear.

Known limit: the latency of an event stream (``/v1/tasks/<id>/events``) is the
time to its first byte, not the stream's life, since Flask's ``after_request``
runs before a streamed body is sent.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from conf.settings import Settings

metrics = Blueprint("metrics", __name__)

REQUESTS = Counter(
    "taskgate_http_requests",
    "HTTP requests answered, by route, method and status",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "taskgate_http_request_duration_seconds",
    "Time from a request's start to its answer, by route and method",
    ["route", "method"],
    # Synchronous calls wait up to TASKGATE_WAIT_MAX_S (25 s by default).
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60),
)
TASKS_SUBMITTED = Counter(
    "taskgate_tasks_submitted",
    "Tasks the broker accepted from this API, by task name",
    ["name"],
)
UNAVAILABLE = Counter(
    "taskgate_unavailable_answers",
    "503 answers, by cause: redis, broker or queue_full",
    ["cause"],
)


def install_metrics(app: Flask) -> None:
    """Time and count every request, and serve ``/metrics``."""

    @app.before_request
    def start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count_request(response: Response) -> Response:
        started = g.get("metrics_started")
        route = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        if started is not None:
            LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
        return response

    app.register_blueprint(metrics)


def count_submitted(name: str) -> None:
    """Count one task of ``name`` accepted by the broker."""
    TASKS_SUBMITTED.labels(name).inc()


def count_unavailable(cause: str) -> None:
    """Count one 503 answered because ``cause`` (redis, broker, queue_full) failed."""
    UNAVAILABLE.labels(cause).inc()


@metrics.get("/metrics")
def serve_metrics() -> Response:
    """The Prometheus text format; of all worker processes under gunicorn."""
    settings: Settings = current_app.config["TASKGATE_SETTINGS"]
    registry = REGISTRY
    if settings.prometheus_multiproc_dir:
        # A fresh registry per scrape, as the multiprocess collector reads the
        # files as they are now.
        registry = CollectorRegistry()
        # prometheus-client 0.26 leaves this constructor unannotated.
        MultiProcessCollector(  # type: ignore[no-untyped-call]
            registry, path=settings.prometheus_multiproc_dir
        )
    return Response(generate_latest(registry), 200, content_type=CONTENT_TYPE_LATEST)
