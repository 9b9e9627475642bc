"""X-Request-ID: echoed or generated, and on the log lines of its request."""

from __future__ import annotations

import json
import logging
import re

import pytest
import requests

from app import create_app
from conf.log_context import ContextFilter, bind_request, bind_task
from conf.logging import TextFormatter, _formatter
from tests.helpers import wait_for


@pytest.fixture
def web(settings):
    return create_app(settings).test_client()


def test_request_id_offered_is_echoed(web):
    response = web.get("/healthz", headers={"X-Request-ID": "abc-123.x:y_z"})

    assert response.headers["X-Request-ID"] == "abc-123.x:y_z"


@pytest.mark.parametrize("offered", ["", "has space", "semi;colon", "x" * 129, "é"])
def test_request_id_unsafe_or_missing_is_replaced(web, offered):
    response = web.get("/healthz", headers={"X-Request-ID": offered})

    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_request_id_is_on_problem_answers_too(web):
    response = web.get("/no-such-route", headers={"X-Request-ID": "r1"})

    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "r1"


def make_record(message="hello"):
    record = logging.LogRecord(
        "taskgate.x", logging.INFO, __file__, 1, message, (), None
    )
    ContextFilter().filter(record)
    return record


def test_log_context_text_format_appends_ids():
    bind_request("req-1")
    bind_task("t" * 32)
    try:
        line = TextFormatter("%(message)s").format(make_record())
    finally:
        bind_request(None)

    assert line == f"hello request_id=req-1 task_id={'t' * 32}"
    assert TextFormatter("%(message)s").format(make_record()) == "hello"


def test_log_context_json_format_has_id_members():
    bind_request("req-2")
    try:
        line = _formatter("json").format(make_record())
    finally:
        bind_request(None)

    fields = json.loads(line)
    assert fields["message"] == "hello"
    assert fields["request_id"] == "req-2"
    assert fields["task_id"] is None
    assert {"time", "level", "logger", "process"} <= set(fields)


@pytest.mark.slow
def test_request_id_reaches_a_json_log_line_of_the_web_process(
    make_stack, redis_server_instance
):
    # Web alone, no broker: /readyz logs a warning within the request.
    stack = make_stack(redis_server_instance.url(6), LOG_FORMAT="json")
    stack.start_web()

    response = requests.get(
        stack.url("/readyz"), headers={"X-Request-ID": "trace-42"}, timeout=10
    )

    assert response.status_code == 503
    assert response.headers["X-Request-ID"] == "trace-42"
    lines = wait_for(
        lambda: [
            json.loads(line)
            for line in stack.processes[0].log().splitlines()
            if "trace-42" in line
        ],
        what="the request's log line",
    )
    assert lines[0]["request_id"] == "trace-42"
    assert lines[0]["message"].startswith("not ready")


@pytest.mark.slow
def test_healthy_tasks_leave_no_broker_or_worker_log_line(stack):
    task = requests.post(stack.url("/v1/tasks/echo"), json={"a": 1}, timeout=30).json()

    assert task["status"] == "succeeded"
    assert task["id"] not in stack.broker.log()
    assert task["id"] not in stack.pool.log()
