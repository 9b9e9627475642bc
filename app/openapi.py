"""The OpenAPI 3.1 document, built once per process at start from the app itself.

apispec assembles it: its Flask plugin turns every URL rule into a path (so a
route cannot be missing or misspelt), the response schemas come from the pydantic
models of :mod:`app.schemas`, the problem types from :mod:`app.problems`, and the
limits from the settings in force. What only words can say (parameters, headers,
which statuses a route answers) is in :data:`OPERATIONS` below, keyed by endpoint;
a test fails when a route has no entry there.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec_webframeworks.flask import FlaskPlugin
from flask import Flask

from app.docs import ASSET_FILES
from app.idempotency import KEY_SYNTAX
from app.listing import CURSOR
from app.params import POSITIVE_SECONDS, SECONDS
from app.problems import PROBLEM_TYPES, problem_uri
from app.request_ids import SAFE_ID
from app.schemas import MODELS
from conf.settings import Settings
from worker.registry import TASK_NAME
from worker.store import TaskStatus

REF = "#/components/schemas/{model}"
UNDOCUMENTED = {"static"}
# OpenAPI 3.1 forbids two path templates that differ only in their parameter's
# name, and Flask names the segment after each view's use of it: POST reads a
# task name there, GET and DELETE a task id. The document gives that segment one
# name, so the URL is one path item whose operations each say what it holds.
SHARED_SEGMENTS = {
    "/v1/tasks/<name>": "/v1/tasks/<task>",
    "/v1/tasks/<task_id>": "/v1/tasks/<task>",
}


class TaskgateFlaskPlugin(FlaskPlugin):
    """apispec's Flask plugin, with the shared segments named once."""

    @staticmethod
    def flaskpath2openapi(path: str) -> str:
        return FlaskPlugin.flaskpath2openapi(SHARED_SEGMENTS.get(path, path))


def openapi_path(rule: str) -> str:
    """The document's path template of a Flask URL rule."""
    return TaskgateFlaskPlugin.flaskpath2openapi(rule)


def _json(schema: str, description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=schema)}}},
        **extra,
    }


def _problems(*slugs: str) -> dict[str, Any]:
    """Problem responses grouped by status, each listing its possible types."""
    by_status: dict[int, list[str]] = {}
    for slug in slugs:
        by_status.setdefault(PROBLEM_TYPES[slug].status, []).append(slug)
    responses: dict[str, Any] = {}
    for status, group in sorted(by_status.items()):
        responses[str(status)] = {
            "description": "; ".join(
                f"`{problem_uri(s)}`: {PROBLEM_TYPES[s].title}" for s in group
            ),
            "content": {
                "application/problem+json": {
                    "schema": {"$ref": REF.format(model="Problem")}
                }
            },
        }
    return responses


def _blank(status: int, description: str) -> dict[str, Any]:
    return {
        str(status): {
            "description": f"{description} (type `about:blank`)",
            "content": {
                "application/problem+json": {
                    "schema": {"$ref": REF.format(model="Problem")}
                }
            },
        }
    }


ID_SCHEMA = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": ID_SCHEMA}
TASK_BY_ID = {
    "name": "task",
    "in": "path",
    "required": True,
    "description": "the task's id",
    "schema": ID_SCHEMA,
}
WAIT = {
    "name": "wait",
    "in": "query",
    "description": "seconds to wait; plain decimal, capped at TASKGATE_WAIT_MAX_S",
    "schema": {"type": "string", "pattern": SECONDS.pattern},
}
LOCATION = {"description": "the task resource", "schema": {"type": "string"}}
RETRY_AFTER = {
    "description": "seconds until it is worth asking again (from the task's progress)",
    "schema": {"type": "integer"},
}
# One server-sent event, as read by a client: data is a JSON document.
EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["message", "gone", "unavailable"]},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "message: the task resource; gone, unavailable: {}",
        },
        "retry": {"type": "integer"},
    },
}
# Where a submission's answer leads: the id in its body names the task.
TASK_LINKS = {
    operation_id: {
        "operationId": operation_id,
        "parameters": {parameter: "$response.body#/id"},
    }
    for operation_id, parameter in (
        ("get_task", "task"),
        ("cancel_task", "task"),
        ("get_result", "task_id"),
        ("task_events", "task_id"),
    )
}
# Headers an answer of some status always (or, not required, may) carry,
# whichever operation answers it; X-Request-ID is on every answer.
STATUS_HEADERS: dict[str, dict[str, Any]] = {
    "401": {
        "WWW-Authenticate": {
            "required": True,
            "description": "the Bearer challenge",
            "schema": {"type": "string", "pattern": "^Bearer"},
        }
    },
    "405": {
        "Allow": {
            "required": True,
            "description": "the methods the URL answers",
            "schema": {"type": "string"},
        }
    },
    "503": {
        "Retry-After": {
            "required": True,
            "description": "seconds until it is worth trying again",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
    **{
        status: {
            "Location": {
                "description": "the task's record, when the problem is about a task",
                "schema": {"type": "string"},
            }
        }
        for status in ("409", "422", "500")
    },
}
REQUEST_ID_HEADER = {
    "required": True,
    "description": "the request's own id when it is safe (see the parameter), else a new one",
    "schema": {"type": "string", "pattern": SAFE_ID.pattern},
}
REQUEST_ID = {
    "name": "X-Request-ID",
    "in": "header",
    "description": (
        "an id to find this request in the logs by; kept when it is 1-128 letters, "
        "digits or -._:, else replaced (never refused)"
    ),
    "schema": {"type": "string"},
}
AUTH_PROBLEMS = ("unauthorized", "forbidden")
UNAVAILABLE = ("service-unavailable", "queue-full")


def _operations(settings: Settings) -> dict[str, dict[str, Any]]:
    """Per endpoint, per method: what the code alone cannot tell apispec."""
    submit: dict[str, Any] = {
        "summary": "Run a task",
        "description": (
            "The JSON object body is the task's keyword arguments. Answers 200 with "
            "the task when it ends within the wait, else 202. Bodies are limited "
            f"to {settings.max_body_bytes} bytes, {settings.max_json_depth} levels "
            f"of nesting and {settings.max_json_items} values. Idempotency-Key "
            f"holds for {settings.idempotency_ttl_s} s."
        ),
        "parameters": [
            {
                "name": "task",
                "in": "path",
                "required": True,
                "description": "the name of the task to run",
                "schema": {
                    "type": "string",
                    "pattern": TASK_NAME.pattern,
                    "maxLength": settings.max_task_name_chars,
                    "examples": ["echo"],
                },
            },
            WAIT,
            {
                "name": "time_limit",
                "in": "query",
                "description": (
                    "lowers the task's time limit for this call (seconds above 0)"
                ),
                "schema": {"type": "string", "pattern": POSITIVE_SECONDS.pattern},
            },
            {
                "name": "Prefer",
                "in": "header",
                "description": (
                    "RFC 7240: `respond-async` (202 at once), `wait=N` (seconds). "
                    "`?wait=` wins over it. Unreadable preferences are ignored."
                ),
                "schema": {"type": "string"},
            },
            {
                "name": "Idempotency-Key",
                "in": "header",
                "description": (
                    "the same key with the same arguments returns the same task "
                    f"for {settings.idempotency_ttl_s} s; with others, a 422"
                ),
                "schema": {"type": "string", "pattern": KEY_SYNTAX.pattern},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        "responses": {
            "200": _json(
                "Task",
                "the task ended within the wait",
                headers={"Preference-Applied": {"schema": {"type": "string"}}},
            ),
            "202": _json(
                "Task",
                "the task goes on",
                headers={
                    "Location": LOCATION,
                    "Retry-After": RETRY_AFTER,
                    "Preference-Applied": {"schema": {"type": "string"}},
                },
            ),
            **_problems(
                "invalid-body",
                "invalid-wait",
                "invalid-time-limit",
                "invalid-idempotency-key",
                *AUTH_PROBLEMS,
                "unknown-task",
                "task-cancelled",
                "unsupported-media-type",
                "invalid-arguments",
                "idempotency-key-reused",
                "task-failed",
                *UNAVAILABLE,
            ),
            **_blank(413, "the body is larger than TASKGATE_MAX_BODY_BYTES"),
        },
    }
    secured: list[dict[str, list[str]]] = (
        [{"bearer": []}] if settings.api_key_list else []
    )
    listed_task = {"description": "the task resource"}
    operations: dict[str, dict[str, Any]] = {
        "api.healthz": {
            "get": {
                "summary": "Liveness",
                "security": [],
                "responses": {"200": _json("Health", "the process answers")},
            }
        },
        "readiness.readyz": {
            "get": {
                "summary": "Readiness: Redis and the broker answer",
                "security": [],
                "responses": {
                    "200": _json("Readiness", "Redis and the broker answered"),
                    **_problems("not-ready"),
                },
            }
        },
        "metrics.serve_metrics": {
            "get": {
                "summary": "Prometheus metrics of all web processes",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "api.submit_task": {"post": submit},
        "api.process_alias": {
            "post": {
                "summary": "The origin example: the process task, answered with its result",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["data"],
                                "properties": {"data": {}},
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json("ProcessResult", "the result"),
                    "202": _json("Task", "the default wait ran out"),
                    **_problems(
                        "invalid-body",
                        *AUTH_PROBLEMS,
                        "unknown-task",
                        "unsupported-media-type",
                        "invalid-arguments",
                        "task-failed",
                        *UNAVAILABLE,
                    ),
                },
            }
        },
        "api.get_task": {
            "get": {
                "summary": "Read a task; long-poll with ?wait=",
                "parameters": [
                    TASK_BY_ID,
                    WAIT,
                    {
                        "name": "redirect",
                        "in": "query",
                        "description": "`result`: 303 to the result once succeeded",
                        "schema": {"type": "string", "enum": ["result"]},
                    },
                ],
                "responses": {
                    "200": _json("Task", listed_task["description"]),
                    "303": {
                        "description": "succeeded, and ?redirect=result was asked",
                        "headers": {"Location": LOCATION},
                    },
                    **_problems(
                        "invalid-wait",
                        "invalid-query",
                        *AUTH_PROBLEMS,
                        "unknown-task-id",
                        *UNAVAILABLE,
                    ),
                },
            },
        },
        "api.cancel_task": {
            "delete": {
                "summary": "Cancel a queued or running task",
                "parameters": [TASK_BY_ID],
                "responses": {
                    "200": _json("Task", "the task, now cancelled"),
                    **_problems(
                        *AUTH_PROBLEMS, "unknown-task-id", "task-finished", *UNAVAILABLE
                    ),
                },
            },
        },
        "api.get_result": {
            "get": {
                "summary": "A succeeded task's result itself",
                "parameters": [TASK_ID],
                "responses": {
                    "200": {
                        "description": "the result",
                        "content": {"application/json": {"schema": {}}},
                    },
                    **_problems(
                        *AUTH_PROBLEMS, "unknown-task-id", "task-not-succeeded"
                    ),
                },
            }
        },
        "events.task_events": {
            "get": {
                "summary": "Follow a task as server-sent events",
                "description": (
                    "Each `message` event's data is the task resource, sent when its "
                    "status, attempt or progress changes; the stream ends after the "
                    "final status. A `gone` event (the record expired) or an "
                    "`unavailable` event (Redis stopped answering), each with data "
                    "`{}`, ends it too. Keep-alive comments every "
                    f"{settings.events_keepalive_s} s; at most {settings.events_max_s} s. "
                    "The schema describes one event, as OpenAPI 3.2 `itemSchema` will."
                ),
                "parameters": [TASK_ID],
                "responses": {
                    "200": {
                        "description": "the stream",
                        "content": {"text/event-stream": {"schema": EVENT}},
                    },
                    **_problems(*AUTH_PROBLEMS, "unknown-task-id", *UNAVAILABLE),
                },
            }
        },
        "listing.list_tasks": {
            "get": {
                "summary": "List tasks, newest first",
                "parameters": [
                    {
                        "name": "name",
                        "in": "query",
                        "schema": {"type": "string", "pattern": TASK_NAME.pattern},
                    },
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "enum": [s.value for s in TaskStatus],
                        },
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "the next_cursor of the previous page",
                        "schema": {"type": "string", "pattern": CURSOR.pattern},
                    },
                ],
                "responses": {
                    "200": _json(
                        "TaskPage",
                        "a page; may hold fewer than limit tasks and still a cursor",
                        headers={"Link": {"schema": {"type": "string"}}},
                    ),
                    **_problems("invalid-query", *AUTH_PROBLEMS, *UNAVAILABLE),
                },
            }
        },
        "listing.list_task_types": {
            "get": {
                "summary": "Task names live workers serve",
                "responses": {
                    "200": _json("TaskTypes", "the task types"),
                    **_problems(*AUTH_PROBLEMS, *UNAVAILABLE),
                },
            }
        },
        "listing.list_workers": {
            "get": {
                "summary": "Live worker pools",
                "responses": {
                    "200": _json("Workers", "the pools"),
                    **_problems(*AUTH_PROBLEMS, *UNAVAILABLE),
                },
            }
        },
        "stats.get_stats": {
            "get": {
                "summary": "Queues, capacity and throughput (for the dashboard)",
                "responses": {
                    "200": _json("Stats", "the counts, read from Redis"),
                    **_problems(*AUTH_PROBLEMS, *UNAVAILABLE),
                },
            }
        },
        "dashboard.dashboard_page": {
            "get": {
                "summary": "Live dashboard (HTML; its requests carry the key)",
                "security": [],
                "responses": {"200": {"description": "HTML"}},
            }
        },
        "docs.openapi_json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
        "docs.docs_page": {
            "get": {
                "summary": "Browsable docs (Swagger UI, served locally)",
                "security": [],
                "responses": {"200": {"description": "HTML"}},
            }
        },
        "docs.docs_asset": {
            "get": {
                "summary": "An asset of the docs page",
                "security": [],
                "parameters": [
                    {
                        "name": "filename",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": sorted(ASSET_FILES)},
                    }
                ],
                "responses": {"200": {"description": "the file"}, "404": {}},
            }
        },
        "docs.problem_type": {
            "get": {
                "summary": "What a problem type means",
                "security": [],
                "parameters": [
                    {
                        "name": "slug",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": sorted(PROBLEM_TYPES)},
                    }
                ],
                "responses": {
                    "200": {"description": "the problem type, as JSON"},
                    **_problems("unknown-problem-type"),
                },
            }
        },
    }
    for endpoint, path_operations in operations.items():
        for operation in path_operations.values():
            operation.setdefault("security", secured)
            # The view's name: unique, stable, and what links below refer to.
            operation["operationId"] = endpoint.rpartition(".")[2]
            operation.setdefault("parameters", []).append(REQUEST_ID)
            if operation["responses"].get("404") == {}:
                operation["responses"]["404"] = {"description": "no such file"}
    for status in ("200", "202"):
        submit["responses"][status]["links"] = TASK_LINKS
    for endpoint in ("api.submit_task", "api.get_task", "api.process_alias"):
        for method, operation in operations[endpoint].items():
            if method != "delete":
                operation["responses"].update(_blank(405, "wrong method; see Allow"))
    for path_operations in operations.values():
        for operation in path_operations.values():
            for status, response in operation["responses"].items():
                headers = response.setdefault("headers", {})
                headers.update(STATUS_HEADERS.get(status, {}))
                headers["X-Request-ID"] = REQUEST_ID_HEADER
    return operations


def build_spec(app: Flask, settings: Settings) -> dict[str, Any]:
    """The whole document for ``app`` as configured; raises if a route is undocumented."""
    spec = APISpec(
        title="taskgate",
        version="1",
        openapi_version="3.1.0",
        plugins=[TaskgateFlaskPlugin()],
        info={
            "description": (
                "Run slow work behind a REST call. Errors are RFC 9457 problems; "
                "each `type` below is served at its URI."
            )
        },
    )
    spec.components.security_scheme(
        "bearer",
        {"type": "http", "scheme": "bearer", "description": "a TASKGATE_API_KEYS key"},
    )
    for model in MODELS:
        schema = model.model_json_schema(ref_template=REF)
        for name, definition in schema.pop("$defs", {}).items():
            if name not in spec.components.schemas:
                spec.components.schema(name, definition)
        if model.__name__ not in spec.components.schemas:
            spec.components.schema(model.__name__, schema)
    problem = spec.components.schemas["Problem"]
    problem["properties"]["type"]["enum"] = [
        *(problem_uri(slug) for slug in sorted(PROBLEM_TYPES)),
        "about:blank",
    ]

    operations = _operations(settings)
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if rule.endpoint in UNDOCUMENTED:
                continue
            if rule.endpoint not in operations:
                raise LookupError(f"route {rule.rule} has no OpenAPI operations")
            spec.path(
                view=app.view_functions[rule.endpoint],
                app=app,
                operations=operations[rule.endpoint],
            )
    document = spec.to_dict()
    document["x-problem-types"] = {
        problem_uri(slug): {
            "status": kind.status,
            "title": kind.title,
            "description": kind.description,
        }
        for slug, kind in sorted(PROBLEM_TYPES.items())
    }
    return document
