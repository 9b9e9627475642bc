"""Guarantees under failure: real processes killed, restarted and flooded.

Each test runs its own stack (conftest ``make_stack``), so killing a part of it
harms no other test. Heartbeats run every 0.25 s, so a silent pool is forgotten
after 0.75 s, and recovery scans Redis every half second.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import wait_for
from tools import redis_server

pytestmark = pytest.mark.slow

FAST_RECOVERY = {
    "TASKGATE_WORKER_PROCESSES": "2",
    "TASKGATE_RECOVERY_INTERVAL_S": "0.5",
    "TASKGATE_RECOVERY_MIN_AGE_S": "0.5",
    "TASKGATE_REDIS_TIMEOUT_S": "0.5",
    "TASKGATE_BROKER_TIMEOUT_S": "1",
}


def submit(stack, name, body, wait="0", timeout=30):
    return requests.post(
        stack.url(f"/v1/tasks/{name}"),
        json=body,
        params={"wait": wait},
        timeout=timeout,
    )


def final_state(stack, location, timeout_s=30):
    """Long-poll a task until it ends; fail if it does not end within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = requests.get(
            stack.url(location), params={"wait": "5"}, timeout=10
        ).json()
        if task["status"] not in ("queued", "running"):
            return task
    raise AssertionError(f"{location} did not end within {timeout_s}s")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_tasks_of_a_killed_pool_run_again_on_another_pool(
    make_stack, redis_server_instance
):
    stack = make_stack(redis_server_instance.url(4), **FAST_RECOVERY).start_all()
    accepted = [submit(stack, "sleep", {"seconds": 1.5}) for _ in range(2)]
    ids = [r.json()["id"] for r in accepted]
    wait_for(
        lambda: all(stack.store.get(i)[b"status"] == b"running" for i in ids),
        what="both tasks to run on the first pool",
    )
    stack.start_pool()
    time.sleep(1)  # the second pool announces itself

    stack.pool.signal(signal.SIGKILL)  # the parent and its children, at once

    for response in accepted:
        task = final_state(stack, response.headers["Location"])
        assert task["status"] == "succeeded", stack.logs()
        assert task["attempts"] == 2
        assert task["result"] == {"slept": 1.5}


def test_a_task_whose_pool_dies_on_its_last_attempt_fails_saying_so(
    make_stack, redis_server_instance
):
    stack = make_stack(
        redis_server_instance.url(4), TASKGATE_MAX_ATTEMPTS="1", **FAST_RECOVERY
    ).start_all()
    response = submit(stack, "sleep", {"seconds": 5})
    task_id = response.json()["id"]
    wait_for(lambda: stack.store.get(task_id)[b"status"] == b"running")

    stack.pool.signal(signal.SIGKILL)
    task = final_state(stack, response.headers["Location"])

    assert task["status"] == "failed"
    assert task["error"]["type"] == "WorkerLost"
    assert task["attempts"] == 1


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM])
def test_a_broker_restart_loses_no_task(make_stack, redis_server_instance, stop_signal):
    stack = make_stack(redis_server_instance.url(4), **FAST_RECOVERY).start_all()
    accepted = [submit(stack, "sleep", {"seconds": 0.8}) for _ in range(6)]
    assert all(r.status_code == 202 for r in accepted)
    sync_answer = {}

    def sync_call():
        sync_answer["response"] = submit(stack, "sleep", {"seconds": 1}, wait="20")

    caller = threading.Thread(target=sync_call)
    caller.start()
    time.sleep(0.3)

    # Two worker processes, seven tasks: some run, the rest wait in the broker.
    stack.broker.signal(stop_signal)
    exit_code = stack.broker.process.wait(5)
    if stop_signal == signal.SIGTERM:
        assert exit_code == 0, stack.broker.log()  # a clean stop, not a crash
    stack.broker = stack.start_broker()

    for response in accepted:
        task = final_state(stack, response.headers["Location"])
        assert task["status"] == "succeeded", stack.logs()
    caller.join(30)
    # The reply was lost with the broker; Redis pub/sub still woke the request.
    assert sync_answer["response"].status_code == 200
    assert sync_answer["response"].json()["result"] == {"slept": 1}


def test_redis_down_is_503_with_retry_after_then_all_recovers(make_stack, tmp_path):
    port = redis_server.free_port()
    data_dir = tmp_path / "durable-redis"
    redis_process = redis_server.start(port, data_dir, durable=True)
    try:
        stack = make_stack(f"redis://127.0.0.1:{port}/0", **FAST_RECOVERY).start_all()
        running = submit(stack, "sleep", {"seconds": 1.5})
        wait_for(lambda: stack.store.get(running.json()["id"])[b"status"] == b"running")

        redis_process.terminate()  # Redis writes its append-only file and exits
        redis_process.wait(10)
        started = time.monotonic()
        refused = submit(stack, "echo", {"a": 1}, wait="5")
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["type"] == "/problems/service-unavailable"
        assert time.monotonic() - started < 3
        assert (
            requests.get(stack.url(running.headers["Location"]), timeout=5).status_code
            == 503
        )

        time.sleep(
            1.5
        )  # the task ends while Redis is down: its result waits in the pool
        redis_process = redis_server.start(port, data_dir, durable=True)

        def serving():
            response = submit(stack, "echo", {"back": True}, wait="5")
            return response.status_code == 200 and response.json()["result"] == {
                "back": True
            }

        wait_for(serving, timeout_s=20, interval_s=0.25, what="the API to recover")
        task = final_state(stack, running.headers["Location"])
        assert task["status"] == "succeeded", stack.logs()
        assert task["attempts"] == 1
    finally:
        redis_process.terminate()
        redis_process.wait(10)


def test_a_redis_outage_longer_than_the_task_type_ttl_is_503_not_404(
    make_stack, tmp_path
):
    """The web's catalog outlives its TTL during an outage: still 503, then 200."""
    port = redis_server.free_port()
    data_dir = tmp_path / "durable-redis"
    redis_process = redis_server.start(port, data_dir, durable=True)
    try:
        stack = make_stack(
            f"redis://127.0.0.1:{port}/0",
            TASKGATE_TASK_TYPE_TTL_S="1",
            TASKGATE_CATALOG_REFRESH_S="0.1",
            **FAST_RECOVERY,
        ).start_all()
        assert submit(stack, "echo", {"a": 1}, wait="5").status_code == 200

        redis_process.terminate()
        redis_process.wait(10)
        time.sleep(2)  # twice the TTL: every announcement the web saw has expired
        for _ in range(3):
            refused = submit(stack, "echo", {"a": 1}, wait="5")
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"] == "1"
            assert refused.json()["type"] == "/problems/service-unavailable"

        redis_process = redis_server.start(port, data_dir, durable=True)

        def serving():
            response = submit(stack, "echo", {"back": True}, wait="5")
            return response.status_code == 200

        wait_for(serving, timeout_s=20, interval_s=0.25, what="the API to recover")
    finally:
        redis_process.terminate()
        redis_process.wait(10)


def test_a_flood_is_refused_with_503_and_every_accepted_task_finishes(
    make_stack, redis_server_instance
):
    stack = make_stack(
        redis_server_instance.url(4), TASKGATE_QUEUE_LIMIT="20", **FAST_RECOVERY
    ).start_all()
    rss_before = rss_kib(stack.broker.pid)

    # Two worker processes; 200 tasks at once is a hundred times their capacity.
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(
            pool.map(lambda _: submit(stack, "sleep", {"seconds": 0.05}), range(200))
        )

    accepted = [a for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code == 503]
    assert len(accepted) + len(refused) == 200
    assert 20 <= len(accepted) < 200
    assert all(r.json()["type"] == "/problems/queue-full" for r in refused)
    assert all(r.headers["Retry-After"] == "1" for r in refused)
    for response in accepted:
        assert final_state(stack, response.headers["Location"])["status"] == "succeeded"
    assert rss_kib(stack.broker.pid) < rss_before + 20_000


def test_sigterm_to_gunicorn_lets_inflight_sync_requests_finish(
    make_stack, redis_server_instance
):
    stack = make_stack(redis_server_instance.url(4), **FAST_RECOVERY).start_all()
    answers = {}

    def call(number):
        answers[number] = submit(stack, "sleep", {"seconds": 1.5}, wait="20")

    callers = [threading.Thread(target=call, args=(n,)) for n in range(3)]
    for caller in callers:
        caller.start()
    wait_for(lambda: len(stack.store.client.zrange("taskgate:unfinished", 0, -1)) == 3)

    os.kill(stack.web.pid, signal.SIGTERM)  # the gunicorn master
    for caller in callers:
        caller.join(30)

    assert [answers[n].status_code for n in range(3)] == [200, 200, 200]
    assert all(answers[n].json()["result"] == {"slept": 1.5} for n in range(3))
    assert stack.web.process.wait(10) == 0


def test_gunicorn_reload_drops_no_request(make_stack, redis_server_instance):
    stack = make_stack(redis_server_instance.url(4), **FAST_RECOVERY).start_all()
    statuses = []
    stop_at = time.monotonic() + 20

    def keep_calling():
        for number in range(300):
            if time.monotonic() > stop_at:
                return
            # One connection per request: a keep-alive connection closed by a
            # stopping worker is the client's to retry, by HTTP's own rules.
            response = requests.post(
                stack.url("/v1/tasks/echo"),
                json={"n": number},
                headers={"Connection": "close"},
                timeout=10,
            )
            statuses.append((response.status_code, response.json().get("result")))

    caller = threading.Thread(target=keep_calling)
    caller.start()
    for _ in range(2):
        time.sleep(0.7)
        os.kill(stack.web.pid, signal.SIGHUP)
    caller.join(30)

    assert len(statuses) >= 50
    assert all(code == 200 for code, _ in statuses)
    assert [result["n"] for _, result in statuses] == list(range(len(statuses)))


def test_a_task_outlives_the_web_process_that_took_it(
    make_stack, redis_server_instance
):
    stack = make_stack(
        redis_server_instance.url(4), WEB_CONCURRENCY="1", **FAST_RECOVERY
    ).start_all()
    accepted = submit(stack, "sleep", {"seconds": 1})
    lost = {}

    def doomed_call():
        try:
            lost["response"] = submit(stack, "sleep", {"seconds": 1.2}, wait="20")
        except requests.ConnectionError as exc:
            lost["error"] = exc

    caller = threading.Thread(target=doomed_call)
    caller.start()
    wait_for(lambda: stack.store.client.zcard("taskgate:unfinished") == 2)
    (web_worker,) = _children_of(stack.web.pid)
    os.kill(web_worker, signal.SIGKILL)  # the web process holding both requests
    caller.join(30)

    assert "error" in lost, lost
    # gunicorn starts another web process; the client polls it.
    task = final_state(stack, accepted.headers["Location"])
    assert task["status"] == "succeeded"
    wait_for(
        lambda: stack.store.client.zcard("taskgate:unfinished") == 0,
        timeout_s=20,
        what="the task of the lost request to finish",
    )
    keys = stack.store.client.keys("taskgate:task:*")
    assert len(keys) == 2
    assert all(stack.store.client.hget(key, "status") == b"succeeded" for key in keys)


def _children_of(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]
