"""The Python client against a real stack: results, 202s followed, problems typed."""

from __future__ import annotations

import pytest
import requests

from client import Client, ProblemError, TransportError, WaitTimeoutError
from tools.redis_server import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def client(stack):
    with Client(stack.base_url, timeout_s=10) as made:
        yield made


def test_client_run_returns_the_result(client):
    assert client.run("echo", word="hi", n=[1, 2]) == {"word": "hi", "n": [1, 2]}


def test_client_run_follows_a_202_to_the_result(client, monkeypatch):
    # A first wait shorter than the task makes the server answer 202.
    monkeypatch.setattr("client.api.LONG_POLL_S", 0.2)
    seen = []

    result = client.run("sleep", seconds=0.8, on_update=seen.append)

    assert result == {"slept": 0.8}
    assert seen[0]["status"] in ("queued", "running")
    assert seen[-1]["status"] == "succeeded"


def test_client_unknown_task_is_a_problem_error(client):
    with pytest.raises(ProblemError) as caught:
        client.run("no-such-task")

    assert caught.value.status == 404
    assert caught.value.type == "/problems/unknown-task"
    assert caught.value.title == "Unknown task"
    assert caught.value.task_id is None


def test_client_failed_task_carries_its_id(client):
    with pytest.raises(ProblemError) as caught:
        client.run("fail", message="boom")

    assert caught.value.status == 500
    assert caught.value.type == "/problems/task-failed"
    assert "boom" in caught.value.detail
    assert client.get(caught.value.task_id)["status"] == "failed"


def test_client_wait_timeout_leaves_the_task_running(client, monkeypatch):
    monkeypatch.setattr("client.api.LONG_POLL_S", 0.1)

    with pytest.raises(WaitTimeoutError) as caught:
        client.run("sleep", seconds=3, wait_s=0.3)

    task = client.cancel(caught.value.task_id)
    assert task["status"] == "cancelled"


def test_client_submit_get_list_and_wait(client):
    task = client.submit("echo", tag="listed")

    assert task["status"] == "queued"
    assert client.wait(task["id"], wait_s=10)["result"] == {"tag": "listed"}
    page = client.list(name="echo", status="succeeded", limit=100)
    assert task["id"] in [listed["id"] for listed in page["tasks"]]


def test_client_cancel_of_a_finished_task_is_a_problem(client):
    task_id = client.submit("echo")["id"]
    client.wait(task_id, wait_s=10)

    with pytest.raises(ProblemError) as caught:
        client.cancel(task_id)
    assert caught.value.status == 409
    assert caught.value.type == "/problems/task-finished"


def test_client_workers_and_task_types(client):
    assert any("echo" in pool["tasks"] for pool in client.workers())
    assert "echo" in [kind["name"] for kind in client.task_types()]


def test_client_unreachable_server_is_a_transport_error():
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout_s=2) as client,
        pytest.raises(TransportError),
    ):
        client.get("0" * 32)


def _kept_connections(session):
    return len(session.get_adapter("http://").poolmanager.pools)


def test_closing_a_client_closes_its_own_session_and_leaves_a_given_one_open(stack):
    with Client(stack.base_url, timeout_s=10) as own:
        assert own.run("echo", n=1) == {"n": 1}
        assert _kept_connections(own._session) == 1
    assert _kept_connections(own._session) == 0

    given = requests.Session()
    try:
        with Client(stack.base_url, timeout_s=10, session=given) as borrowing:
            assert borrowing.run("echo", n=2) == {"n": 2}
        assert _kept_connections(given) == 1
    finally:
        given.close()
