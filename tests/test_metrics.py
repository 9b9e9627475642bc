"""GET /metrics: Prometheus counts summed across gunicorn's worker processes."""

from __future__ import annotations

import re

import pytest
import requests

from tests.helpers import wait_for
from tools.redis_server import free_port

pytestmark = pytest.mark.slow


def sample(text, metric, /, **labels):
    """The value of one sample in the text format, 0 when absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{metric}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def scrape(stack):
    response = requests.get(stack.url("/metrics"), timeout=10)
    assert response.status_code == 200
    # prometheus-client's own type, charset once (Flask's mimetype= added another).
    assert (
        response.headers["Content-Type"] == "text/plain; version=1.0.0; charset=utf-8"
    )
    return response.text


def test_metrics_count_requests_latency_and_tasks(stack):
    before = scrape(stack)
    route = {"route": "/v1/tasks/<name>", "method": "POST"}

    # Several calls, so that both gunicorn workers are likely to serve some.
    for number in range(6):
        response = requests.post(
            stack.url("/v1/tasks/echo"), json={"n": number}, timeout=30
        )
        assert response.status_code == 200
    requests.post(stack.url("/v1/tasks/no-such-task"), json={}, timeout=30)

    after = scrape(stack)
    name = "taskgate_http_requests_total"
    assert (
        sample(after, name, status="200", **route)
        - sample(before, name, status="200", **route)
        == 6
    )
    assert sample(after, name, status="404", **route) >= 1
    latency = "taskgate_http_request_duration_seconds_count"
    assert sample(after, latency, **route) - sample(before, latency, **route) == 7
    submitted = "taskgate_tasks_submitted_total"
    assert (
        sample(after, submitted, name="echo") - sample(before, submitted, name="echo")
        == 6
    )
    assert sample(after, submitted, name="no-such-task") == 0


def test_metrics_label_unknown_paths_as_unmatched(stack):
    requests.get(stack.url("/no/such/path/123"), timeout=10)

    text = wait_for(lambda: scrape(stack), what="a scrape")
    assert (
        sample(
            text,
            "taskgate_http_requests_total",
            route="unmatched",
            method="GET",
            status="404",
        )
        >= 1
    )
    assert "/no/such/path/123" not in text


def test_broker_metrics_show_live_pools_and_free_slots(
    make_stack, redis_server_instance
):
    port = free_port()
    stack = make_stack(
        redis_server_instance.url(7),
        TASKGATE_HOST="127.0.0.1",
        TASKGATE_BROKER_METRICS_PORT=str(port),
    ).start_all()

    def scraped():
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except requests.ConnectionError:
            return None
        return text if "taskgate_broker_live_pools 1.0" in text else None

    text = wait_for(scraped, timeout_s=15, what="the broker's metrics")
    assert "taskgate_broker_free_slots 4.0" in text  # TASKGATE_WORKER_PROCESSES=4
    assert "taskgate_broker_waiting_tasks 0.0" in text
    assert stack.broker.alive()
