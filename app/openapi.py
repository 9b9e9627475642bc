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

from app.problems import PROBLEM_TYPES, problem_uri
from app.schemas import MODELS
from conf.settings import Settings

REF = "#/components/schemas/{model}"
UNDOCUMENTED = {"static"}


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


TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
WAIT = {
    "name": "wait",
    "in": "query",
    "description": "seconds to wait; plain decimal, capped at TASKGATE_WAIT_MAX_S",
    "schema": {"type": "string", "pattern": r"^[0-9]{1,9}(\.[0-9]{1,6})?$"},
}
LOCATION = {"description": "the task resource", "schema": {"type": "string"}}
RETRY_AFTER = {
    "description": "seconds until it is worth asking again (from the task's progress)",
    "schema": {"type": "integer"},
}
AUTH_PROBLEMS = ("unauthorized", "forbidden")
UNAVAILABLE = ("service-unavailable", "queue-full")


def _operations(settings: Settings) -> dict[str, dict[str, Any]]:
    """Per endpoint, per method: what the code alone cannot tell apispec."""
    submit = {
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
                "name": "name",
                "in": "path",
                "required": True,
                "schema": {
                    "type": "string",
                    "pattern": "^[A-Za-z][A-Za-z0-9_.-]*$",
                    "maxLength": settings.max_task_name_chars,
                },
            },
            WAIT,
            {
                "name": "time_limit",
                "in": "query",
                "description": "lowers the task's time limit for this call (seconds)",
                "schema": {"type": "string"},
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
                "schema": {"type": "string", "maxLength": 257},
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
                    "content": {"application/json": {"schema": {"type": "object"}}}
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
                    TASK_ID,
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
                "parameters": [TASK_ID],
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
                    "Each message's data is the task resource, sent when its status, "
                    "attempt or progress changes; the stream ends after the final "
                    "status. Keep-alive comments every "
                    f"{settings.events_keepalive_s} s; at most {settings.events_max_s} s."
                ),
                "parameters": [TASK_ID],
                "responses": {
                    "200": {
                        "description": "the stream",
                        "content": {
                            "text/event-stream": {"schema": {"type": "string"}}
                        },
                    },
                    **_problems(*AUTH_PROBLEMS, "unknown-task-id", *UNAVAILABLE),
                },
            }
        },
        "listing.list_tasks": {
            "get": {
                "summary": "List tasks, newest first",
                "parameters": [
                    {"name": "name", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "enum": [
                                "queued",
                                "running",
                                "succeeded",
                                "failed",
                                "cancelled",
                            ],
                        },
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
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
                        "schema": {"type": "string"},
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
    for path_operations in operations.values():
        for operation in path_operations.values():
            operation.setdefault("security", secured)
            if operation["responses"].get("404") == {}:
                operation["responses"]["404"] = {"description": "no such file"}
    for endpoint in ("api.submit_task", "api.get_task", "api.process_alias"):
        for method, operation in operations[endpoint].items():
            if method != "delete":
                operation["responses"].update(_blank(405, "wrong method; see Allow"))
    return operations


def build_spec(app: Flask, settings: Settings) -> dict[str, Any]:
    """The whole document for ``app`` as configured; raises if a route is undocumented."""
    spec = APISpec(
        title="taskgate",
        version="1",
        openapi_version="3.1.0",
        plugins=[FlaskPlugin()],
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
