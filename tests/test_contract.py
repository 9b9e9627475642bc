"""The HTTP contract against real processes: auth, Prefer, limits, hostile input.

One stack for the module, with API keys set, so every request here also proves
that a valid key is accepted.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from app import schemas
from tests.conftest import RedisServer, Stack
from tests.helpers import flush_redis, wait_for

pytestmark = pytest.mark.slow

KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {"Content-Type": "application/json", **AUTH}


@pytest.fixture(scope="module")
def keyed(
    redis_server_instance: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack on database 2 that requires a bearer key."""
    redis_url = redis_server_instance.url(2)
    flush_redis(redis_url)
    running = Stack(
        redis_url,
        tmp_path_factory.mktemp("keyed-logs"),
        TASKGATE_API_KEYS=f"{KEY}, {OTHER_KEY}",
        TASKGATE_MAX_JSON_DEPTH="8",
        TASKGATE_MAX_JSON_ITEMS="50",
        TASKGATE_MAX_BODY_BYTES="65536",
    )
    try:
        yield running.start_all()
    finally:
        running.stop_all()


def post(stack, path, body, headers=None, timeout=30, **params):
    return requests.post(
        stack.url(path),
        json=body,
        params=params,
        headers={**AUTH, **(headers or {})},
        timeout=timeout,
    )


def assert_still_working(stack):
    response = post(stack, "/v1/tasks/echo", {"ok": True})
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"ok": True}


@pytest.mark.parametrize(
    ("headers", "status", "problem_type"),
    [
        ({}, 401, "/problems/unauthorized"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "/problems/unauthorized"),
        ({"Authorization": "Bearer"}, 401, "/problems/unauthorized"),
        ({"Authorization": "Bearer wrong-key-0123456789"}, 403, "/problems/forbidden"),
        ({"Authorization": f"Bearer {KEY}x"}, 403, "/problems/forbidden"),
    ],
)
def test_api_routes_need_a_valid_bearer_key(keyed, headers, status, problem_type):
    for method, path in (
        ("POST", "/v1/tasks/echo"),
        ("GET", "/v1/tasks/" + "0" * 32),
        ("POST", "/api/process"),
    ):
        response = requests.request(
            method, keyed.url(path), json={}, headers=headers, timeout=10
        )
        assert response.status_code == status, (method, path)
        assert response.json()["type"] == problem_type
        if status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_every_configured_key_works_and_health_stays_open(keyed):
    other = {"Authorization": f"bearer {OTHER_KEY}"}
    response = post(keyed, "/v1/tasks/echo", {"n": 1}, headers=other)
    assert response.status_code == 200
    assert requests.get(keyed.url("/healthz"), timeout=5).status_code == 200


def test_prefer_respond_async_answers_202_at_once(keyed):
    started = time.monotonic()
    response = post(
        keyed, "/v1/tasks/sleep", {"seconds": 2}, headers={"Prefer": "respond-async"}
    )

    assert response.status_code == 202
    assert time.monotonic() - started < 1.5
    assert response.headers["Preference-Applied"] == "respond-async"
    assert "Prefer" in response.headers["Vary"]
    assert response.headers["Location"] == f"/v1/tasks/{response.json()['id']}"


def test_prefer_wait_sets_the_synchronous_wait(keyed):
    response = post(
        keyed, "/v1/tasks/sleep", {"seconds": 3}, headers={"Prefer": "wait=0.5"}
    )
    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "wait=0.5"
    assert int(response.headers["Retry-After"]) >= 1

    quick = post(keyed, "/v1/tasks/echo", {"a": 1}, headers={"Prefer": "wait=5"})
    assert quick.status_code == 200
    assert quick.headers["Preference-Applied"] == "wait=5"
    assert "Prefer" in quick.headers["Vary"]


def test_query_wait_wins_over_prefer_and_the_first_of_duplicates_counts(keyed):
    query = post(
        keyed, "/v1/tasks/echo", {}, headers={"Prefer": "respond-async"}, wait="5"
    )
    assert query.status_code == 200
    assert "Preference-Applied" not in query.headers

    # requests folds repeated headers; http.client sends each one as given.
    connection = http.client.HTTPConnection("127.0.0.1", int(keyed.env["PORT"]), 10)
    connection.putrequest("POST", "/v1/tasks/echo")
    for name, value in [
        ("Content-Type", "application/json"),
        ("Authorization", f"Bearer {KEY}"),
        ("Content-Length", "2"),
        ("Prefer", "wait=5, wait=0"),
        ("Prefer", "wait=0"),
    ]:
        connection.putheader(name, value)
    connection.endheaders(b"{}")
    duplicated = connection.getresponse()
    duplicated.read()
    connection.close()
    assert duplicated.status == 200
    assert duplicated.headers["Preference-Applied"] == "wait=5"


def test_unreadable_preferences_are_ignored(keyed):
    response = post(
        keyed, "/v1/tasks/echo", {}, headers={"Prefer": "wait=soon, frobnicate"}
    )
    assert response.status_code == 200
    assert "Preference-Applied" not in response.headers


def test_retry_after_follows_the_progress_of_a_running_task(keyed):
    accepted = post(
        keyed,
        "/v1/tasks/countdown",
        {"steps": 10, "interval_s": 0.5},
        headers={"Prefer": "wait=1.6"},
    )
    assert accepted.status_code == 202
    # About 3 of 10 steps done in 1.6 s: some 3 to 4 s remain.
    assert 2 <= int(accepted.headers["Retry-After"]) <= 6
    requests.delete(keyed.url(accepted.headers["Location"]), headers=AUTH, timeout=5)


DEEP = b'{"a": ' + b"[" * 9 + b"]" * 9 + b"}"
# Deep and with a long integer: the integer check parses recursively, and once
# answered 500 (RecursionError) before the depth limit ran first.
DEEP_LONG = b'{"a": ' + b"[" * 1010 + b"12345678901234567890" + b"]" * 1010 + b"}"
WIDE = b'{"a": [' + b",".join([b"1"] * 60) + b"]}"


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "problem_type"),
    [
        ("/v1/tasks/echo", b"{not json", "application/json", 400, "invalid-body"),
        ("/v1/tasks/echo", b"", "application/json", 400, "invalid-body"),
        ("/v1/tasks/echo", b"null", "application/json", 400, "invalid-body"),
        ("/v1/tasks/echo", b"[1]", "application/json", 400, "invalid-body"),
        ("/v1/tasks/echo", b'"s"', "application/json", 400, "invalid-body"),
        ("/v1/tasks/echo", b"{}", "text/plain", 415, "unsupported-media-type"),
        ("/v1/tasks/echo", b"{}", "application/xml", 415, "unsupported-media-type"),
        ("/v1/tasks/echo", b"x" * 70_000, "application/json", 413, None),
        ("/v1/tasks/echo", DEEP, "application/json", 400, "invalid-body"),
        ("/v1/tasks/echo", b"[" * 5000, "application/json", 400, "invalid-body"),
        ("/v1/tasks/echo", WIDE, "application/json", 400, "invalid-body"),
        ("/v1/tasks/echo", DEEP_LONG, "application/json", 400, "invalid-body"),
        (
            "/v1/tasks/echo",
            b'{"a": "\\ud800"}',
            "application/json",
            400,
            "invalid-body",
        ),
        ("/v1/tasks/echo", b'{"a": "\x00"}', "application/json", 400, "invalid-body"),
        ("/v1/tasks/echo", b'{"a"\x00: 1}', "application/json", 400, "invalid-body"),
        ("/v1/tasks/" + "e" * 65, b"{}", "application/json", 404, "unknown-task"),
        ("/v1/tasks/" + "e" * 3000, b"{}", "application/json", 404, "unknown-task"),
        ("/v1/tasks/echo?wait=-1", b"{}", "application/json", 400, "invalid-wait"),
        ("/v1/tasks/echo?wait=1e99", b"{}", "application/json", 400, "invalid-wait"),
        (
            "/v1/tasks/echo?wait=99999999999",
            b"{}",
            "application/json",
            400,
            "invalid-wait",
        ),
        ("/v1/tasks/echo?wait=inf", b"{}", "application/json", 400, "invalid-wait"),
        ("/v1/tasks/echo?wait=%00", b"{}", "application/json", 400, "invalid-wait"),
    ],
)
def test_hostile_bodies_get_their_problem_and_the_service_stays_up(
    keyed, path, body, content_type, status, problem_type
):
    response = requests.post(
        keyed.url(path),
        data=body,
        headers={"Content-Type": content_type, **AUTH},
        timeout=10,
    )

    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    expected = f"/problems/{problem_type}" if problem_type else "about:blank"
    assert problem["type"] == expected
    assert problem["status"] == status
    assert_still_working(keyed)


def test_escaped_nul_is_an_ordinary_character(keyed):
    response = post(keyed, "/v1/tasks/echo", {"a": "x\x00y"})
    assert response.status_code == 200
    assert response.json()["result"] == {"a": "x\x00y"}


@pytest.mark.parametrize(
    "task_id", ["0" * 32, "not-ours", "A" * 32, "f" * 31, "x" * 3000, "%00", "%2e%2e"]
)
def test_ids_that_are_not_ours_are_404(keyed, task_id):
    response = requests.get(keyed.url(f"/v1/tasks/{task_id}"), headers=AUTH, timeout=5)
    assert response.status_code == 404
    assert response.json()["type"] == "/problems/unknown-task-id"
    assert_still_working(keyed)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/tasks/echo", "POST"),
        ("PATCH", "/v1/tasks/" + "0" * 32, "GET"),
        ("DELETE", "/api/process", "POST"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_unknown_methods_are_405_with_allow(keyed, method, path, allowed):
    response = requests.request(method, keyed.url(path), headers=AUTH, timeout=5)
    assert response.status_code == 405
    assert allowed in response.headers["Allow"]
    assert response.json()["status"] == 405
    assert_still_working(keyed)


def test_api_process_is_the_alias_under_the_same_key(keyed, tmp_path: Path):
    response = post(keyed, "/api/process", {"data": "hi"})
    assert response.json() == {"processed": True, "result": "Processed: hi"}


def test_one_idempotency_key_under_concurrent_duplicates_makes_one_task(keyed):
    key = f"key-{time.monotonic_ns()}"
    headers = {"Idempotency-Key": key, "Prefer": "respond-async"}

    def submit(_):
        return post(keyed, "/v1/tasks/sleep", {"seconds": 0.5}, headers=headers)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(submit, range(20)))

    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    task_id = responses[0].json()["id"]
    same_args = requests.post(
        keyed.url("/v1/tasks/sleep"),
        data=b'{ "seconds" :0.5 }',
        headers={**JSON, "Idempotency-Key": key, "Prefer": "wait=5"},
        timeout=10,
    )
    assert same_args.status_code == 200
    assert same_args.json()["id"] == task_id
    assert same_args.json()["status"] == "succeeded"


def test_an_idempotency_key_with_another_body_is_422(keyed):
    key = f"key-{time.monotonic_ns()}"
    first = post(keyed, "/v1/tasks/echo", {"a": 1}, headers={"Idempotency-Key": key})
    assert first.status_code == 200

    for name, body in (("echo", {"a": 2}), ("process", {"data": "x"})):
        again = post(keyed, f"/v1/tasks/{name}", body, headers={"Idempotency-Key": key})
        assert again.status_code == 422
        assert again.json()["type"] == "/problems/idempotency-key-reused"
    for malformed in ("a b", "first,second"):  # gunicorn joins a repeated header so
        bad = post(keyed, "/v1/tasks/echo", {}, headers={"Idempotency-Key": malformed})
        assert bad.status_code == 400
        assert bad.json()["type"] == "/problems/invalid-idempotency-key"


def list_tasks(stack, **params):
    response = requests.get(
        stack.url("/v1/tasks"), params=params, headers=AUTH, timeout=10
    )
    assert response.status_code == 200, response.text
    return response


def test_listing_is_newest_first_filtered_and_paginated(keyed):
    marker = f"m{time.monotonic_ns()}"
    ids = [
        post(keyed, "/v1/tasks/echo", {"marker": marker, "n": n}).json()["id"]
        for n in range(5)
    ]
    failed = post(keyed, "/v1/tasks/fail", {"message": marker}).json()["task_id"]

    newest = list_tasks(keyed, limit="3").json()
    assert [t["id"] for t in newest["tasks"]] == [failed, *ids[::-1][:2]]

    seen = []
    cursor = None
    for _ in range(50):
        params = {"name": "echo", "limit": "2"}
        if cursor:
            params["cursor"] = cursor
        response = list_tasks(keyed, **params)
        page = response.json()
        assert all(t["name"] == "echo" for t in page["tasks"])
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            assert "Link" not in response.headers
            break
        assert 'rel="next"' in response.headers["Link"]
    assert seen[:5] == ids[::-1]
    assert len(seen) == len(set(seen))

    failures = list_tasks(keyed, status="failed").json()["tasks"]
    assert failed in [t["id"] for t in failures]
    assert all(t["status"] == "failed" for t in failures)
    succeeded = list_tasks(keyed, status="succeeded", name="fail").json()
    assert succeeded == {"tasks": [], "next_cursor": None}


@pytest.mark.parametrize(
    "query",
    [
        {"status": "done"},
        {"name": "bad name"},
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "-1"},
        {"cursor": "garbage"},
        {"cursor": "MTox"},
    ],
)
def test_listing_refuses_bad_queries(keyed, query):
    response = requests.get(
        keyed.url("/v1/tasks"), params=query, headers=AUTH, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["type"] == "/problems/invalid-query"


def test_task_types_list_what_live_workers_serve(keyed):
    response = requests.get(keyed.url("/v1/task-types"), headers=AUTH, timeout=10)

    assert response.status_code == 200
    types = {t["name"]: t for t in response.json()["task_types"]}
    assert types["sleep"]["required"] == ["seconds"]
    assert types["echo"]["accepts_any"] is True
    assert types["sleep"]["doc"]
    assert types["sleep"]["workers"] == 1


def test_workers_list_live_pools_with_their_work(keyed):
    assert_still_working(keyed)
    accepted = post(
        keyed, "/v1/tasks/sleep", {"seconds": 2}, headers={"Prefer": "respond-async"}
    )
    task_id = accepted.json()["id"]

    def running_somewhere():
        workers = requests.get(
            keyed.url("/v1/workers"), headers=AUTH, timeout=10
        ).json()["workers"]
        ids = [t["id"] for w in workers for t in w["current_tasks"]]
        return workers if task_id in ids else None

    workers = wait_for(running_somewhere, timeout_s=10, what="the task in a worker")
    assert len(workers) == 1
    pool = workers[0]
    assert pool["pid"] == keyed.pool.pid
    assert "sleep" in pool["tasks"]
    assert pool["tasks_done"] >= 1
    assert pool["last_heartbeat"].endswith("Z")
    requests.delete(keyed.url(f"/v1/tasks/{task_id}"), headers=AUTH, timeout=5)


def read_events(response, limit=200):
    """Parsed SSE messages (data as JSON) until the server ends the stream."""
    messages, data, name = [], [], None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            data.append(line[6:])
        elif line.startswith("event: "):
            name = line[7:]
        elif line == "" and data:
            messages.append((name, json.loads("\n".join(data))))
            data, name = [], None
        if len(messages) >= limit:
            break
    return messages


def test_events_stream_progress_and_end_with_the_final_state(keyed):
    accepted = post(
        keyed,
        "/v1/tasks/countdown",
        {"steps": 3, "interval_s": 0.3},
        headers={"Prefer": "respond-async"},
    )
    task_id = accepted.json()["id"]

    with requests.get(
        keyed.url(f"/v1/tasks/{task_id}/events"), headers=AUTH, stream=True, timeout=15
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        messages = read_events(response)

    statuses = [task["status"] for _, task in messages]
    assert statuses[-1] == "succeeded"
    assert messages[-1][1]["progress"] == {"current": 3, "total": 3, "message": "done"}
    steps = {task["progress"]["current"] for _, task in messages if task["progress"]}
    assert len(steps) >= 2
    assert all(name is None for name, _ in messages)


def test_events_of_a_finished_task_send_it_once_and_unknown_ids_are_404(keyed):
    task_id = post(keyed, "/v1/tasks/echo", {"x": 1}).json()["id"]
    with requests.get(
        keyed.url(f"/v1/tasks/{task_id}/events"), headers=AUTH, stream=True, timeout=10
    ) as response:
        messages = read_events(response)
    assert [task["status"] for _, task in messages] == ["succeeded"]

    missing = requests.get(
        keyed.url(f"/v1/tasks/{'0' * 32}/events"), headers=AUTH, timeout=5
    )
    assert missing.status_code == 404
    assert missing.json()["type"] == "/problems/unknown-task-id"


def test_a_client_that_leaves_an_event_stream_leaves_the_service_working(keyed):
    accepted = post(
        keyed, "/v1/tasks/sleep", {"seconds": 3}, headers={"Prefer": "respond-async"}
    )
    task_id = accepted.json()["id"]
    for _ in range(20):
        response = requests.get(
            keyed.url(f"/v1/tasks/{task_id}/events"),
            headers=AUTH,
            stream=True,
            timeout=10,
        )
        next(response.iter_lines())
        response.close()
    assert_still_working(keyed)
    requests.delete(keyed.url(f"/v1/tasks/{task_id}"), headers=AUTH, timeout=5)


def test_a_finished_task_redirects_to_its_result_only_when_asked(keyed):
    task_id = post(keyed, "/v1/tasks/echo", {"v": 7}).json()["id"]
    location = keyed.url(f"/v1/tasks/{task_id}")

    plain = requests.get(location, headers=AUTH, timeout=5)
    assert plain.status_code == 200
    assert plain.json()["id"] == task_id

    asked = requests.get(
        location,
        params={"redirect": "result"},
        headers=AUTH,
        allow_redirects=False,
        timeout=5,
    )
    assert asked.status_code == 303
    assert asked.headers["Location"] == f"/v1/tasks/{task_id}/result"
    assert "Content-Type" not in asked.headers
    assert asked.content == b""
    followed = requests.get(
        location, params={"redirect": "result"}, headers=AUTH, timeout=5
    )
    assert followed.json() == {"v": 7}


def test_a_running_task_has_no_result_and_is_not_redirected(keyed):
    accepted = post(
        keyed, "/v1/tasks/sleep", {"seconds": 2}, headers={"Prefer": "respond-async"}
    )
    location = keyed.url(accepted.headers["Location"])
    asked = requests.get(
        location, params={"redirect": "result"}, headers=AUTH, timeout=5
    )
    assert asked.status_code == 200
    result = requests.get(location + "/result", headers=AUTH, timeout=5)
    assert result.status_code == 409
    assert result.json()["type"] == "/problems/task-not-succeeded"
    bad = requests.get(location, params={"redirect": "yes"}, headers=AUTH, timeout=5)
    assert bad.status_code == 400
    requests.delete(location, headers=AUTH, timeout=5)


def test_the_contract_is_served_without_a_key_and_works_offline(keyed):
    spec = requests.get(keyed.url("/openapi.json"), timeout=10)
    assert spec.status_code == 200
    document = spec.json()
    assert document["openapi"] == "3.1.0"
    assert document["paths"]["/v1/tasks/{task}"]["post"]["security"] == [{"bearer": []}]

    page = requests.get(keyed.url("/docs"), timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
    assert len(assets) == 3
    assert all(not asset.startswith("//") for asset in assets)
    for asset in assets:
        response = requests.get(keyed.url(asset), timeout=10)
        assert response.status_code == 200
        assert len(response.content) > 10_000
    assert requests.get(keyed.url("/docs/assets/x.js"), timeout=5).status_code == 404

    for problem_type in document["x-problem-types"]:
        described = requests.get(keyed.url(problem_type), timeout=5)
        assert described.status_code == 200
        assert described.json()["type"] == problem_type
    unknown = requests.get(keyed.url("/problems/nope"), timeout=5)
    assert unknown.json()["type"] == "/problems/unknown-problem-type"


def test_real_answers_match_the_documented_schemas(keyed):
    task = post(keyed, "/v1/tasks/countdown", {"steps": 1, "interval_s": 0})
    schemas.Task.model_validate(task.json(), strict=False)
    failed = post(keyed, "/v1/tasks/fail", {"message": "x"})
    schemas.Problem.model_validate(failed.json())
    for path, model in (
        ("/v1/tasks?limit=5", schemas.TaskPage),
        ("/v1/task-types", schemas.TaskTypes),
        ("/v1/workers", schemas.Workers),
    ):
        answer = requests.get(keyed.url(path), headers=AUTH, timeout=10).json()
        model.model_validate(answer)
        assert answer  # not trivially empty


def test_retry_after_grows_with_the_queue_before_a_task(keyed):
    async_ = {"Prefer": "respond-async"}
    accepted = [
        post(keyed, "/v1/tasks/sleep", {"seconds": 3}, headers=async_)
        for _ in range(14)
    ]
    try:
        first, last = accepted[0], accepted[-1]
        assert int(first.headers["Retry-After"]) <= 2
        # 4 worker processes: at least 9 tasks queued before the last are 2 rounds.
        assert int(last.headers["Retry-After"]) >= 3
    finally:
        for response in accepted:
            requests.delete(
                keyed.url(response.headers["Location"]), headers=AUTH, timeout=5
            )


def test_idempotency_keys_are_scoped_to_the_api_key(keyed):
    key = f"key-{time.monotonic_ns()}"
    mine = post(keyed, "/v1/tasks/echo", {"a": 1}, headers={"Idempotency-Key": key})
    theirs = post(
        keyed,
        "/v1/tasks/echo",
        {"a": 2},
        headers={"Idempotency-Key": key, "Authorization": f"Bearer {OTHER_KEY}"},
    )
    assert mine.status_code == theirs.status_code == 200
    assert mine.json()["id"] != theirs.json()["id"]


def test_an_idempotency_key_is_scoped_to_the_api_key_not_its_spelling(keyed):
    key = f"spelling-{time.monotonic_ns()}"
    ids = set()
    for authorization in (f"Bearer {KEY}", f"bearer {KEY}", f"Bearer  {KEY}"):
        response = requests.post(
            keyed.url("/v1/tasks/echo"),
            params={"wait": "0"},
            json={"a": 1},
            headers={"Authorization": authorization, "Idempotency-Key": key},
            timeout=10,
        )
        assert response.status_code in (200, 202), response.text
        ids.add(response.json()["id"])

    assert len(ids) == 1
