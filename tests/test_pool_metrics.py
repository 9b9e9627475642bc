"""Worker-pool and broker metrics scraped from real processes after known tasks."""

from __future__ import annotations

import re
import signal

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest

from tests.helpers import wait_for
from tools.redis_server import free_port
from worker.pool_metrics import PoolCollector, PoolCounts, PoolGauges

pytestmark = pytest.mark.slow


def sample(text, metric, /, **labels):
    """The value of one sample in the text format (labels in any order), 0 when absent."""
    wanted = sorted(f'{key}="{value}"' for key, value in labels.items())
    for line in text.splitlines():
        match = re.fullmatch(rf"{metric}(?:\{{(.*)\}})? (\S+)", line)
        if match and sorted(filter(None, (match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def scrape(port):
    try:
        response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except requests.ConnectionError:
        return ""
    assert response.status_code == 200
    return response.text


def value(port, metric, /, **labels):
    return sample(scrape(port), metric, **labels)


def wait_value(port, metric, expected, /, **labels):
    """Poll until the sample equals ``expected``; a scrape can be a beat behind."""
    wait_for(
        lambda: value(port, metric, **labels) == expected,
        timeout_s=15,
        interval_s=0.1,
        what=f"{metric}{labels} == {expected}",
    )


def post(stack, name, body, **query):
    return requests.post(
        stack.url(f"/v1/tasks/{name}"), json=body, params=query, timeout=30
    )


def test_pool_and_broker_count_tasks_outcomes_run_times_and_queues(
    make_stack, redis_server_instance
):
    broker_port, pool_port = free_port(), free_port()
    stack = make_stack(
        redis_server_instance.url(8),
        TASKGATE_HOST="127.0.0.1",
        TASKGATE_WORKER_PROCESSES="1",
        TASKGATE_BROKER_METRICS_PORT=str(broker_port),
        TASKGATE_WORKER_METRICS_PORT=str(pool_port),
    ).start_all()
    wait_value(pool_port, "taskgate_pool_slots", 1)

    for number in range(3):
        assert post(stack, "echo", {"n": number}).status_code == 200
    assert post(stack, "fail", {}).status_code == 500
    # Overruns its limit: the child is killed and replaced.
    slow = post(stack, "sleep", {"seconds": 30}, time_limit="3", wait="0")
    assert slow.status_code == 202
    wait_for(
        lambda: stack.store.get(slow.json()["id"])[b"status"] == b"running",
        what="the sleep task to run",
    )
    queued = [post(stack, "echo", {"late": n}, wait="0").json()["id"] for n in range(2)]

    # The only slot is busy: both echoes wait in the broker's queue for "echo".
    broker = scrape(broker_port)
    assert sample(broker, "taskgate_broker_queue_depth", name="echo") == 2
    assert sample(broker, "taskgate_broker_idle_pools", name="echo") == 0
    assert sample(broker, "taskgate_broker_idle_slots", name="echo") == 0
    assert sample(scrape(pool_port), "taskgate_pool_busy_slots") == 1

    for task_id in queued:
        body = requests.get(
            stack.url(f"/v1/tasks/{task_id}?wait=20"), timeout=30
        ).json()
        assert body["status"] == "succeeded"
    wait_value(pool_port, "taskgate_pool_busy_slots", 0)

    pool = scrape(pool_port)
    started = "taskgate_pool_tasks_started_total"
    finished = "taskgate_pool_tasks_finished_total"
    assert sample(pool, started, name="echo") == 5
    assert sample(pool, finished, name="echo", status="succeeded") == 5
    assert sample(pool, finished, name="fail", status="failed") == 1
    assert sample(pool, finished, name="sleep", status="failed") == 1
    assert sample(pool, "taskgate_pool_child_restarts_total", reason="time_limit") == 1
    assert sample(pool, "taskgate_pool_task_run_seconds_count", name="echo") == 5
    assert (
        sample(pool, "taskgate_pool_task_run_seconds_bucket", name="echo", le="+Inf")
        == 5
    )
    # The killed sleep never reported: no run time for it.
    assert sample(pool, "taskgate_pool_task_run_seconds_count", name="sleep") == 0
    assert sample(pool, "taskgate_pool_processes") == 1
    assert "taskgate_pool_info{" in pool and 'mode="process"' in pool

    broker = scrape(broker_port)
    assert sample(broker, "taskgate_broker_accepted_tasks_total", name="echo") == 5
    assert sample(broker, "taskgate_broker_accepted_tasks_total", name="sleep") == 1
    assert sample(broker, "taskgate_broker_queue_depth", name="echo") == 0
    assert sample(broker, "taskgate_broker_idle_pools", name="echo") == 1
    assert sample(broker, "taskgate_broker_idle_slots", name="echo") == 1
    assert (
        sample(
            broker,
            "taskgate_broker_rejected_tasks_total",
            name="echo",
            reason="queue_full",
        )
        == 0
    )


def test_a_cancelled_task_counts_as_discarded_not_failed(
    make_stack, redis_server_instance
):
    pool_port = free_port()
    stack = make_stack(
        redis_server_instance.url(8),
        TASKGATE_HOST="127.0.0.1",
        TASKGATE_WORKER_PROCESSES="1",
        TASKGATE_WORKER_METRICS_PORT=str(pool_port),
    ).start_all()
    task = post(stack, "countdown", {"steps": 60, "interval_s": 0.5}, wait="0").json()
    # Progress proves the function itself runs: a cancel that reaches the child
    # before that kills it instead, and no outcome comes back to be counted.
    wait_for(
        lambda: b"progress" in stack.store.get(task["id"]),
        timeout_s=20,
        what="the countdown task to report progress",
    )

    cancelled = requests.delete(stack.url(f"/v1/tasks/{task['id']}"), timeout=10)

    assert cancelled.status_code == 200
    finished = "taskgate_pool_tasks_finished_total"
    wait_value(pool_port, finished, 1, name="countdown", status="discarded")
    assert sample(scrape(pool_port), finished, name="countdown", status="failed") == 0


def test_broker_counts_missed_heartbeats_and_retries_of_a_killed_pool(
    make_stack, redis_server_instance
):
    broker_port = free_port()
    stack = make_stack(
        redis_server_instance.url(9),
        TASKGATE_HOST="127.0.0.1",
        TASKGATE_BROKER_METRICS_PORT=str(broker_port),
    ).start_all()
    task = post(stack, "sleep", {"seconds": 30}, wait="0").json()
    wait_for(
        lambda: stack.store.get(task["id"])[b"status"] == b"running",
        what="the sleep task to run",
    )

    stack.pool.signal(signal.SIGKILL)  # the parent and its children: no goodbye

    wait_value(
        broker_port,
        "taskgate_broker_pools_forgotten_total",
        1,
        reason="missed_heartbeats",
    )
    wait_value(
        broker_port,
        "taskgate_broker_requeued_tasks_total",
        1,
        name="sleep",
        reason="worker_lost",
    )
    assert value(broker_port, "taskgate_broker_live_pools") == 0
    assert value(broker_port, "taskgate_broker_queue_depth", name="sleep") == 1


def test_broker_counts_rejected_tasks_and_web_counts_its_503s(
    make_stack, redis_server_instance
):
    broker_port = free_port()
    stack = make_stack(
        redis_server_instance.url(10),
        TASKGATE_HOST="127.0.0.1",
        TASKGATE_WORKER_PROCESSES="1",
        TASKGATE_QUEUE_LIMIT="1",
        TASKGATE_BROKER_METRICS_PORT=str(broker_port),
    ).start_all()
    running = post(stack, "sleep", {"seconds": 5}, wait="0")
    assert running.status_code == 202
    # Running, not only "no idle slot": before the pool's first announcement
    # reaches the broker there is no slot at all, and the task would wait in the
    # queue, leaving no room for the next one.
    wait_for(
        lambda: stack.store.get(running.json()["id"])[b"status"] == b"running",
        what="the first sleep task to run",
    )
    assert post(stack, "sleep", {"seconds": 0}, wait="0").status_code == 202  # queued

    refused = post(stack, "sleep", {"seconds": 0}, wait="0")

    assert refused.status_code == 503
    text = scrape(broker_port)
    rejected = "taskgate_broker_rejected_tasks_total"
    assert sample(text, rejected, name="sleep", reason="queue_full") == 1
    web = requests.get(stack.url("/metrics"), timeout=10).text
    assert sample(web, "taskgate_unavailable_answers_total", cause="queue_full") == 1


def test_gevent_pool_counts_its_tasks_too(make_stack, redis_server_instance):
    pool_port = free_port()
    stack = make_stack(
        redis_server_instance.url(11),
        TASKGATE_HOST="127.0.0.1",
        TASKGATE_WORKER_PROCESSES="1",
        TASKGATE_WORKER_MODE="gevent",
        TASKGATE_WORKER_CONCURRENCY="10",
        TASKGATE_WORKER_METRICS_PORT=str(pool_port),
    ).start_all()

    for number in range(4):
        assert post(stack, "echo", {"n": number}).status_code == 200

    pool = scrape(pool_port)
    assert sample(pool, "taskgate_pool_slots") == 10
    assert sample(pool, "taskgate_pool_tasks_started_total", name="echo") == 4
    assert (
        sample(
            pool, "taskgate_pool_tasks_finished_total", name="echo", status="succeeded"
        )
        == 4
    )
    assert sample(pool, "taskgate_pool_task_run_seconds_count", name="echo") == 4
    assert 'mode="gevent"' in pool


def test_standby_pair_serves_metrics_of_the_active_broker_and_zeros_meanwhile(
    make_stack, redis_server_instance
):
    fronts = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    backs = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    ports = [free_port(), free_port()]
    stack = make_stack(
        redis_server_instance.url(9),
        TASKGATE_HOST="127.0.0.1",
        TASKGATE_BROKER_FRONTEND=",".join(fronts),
        TASKGATE_BROKER_BACKEND=",".join(backs),
        TASKGATE_BROKER_LEASE_S="1.5",
    )

    def start_broker(index):
        stack.env.update(
            TASKGATE_BROKER_BIND_FRONTEND=fronts[index],
            TASKGATE_BROKER_BIND_BACKEND=backs[index],
            TASKGATE_BROKER_METRICS_PORT=str(ports[index]),
        )
        return stack.start_broker()

    first = start_broker(0)
    wait_value(ports[0], "taskgate_broker_active", 1)
    second = start_broker(1)
    stack.start_pool()
    wait_value(ports[0], "taskgate_broker_live_pools", 1)
    wait_value(ports[0], "taskgate_broker_free_slots", 4)
    standing_by = wait_for(
        lambda: scrape(ports[1]), timeout_s=15, what="the standby's metrics"
    )

    assert sample(standing_by, "taskgate_broker_active") == 0
    for gauge in ("live_pools", "free_slots", "waiting_tasks", "running_tasks"):
        assert sample(standing_by, f"taskgate_broker_{gauge}") == 0, gauge
    assert value(ports[0], "taskgate_broker_idle_slots", name="echo") == 4

    assert first.stop() == 0  # SIGTERM: it gives the lease up
    wait_value(ports[1], "taskgate_broker_active", 1)
    wait_value(ports[1], "taskgate_broker_live_pools", 1)
    wait_value(ports[1], "taskgate_broker_free_slots", 4)
    assert second.alive()


def test_run_time_histogram_is_cumulative_with_sum_and_count():
    counts = PoolCounts()
    for seconds in (0.002, 0.3, 0.3, 700.0):
        counts.observe_run("report", seconds)
    gauges = PoolGauges("host-1-abc", "process", 2, 2, 1, 0, 0, False)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(counts, lambda: gauges))

    text = generate_latest(registry).decode()

    bucket = "taskgate_pool_task_run_seconds_bucket"
    assert sample(text, bucket, name="report", le="0.005") == 1
    assert sample(text, bucket, name="report", le="0.25") == 1
    assert sample(text, bucket, name="report", le="0.5") == 3
    assert sample(text, bucket, name="report", le="600.0") == 3
    assert sample(text, bucket, name="report", le="+Inf") == 4
    assert sample(text, "taskgate_pool_task_run_seconds_count", name="report") == 4
    assert sample(text, "taskgate_pool_task_run_seconds_sum", name="report") == 700.602
    assert sample(text, "taskgate_pool_busy_slots") == 1
    assert (
        sample(text, "taskgate_pool_info", identity="host-1-abc", mode="process") == 1
    )
