"""End to end: real gunicorn -k gevent, broker, worker pool and Redis, over HTTP."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import stack_env, start_web
from tests.helpers import ManagedProcess, python_args, wait_for
from tools.redis_server import free_port
from worker.store import UNFINISHED_KEY, task_key

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}


def post(stack, path, body, timeout=30, **params):
    return requests.post(stack.url(path), json=body, params=params, timeout=timeout)


def test_sync_call_answers_200_with_the_task_resource(stack):
    response = post(stack, "/v1/tasks/echo", {"word": "hi", "n": [1, 2]})

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    task = response.json()
    assert task["name"] == "echo"
    assert task["status"] == "succeeded"
    assert task["result"] == {"word": "hi", "n": [1, 2]}
    assert task["attempts"] == 1
    assert task["created_at"] <= task["started_at"] <= task["finished_at"]
    assert requests.get(stack.url(f"/v1/tasks/{task['id']}"), timeout=5).json() == task


def test_two_hundred_concurrent_sync_calls_each_get_their_own_result(stack):
    def call(number):
        return number, post(
            stack, "/v1/tasks/echo", {"number": number, "tag": f"t{number}"}
        )

    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(call, range(200)))

    for number, response in results:
        assert response.status_code == 200, response.text
        assert response.json()["result"] == {"number": number, "tag": f"t{number}"}
    assert len({r.json()["id"] for _, r in results}) == 200


def test_every_task_runs_exactly_once_across_four_workers(stack, tmp_path):
    journal = tmp_path / "executions.txt"

    def submit(number):
        body = {"path": str(journal), "token": f"tok{number}"}
        return post(stack, "/v1/tasks/tests.record", body, wait="0")

    with ThreadPoolExecutor(max_workers=20) as pool:
        accepted = list(pool.map(submit, range(100)))
    assert all(r.status_code == 202 for r in accepted)

    def all_finished():
        states = [
            requests.get(stack.url(r.headers["Location"]), timeout=5).json()["status"]
            for r in accepted
        ]
        return all(state == "succeeded" for state in states)

    wait_for(all_finished, timeout_s=60, interval_s=0.2, what="100 tasks to finish")
    lines = journal.read_text().split()
    assert sorted(lines) == sorted(f"tok{n}" for n in range(100))
    pids = {
        requests.get(stack.url(r.headers["Location"]), timeout=5).json()["result"][
            "pid"
        ]
        for r in accepted
    }
    assert len(pids) > 1, "tasks should spread over the worker processes"


def test_a_slow_task_answers_202_then_polls_and_long_polls_to_its_result(stack):
    started = time.monotonic()
    response = post(stack, "/v1/tasks/sleep", {"seconds": 3}, wait="1")
    waited = time.monotonic() - started

    assert response.status_code == 202
    assert 0.9 < waited < 2.5
    location = response.headers["Location"]
    assert location.startswith("/v1/tasks/")
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["status"] in ("queued", "running")

    polled = requests.get(stack.url(location), timeout=5).json()
    assert polled["status"] == "running"

    long_polled = requests.get(stack.url(location), params={"wait": "10"}, timeout=15)
    assert long_polled.status_code == 200
    assert long_polled.json()["status"] == "succeeded"
    assert long_polled.json()["result"] == {"slept": 3}
    assert time.monotonic() - started < 5.5
    assert requests.get(stack.url(location), timeout=5).json()["status"] == "succeeded"


def test_wait_zero_answers_202_at_once_with_a_readable_record(stack):
    response = post(stack, "/v1/tasks/sleep", {"seconds": 0.2}, wait="0")

    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    task = requests.get(stack.url(response.headers["Location"]), timeout=5).json()
    assert task["status"] in ("queued", "running", "succeeded")


def test_long_poll_returns_when_the_wait_runs_out(stack):
    response = post(stack, "/v1/tasks/sleep", {"seconds": 2}, wait="0")
    started = time.monotonic()

    polled = requests.get(
        stack.url(response.headers["Location"]), params={"wait": "0.5"}, timeout=10
    )

    assert polled.status_code == 200
    assert polled.json()["status"] in ("queued", "running")
    assert 0.4 < time.monotonic() - started < 1.8


def test_progress_is_visible_while_a_task_runs(stack):
    response = post(
        stack, "/v1/tasks/countdown", {"steps": 4, "interval_s": 0.3}, wait="0"
    )
    location = stack.url(response.headers["Location"])

    def midway():
        progress = requests.get(location, timeout=5).json()["progress"]
        return progress if progress and 0 < progress["current"] < 4 else None

    progress = wait_for(
        midway, timeout_s=10, what="progress between the first and last step"
    )
    assert progress["total"] == 4
    final = requests.get(location, params={"wait": "10"}, timeout=15).json()
    assert final["progress"] == {"current": 4, "total": 4, "message": "done"}


def test_a_failing_task_answers_a_500_problem_without_traceback(stack):
    response = post(stack, "/v1/tasks/fail", {"message": "disk on fire"})

    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/task-failed"
    assert problem["error"] == {"type": "RuntimeError", "message": "disk on fire"}
    assert "Traceback" not in response.text
    task = requests.get(stack.url(f"/v1/tasks/{problem['task_id']}"), timeout=5).json()
    assert task["status"] == "failed"
    assert task["error"]["message"] == "disk on fire"
    stored = stack.store.client.hget(task_key(problem["task_id"]), "traceback")
    assert b"RuntimeError: disk on fire" in stored


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "problem_type"),
    [
        ("/v1/tasks/no-such-task", b"{}", JSON, 404, "/problems/unknown-task"),
        ("/v1/tasks/bad%20name", b"{}", JSON, 404, "/problems/unknown-task"),
        ("/v1/tasks/echo", b"[1, 2]", JSON, 400, "/problems/invalid-body"),
        ("/v1/tasks/echo", b'"text"', JSON, 400, "/problems/invalid-body"),
        ("/v1/tasks/echo", b"null", JSON, 400, "/problems/invalid-body"),
        ("/v1/tasks/echo", b"{not json", JSON, 400, "/problems/invalid-body"),
        ("/v1/tasks/echo", b"", JSON, 400, "/problems/invalid-body"),
        ("/v1/tasks/sleep", b'{"secs": 1}', JSON, 422, "/problems/invalid-arguments"),
        ("/v1/tasks/sleep", b"{}", JSON, 422, "/problems/invalid-arguments"),
        (
            "/v1/tasks/echo",
            b"a=1",
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            "/problems/unsupported-media-type",
        ),
        (
            "/v1/tasks/echo",
            b"{}",
            {"Content-Type": ";;;"},
            415,
            "/problems/unsupported-media-type",
        ),
        (
            "/v1/tasks/echo",
            b"{}",
            {"Content-Type": "+json"},
            415,
            "/problems/unsupported-media-type",
        ),
        ("/v1/tasks/echo?wait=-1", b"{}", JSON, 400, "/problems/invalid-wait"),
        ("/v1/tasks/echo?wait=soon", b"{}", JSON, 400, "/problems/invalid-wait"),
        ("/v1/tasks/echo?wait=nan", b"{}", JSON, 400, "/problems/invalid-wait"),
        ("/v1/tasks/echo?wait=1_0", b"{}", JSON, 400, "/problems/invalid-wait"),
        (
            "/v1/tasks/echo?time_limit=0",
            b"{}",
            JSON,
            400,
            "/problems/invalid-time-limit",
        ),
        (
            "/v1/tasks/echo",
            b'{"a": "' + b"x" * (1 << 21) + b'"}',
            JSON,
            413,
            "about:blank",
        ),
    ],
)
def test_bad_requests_get_their_problem_and_the_service_stays_up(
    stack, path, body, headers, status, problem_type
):
    response = requests.post(stack.url(path), data=body, headers=headers, timeout=10)

    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == problem_type
    assert problem["status"] == status
    assert problem["detail"]
    assert post(stack, "/v1/tasks/echo", {"ok": True}).json()["result"] == {"ok": True}


def test_wrong_arguments_name_what_is_wrong(stack):
    response = post(stack, "/v1/tasks/sleep", {"seconds": 1, "color": "red"})

    assert response.status_code == 422
    assert response.json()["detail"] == "unexpected: color"


def test_unknown_and_malformed_task_ids_are_404(stack):
    for task_id in ("0" * 32, "not-an-id", "x" * 500):
        response = requests.get(stack.url(f"/v1/tasks/{task_id}"), timeout=5)
        assert response.status_code == 404
        assert response.json()["type"] == "/problems/unknown-task-id"


def test_unsupported_method_is_405_with_allow(stack):
    response = requests.put(stack.url("/v1/tasks/echo"), timeout=5)

    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert response.headers["Content-Type"] == "application/problem+json"


def test_api_process_answers_like_the_origin_example(stack):
    response = requests.post(
        stack.url("/api/process"), json={"data": "hello"}, timeout=30
    )

    assert response.status_code == 200
    assert response.json() == {"processed": True, "result": "Processed: hello"}


def test_healthz_answers(stack):
    response = requests.get(stack.url("/healthz"), timeout=5)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_an_unreachable_broker_is_503_and_leaves_no_record(stack, tmp_path):
    env = stack_env(
        stack.redis_url, TASKGATE_BROKER_TIMEOUT_S="0.5", WEB_CONCURRENCY="1"
    )
    web = start_web(env, tmp_path, name="web-no-broker")
    try:
        before = stack.store.client.zcard(UNFINISHED_KEY)
        response = requests.post(
            f"http://127.0.0.1:{env['PORT']}/v1/tasks/echo", json={"a": 1}, timeout=10
        )

        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.json()["type"] == "/problems/service-unavailable"
        assert stack.store.client.zcard(UNFINISHED_KEY) == before
        assert web.alive()
    finally:
        web.stop()


def test_an_unreachable_redis_is_503_within_the_timeout(tmp_path):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    env = stack_env(dead_redis, TASKGATE_REDIS_TIMEOUT_S="0.5", WEB_CONCURRENCY="1")
    web = start_web(env, tmp_path, name="web-no-redis")
    try:
        started = time.monotonic()
        submitted = requests.post(
            f"http://127.0.0.1:{env['PORT']}/v1/tasks/echo", json={"a": 1}, timeout=10
        )
        read = requests.get(
            f"http://127.0.0.1:{env['PORT']}/v1/tasks/{'a' * 32}", timeout=10
        )

        assert submitted.status_code == 503
        assert read.status_code == 503
        assert submitted.json()["type"] == "/problems/service-unavailable"
        assert time.monotonic() - started < 5
        assert web.alive()
    finally:
        web.stop()


def test_plain_gunicorn_with_the_gevent_worker_serves_the_app(stack, tmp_path):
    port = free_port()
    env = dict(stack.env, PORT=str(port))
    web = ManagedProcess(
        "plain-gunicorn",
        python_args(
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "--no-control-socket",
            "-b",
            f"127.0.0.1:{port}",
            "wsgi:app",
        ),
        env,
        tmp_path,
    )
    try:

        def answered():
            try:
                return requests.post(
                    f"http://127.0.0.1:{port}/v1/tasks/echo",
                    json={"plain": 1},
                    timeout=5,
                )
            except requests.ConnectionError:
                assert web.alive(), web.log()
                return None

        response = wait_for(
            answered, timeout_s=30, interval_s=0.1, what="plain gunicorn"
        )
        assert response.status_code == 200
        assert response.json()["result"] == {"plain": 1}
    finally:
        web.stop()


def test_cancel_a_running_task_then_a_finished_one(stack):
    sync = {}

    def sync_call():
        sync["response"] = post(stack, "/v1/tasks/sleep", {"seconds": 30}, wait="20")

    caller = threading.Thread(target=sync_call)
    caller.start()
    store = stack.store.client

    def running_id():
        for key in store.keys("taskgate:task:*"):
            fields = store.hgetall(key)
            if (
                fields.get(b"status") == b"running"
                and fields[b"args"] == b'{"seconds": 30}'
            ):
                return fields[b"id"].decode()
        return None

    task_id = wait_for(running_id, what="the sleep to start")
    cancelled = requests.delete(stack.url(f"/v1/tasks/{task_id}"), timeout=5)
    caller.join(10)

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert sync["response"].status_code == 409
    assert sync["response"].json()["type"] == "/problems/task-cancelled"
    again = requests.delete(stack.url(f"/v1/tasks/{task_id}"), timeout=5)
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/task-finished"
    assert (
        requests.delete(stack.url(f"/v1/tasks/{'0' * 32}"), timeout=5).status_code
        == 404
    )


def test_cancel_a_queued_task_so_it_never_starts(stack, tmp_path):
    blockers = [
        post(stack, "/v1/tasks/sleep", {"seconds": 1}, wait="0") for _ in range(4)
    ]
    journal = tmp_path / "never.txt"
    queued = post(
        stack, "/v1/tasks/tests.record", {"path": str(journal), "token": "x"}, wait="0"
    )

    cancelled = requests.delete(stack.url(queued.headers["Location"]), timeout=5)

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    for blocker in blockers:
        requests.get(
            stack.url(blocker.headers["Location"]), params={"wait": "10"}, timeout=15
        )
    assert not journal.exists()
    final = requests.get(stack.url(queued.headers["Location"]), timeout=5).json()
    assert final["status"] == "cancelled"
    assert final["attempts"] == 0


def test_a_caller_time_limit_stops_a_long_task(stack):
    started = time.monotonic()
    response = post(
        stack, "/v1/tasks/sleep", {"seconds": 20}, wait="10", time_limit="1"
    )

    assert response.status_code == 500
    assert response.json()["error"]["type"] == "TimeLimitExceeded"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("name", "body", "detail"),
    [
        ("sleep", {"seconds": "soon"}, "seconds: Input should be a valid number"),
        ("hash", {"megabytes": 1.5}, "megabytes: Input should be a valid integer"),
        ("sleep", {"seconds": -1}, "seconds must be between 0 and 3600"),
    ],
)
def test_values_a_task_refuses_are_422(stack, name, body, detail):
    response = post(stack, f"/v1/tasks/{name}", body)

    assert response.status_code == 422
    assert response.json()["type"] == "/problems/invalid-arguments"
    assert response.json()["detail"].startswith(detail)


def test_integers_beyond_64_bits_are_refused_not_rounded(stack):
    body = b'{"a": 123456789012345678901234567890}'
    response = requests.post(
        stack.url("/v1/tasks/echo"), data=body, headers=JSON, timeout=10
    )

    assert response.status_code == 400
    assert "2**64" in response.json()["detail"]
    exact = post(
        stack, "/v1/tasks/echo", {"a": 2**64 - 1, "s": "12345678901234567890123"}
    )
    assert exact.json()["result"] == {"a": 2**64 - 1, "s": "12345678901234567890123"}


def test_an_oversized_chunked_body_is_413_not_truncated(stack):
    def chunks():
        yield b'{"a": 1}'
        for _ in range(64):
            yield b" " * 32768  # 2 MiB of spaces after a complete object

    response = requests.post(
        stack.url("/v1/tasks/echo?wait=0"), data=chunks(), headers=JSON, timeout=10
    )

    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/problem+json"
