"""GET /v1/stats and the dashboard's files, against a real stack and in-process."""

from __future__ import annotations

import pytest
import requests

from app import create_app
from tests.helpers import wait_for

KEY = "dashboard-test-key-0123456789"


def post(stack, name, body, **query):
    return requests.post(
        stack.url(f"/v1/tasks/{name}"), json=body, params=query, timeout=30
    )


def stats(stack, **headers):
    response = requests.get(stack.url("/v1/stats"), headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def row(body, name):
    return next(entry for entry in body["task_names"] if entry["name"] == name)


@pytest.mark.slow
def test_stats_show_queues_capacity_and_throughput(make_stack, redis_server_instance):
    stack = make_stack(
        redis_server_instance.url(12), TASKGATE_WORKER_PROCESSES="1"
    ).start_all()
    assert post(stack, "echo", {"n": 1}).status_code == 200
    assert post(stack, "echo", {"n": 2}).status_code == 200
    assert post(stack, "fail", {}).status_code == 500
    slow = post(stack, "sleep", {"seconds": 3}, wait="0").json()["id"]
    wait_for(
        lambda: stack.store.get(slow)[b"status"] == b"running",
        what="the sleep task to run",
    )
    queued = post(stack, "echo", {"n": 3}, wait="0").json()["id"]

    # The pool's record of its current task is written at its next heartbeat.
    body = wait_for(
        lambda: (b := stats(stack)) and row(b, "sleep")["running"] == 1 and b,
        what="the pool's heartbeat to show the running task",
    )
    assert body["workers"] == 1
    assert body["queued"] == 1
    assert body["running"] == 1
    assert row(body, "echo") == {
        "name": "echo",
        "queued": 1,
        "running": 0,
        "pools": 1,
        "slots": 1,
        "idle_slots": 0,
    }
    buckets = body["throughput"]["buckets"]
    assert body["throughput"]["bucket_s"] == 10
    assert len(buckets) == 30
    assert sum(b["submitted"] for b in buckets) == 5
    assert sum(b["succeeded"] for b in buckets) == 2
    assert sum(b["failed"] for b in buckets) == 1
    assert buckets[0]["start"] < buckets[-1]["start"]

    requests.get(stack.url(f"/v1/tasks/{queued}?wait=15"), timeout=30)
    body = stats(stack)
    assert body["queued"] == 0
    assert sum(b["succeeded"] for b in body["throughput"]["buckets"]) == 4


@pytest.mark.slow
def test_stats_need_the_key_and_the_dashboard_page_does_not(
    make_stack, redis_server_instance
):
    stack = make_stack(redis_server_instance.url(13), TASKGATE_API_KEYS=KEY).start_all()

    assert requests.get(stack.url("/v1/stats"), timeout=10).status_code == 401
    wrong = requests.get(
        stack.url("/v1/stats"),
        headers={"Authorization": "Bearer " + "x" * 20},
        timeout=10,
    )
    assert wrong.status_code == 403
    assert stats(stack, Authorization=f"Bearer {KEY}")["workers"] == 1
    page = requests.get(stack.url("/dashboard"), timeout=10)
    assert page.status_code == 200
    assert "/static/dashboard/dashboard.js" in page.text


def test_dashboard_page_and_its_files_are_served(settings):
    client = create_app(settings).test_client()

    page = client.get("/dashboard")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert page.headers["Cache-Control"] == "no-cache"
    html = page.get_data(as_text=True)
    page.close()
    for path, mimetype in (
        ("/static/dashboard/dashboard.js", "text/javascript"),
        ("/static/dashboard/dashboard.css", "text/css"),
    ):
        asset = client.get(path)
        assert asset.status_code == 200, path
        assert asset.mimetype == mimetype
        asset.close()
    # Nothing is loaded from another origin.
    assert "http://" not in html
    assert "https://" not in html


def test_stats_are_in_the_openapi_document(settings):
    app = create_app(settings)
    document = app.test_client().get("/openapi.json").get_json()
    operation = document["paths"]["/v1/stats"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Stats"
    }
    assert "401" in operation["responses"]
    assert "Stats" in document["components"]["schemas"]
    assert document["paths"]["/dashboard"]["get"]["security"] == []
