"""Examples Schemathesis found against the served document, kept as plain tests.

Each test names the request Schemathesis sent (``tests/test_schemathesis.py``)
and checks both sides of what went wrong: what the server answers, and that the
document says the same. Validation runs before Redis or the broker are needed,
so most run on the Flask test client; what needs Redis or the broker runs on
the shared real stack (the app's clients start greenlets that must not outlive a
test in the pytest process).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest
import requests
from flask.testing import FlaskClient

from app import create_app
from app.schemas import Task
from conf.settings import Settings
from tests.conftest import Stack

ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def app_and_document(settings: Settings) -> tuple[FlaskClient, dict[str, Any]]:
    app = create_app(settings)
    return app.test_client(), orjson.loads(app.config["TASKGATE_OPENAPI"])


def parameter(
    document: dict[str, Any], path: str, method: str, name: str
) -> dict[str, Any]:
    """The schema the document gives one parameter of one operation."""
    operation = document["paths"][path][method]
    found = [p for p in operation["parameters"] if p["name"] == name]
    assert len(found) == 1, (path, method, name)
    schema: dict[str, Any] = found[0]["schema"]
    return schema


def documented_valid(schema: dict[str, Any], value: str) -> bool:
    return re.fullmatch(schema["pattern"], value) is not None


@pytest.mark.parametrize(
    ("query", "name"),
    [
        # Found as GET /v1/tasks?name=&limit=1&cursor=
        ({"name": ""}, "name"),
        ({"cursor": ""}, "cursor"),
        ({"name": "echo\n"}, "name"),
        ({"cursor": "MTox"}, "cursor"),
    ],
)
def test_listing_refuses_what_its_document_refuses(app_and_document, query, name):
    client, document = app_and_document
    response = client.get("/v1/tasks", query_string=query)
    assert response.status_code == 400
    assert response.json["type"] == "/problems/invalid-query"
    schema = parameter(document, "/v1/tasks", "get", name)
    assert not documented_valid(schema, query[name])


@pytest.mark.slow
def test_any_cursor_of_the_documented_shape_is_a_place_in_the_listing(
    app_and_document, stack: Stack
):
    _, document = app_and_document
    cursor = f"1.5:{ID}"
    assert documented_valid(parameter(document, "/v1/tasks", "get", "cursor"), cursor)
    response = requests.get(
        stack.url("/v1/tasks"), params={"cursor": cursor, "name": "e"}, timeout=10
    )
    assert response.status_code == 200
    assert response.json() == {"tasks": [], "next_cursor": None}


# Found as POST /v1/tasks/A?wait=0&time_limit= (400 for a documented value).
@pytest.mark.parametrize("value", ["", "0", "0.000", "1\n", "-1", "1e3"])
def test_time_limits_the_document_refuses_are_400(app_and_document, value):
    client, document = app_and_document
    schema = parameter(document, "/v1/tasks/{task}", "post", "time_limit")
    assert not documented_valid(schema, value)
    response = client.post(
        "/v1/tasks/A", query_string={"wait": "0", "time_limit": value}, json={}
    )
    assert response.status_code == 400
    assert response.json["type"] == "/problems/invalid-time-limit"


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0.5", "007", "999999999.999999"])
def test_time_limits_the_document_allows_are_taken(app_and_document, stack, value):
    _, document = app_and_document
    schema = parameter(document, "/v1/tasks/{task}", "post", "time_limit")
    assert documented_valid(schema, value)
    response = requests.post(
        stack.url("/v1/tasks/echo"),
        params={"wait": "0", "time_limit": value},
        json={},
        timeout=10,
    )
    assert response.status_code == 202


@pytest.mark.parametrize("value", ["1\n", "1 ", " 1"])
def test_a_wait_with_anything_around_the_number_is_refused(app_and_document, value):
    client, document = app_and_document
    assert not documented_valid(
        parameter(document, "/v1/tasks/{task}", "get", "wait"), value
    )
    response = client.get(f"/v1/tasks/{ID}", query_string={"wait": value})
    assert response.status_code == 400
    assert response.json["type"] == "/problems/invalid-wait"


@pytest.mark.parametrize("key", ["", "a,b", '"a"b"', "é", "k" * 256, "with space"])
def test_idempotency_keys_the_document_refuses_are_400(app_and_document, key):
    client, document = app_and_document
    schema = parameter(document, "/v1/tasks/{task}", "post", "Idempotency-Key")
    assert not documented_valid(schema, key)
    response = client.post("/v1/tasks/echo", headers={"Idempotency-Key": key}, json={})
    assert response.status_code == 400
    assert response.json["type"] == "/problems/invalid-idempotency-key"


@pytest.mark.parametrize("path", [f"/v1/tasks/{ID}", "/v1/tasks/echo"])
@pytest.mark.parametrize("method", ["OPTIONS", "PUT"])
def test_allow_names_the_methods_the_document_gives_the_url(
    app_and_document, path, method
):
    # Found as OPTIONS /v1/tasks/<id>: Allow listed POST, which the document
    # had under another path template, /v1/tasks/{name}, for the same URLs.
    client, document = app_and_document
    response = client.open(path, method=method)
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    documented = {m.upper() for m in document["paths"]["/v1/tasks/{task}"]}
    assert allowed - {"HEAD", "OPTIONS"} == documented == {"GET", "POST", "DELETE"}


def test_no_two_paths_differ_only_in_parameter_names(app_and_document):
    _, document = app_and_document
    shapes = [re.sub(r"{[^}]+}", "{}", path) for path in document["paths"]]
    assert len(shapes) == len(set(shapes))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "status", "problem_type"),
    [
        # Found as POST /api/process with {} and with no body: the document
        # allowed any object, and no body at all.
        (b"{}", 422, "/problems/invalid-arguments"),
        (b"", 400, "/problems/invalid-body"),
        (b'{"data": 1, "more": 2}', 422, "/problems/invalid-arguments"),
    ],
)
def test_api_process_refuses_bodies_its_document_refuses(
    stack: Stack, body, status, problem_type
):
    response = requests.post(
        stack.url("/api/process"),
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == status
    assert response.json()["type"] == problem_type
    document = requests.get(stack.url("/openapi.json"), timeout=10).json()
    request_body = document["paths"]["/api/process"]["post"]["requestBody"]
    schema = request_body["content"]["application/json"]["schema"]
    assert request_body["required"] is True
    assert schema["required"] == ["data"]
    assert schema["additionalProperties"] is False
    ok = requests.post(stack.url("/api/process"), json={"data": 1}, timeout=10)
    assert ok.json() == {"processed": True, "result": "Processed: 1"}


def read_events_as_clients_do(text: str) -> list[dict[str, Any]]:
    """Events as an EventSource sees them: event defaults to "message"."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            if name in ("event", "id", "data"):
                fields[name] = value
        if "data" in fields:
            events.append({"event": "message", **fields})
    return events


@pytest.mark.slow
def test_each_event_of_a_stream_fits_the_documented_event(stack: Stack):
    # Found as GET /v1/tasks/<id>/events: the document said the stream was a
    # string; Schemathesis reads one schema per event, as OpenAPI 3.2 does.
    task_id = requests.post(
        stack.url("/v1/tasks/echo"), json={"x": 1}, timeout=10
    ).json()["id"]
    stream = requests.get(stack.url(f"/v1/tasks/{task_id}/events"), timeout=10)
    document = requests.get(stack.url("/openapi.json"), timeout=10).json()
    operation = document["paths"]["/v1/tasks/{task_id}/events"]["get"]
    schema = operation["responses"]["200"]["content"]["text/event-stream"]["schema"]

    events = read_events_as_clients_do(stream.text)
    assert len(events) == 1
    for event in events:
        assert set(schema["required"]) <= set(event) <= set(schema["properties"])
        assert event["event"] in schema["properties"]["event"]["enum"]
        assert re.fullmatch(schema["properties"]["id"]["pattern"], event["id"])
        task = Task.model_validate(json.loads(event["data"]))
        assert task.id == task_id
        assert task.status == "succeeded"
