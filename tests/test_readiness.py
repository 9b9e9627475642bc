"""GET /readyz against real processes: ready with Redis and broker, 503 without."""

from __future__ import annotations

import pytest
import requests

from tests.helpers import wait_for
from tools import redis_server

pytestmark = pytest.mark.slow


def readyz(stack):
    return requests.get(stack.url("/readyz"), timeout=10)


def test_readyz_answers_200_when_redis_and_broker_answer(stack):
    response = readyz(stack)

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"redis": "ok", "broker": "ok"},
    }


def test_readyz_flips_to_503_while_the_broker_is_stopped(
    make_stack, redis_server_instance
):
    stack = make_stack(
        redis_server_instance.url(5), TASKGATE_API_KEYS="k" * 20
    ).start_all()
    assert readyz(stack).status_code == 200  # open without a key

    stack.broker.stop()
    answers = []
    wait_for(
        lambda: answers.append(readyz(stack)) or answers[-1].status_code == 503,
        timeout_s=15,
        what="readyz to answer 503",
    )
    response = answers[-1]
    problem = response.json()
    assert response.headers["Content-Type"] == "application/problem+json"
    assert problem["type"] == "/problems/not-ready"
    assert problem["checks"] == {"redis": "ok", "broker": "no answer"}
    assert "Retry-After" in response.headers

    stack.broker = stack.start_broker()
    wait_for(
        lambda: readyz(stack).status_code == 200,
        timeout_s=15,
        what="readyz to answer 200 again",
    )


def test_readyz_answers_503_without_redis(make_stack, tmp_path):
    port = redis_server.free_port()
    server = redis_server.start(port, tmp_path / "redis")
    try:
        stack = make_stack(f"redis://127.0.0.1:{port}/0").start_all()
        assert readyz(stack).status_code == 200

        server.terminate()
        server.wait(10)
        response = readyz(stack)
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(10)

    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("no answer")
