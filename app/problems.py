"""The catalogue of taskgate's problem types (RFC 9457), one entry per ``type``.

A problem's ``type`` is ``/problems/<slug>``, relative to the API's origin, and
stable: clients may branch on it. Each one is served as a short description at
that URI and listed in the OpenAPI document, both from this table, so the docs
cannot drift from the slugs the code raises (a test checks every slug used).
Plain HTTP errors (unknown route, wrong method, body too large) use
``about:blank`` with the status's reason phrase, as RFC 9457 suggests.
"""

from __future__ import annotations

from dataclasses import dataclass

PROBLEM_BASE = "/problems/"


@dataclass(frozen=True, slots=True)
class ProblemType:
    """One problem type: its status, title and when it is answered."""

    status: int
    title: str
    description: str


PROBLEM_TYPES: dict[str, ProblemType] = {
    "invalid-body": ProblemType(
        400,
        "Invalid body",
        "The body is not JSON, not a JSON object (an empty body too), nests deeper "
        "than TASKGATE_MAX_JSON_DEPTH, holds more than TASKGATE_MAX_JSON_ITEMS "
        "values, or holds an integer outside -2**63 .. 2**64-1.",
    ),
    "invalid-wait": ProblemType(
        400,
        "Invalid wait",
        "The wait query parameter is not a plain decimal number of seconds, 0 or "
        "more (at most 9 digits before the point and 6 after).",
    ),
    "invalid-time-limit": ProblemType(
        400,
        "Invalid time_limit",
        "The time_limit query parameter is not a plain decimal number of seconds "
        "above 0.",
    ),
    "invalid-idempotency-key": ProblemType(
        400,
        "Invalid Idempotency-Key",
        "Idempotency-Key was sent more than once, or is not 1 to 255 visible ASCII "
        "characters.",
    ),
    "invalid-query": ProblemType(
        400,
        "Invalid query",
        "A listing's name, status, limit or cursor parameter is malformed.",
    ),
    "unauthorized": ProblemType(
        401,
        "Unauthorized",
        "API keys are configured and the request carries no Authorization: Bearer "
        "header. The answer has WWW-Authenticate: Bearer.",
    ),
    "forbidden": ProblemType(
        403, "Forbidden", "The bearer key is not one of the configured API keys."
    ),
    "unknown-task": ProblemType(
        404,
        "Unknown task",
        "No live worker serves that task name, or the name is not valid task name "
        "syntax or is too long.",
    ),
    "unknown-task-id": ProblemType(
        404,
        "No such task",
        "No task has that id: never issued, or its record expired.",
    ),
    "unknown-problem-type": ProblemType(
        404, "No such problem type", "A /problems/ URI that taskgate does not define."
    ),
    "task-cancelled": ProblemType(
        409,
        "Task cancelled",
        "A synchronous call whose task was cancelled before it ended.",
    ),
    "task-finished": ProblemType(
        409, "Task already finished", "DELETE of a task that already ended."
    ),
    "task-not-succeeded": ProblemType(
        409,
        "Task has no result",
        "The result of a task that has not succeeded (yet) was asked for.",
    ),
    "unsupported-media-type": ProblemType(
        415,
        "Unsupported media type",
        "A Content-Type other than application/json or */*+json (a missing one "
        "is taken as JSON).",
    ),
    "invalid-arguments": ProblemType(
        422,
        "Invalid task arguments",
        "Missing or unexpected arguments (checked before the task is queued), or "
        "values the task's annotations or the task itself refuse.",
    ),
    "idempotency-key-reused": ProblemType(
        422,
        "Idempotency-Key reused",
        "The Idempotency-Key was first sent with another task name or other "
        "arguments, within TASKGATE_IDEMPOTENCY_TTL_S.",
    ),
    "task-failed": ProblemType(
        500,
        "Task failed",
        "The task ran and raised. Carries task_id and error, and the Location of "
        "the task's record.",
    ),
    "internal-error": ProblemType(
        500, "Internal server error", "An unexpected error; the server logged it."
    ),
    "service-unavailable": ProblemType(
        503,
        "Service unavailable",
        "Redis or the broker did not answer in time. Carries Retry-After.",
    ),
    "not-ready": ProblemType(
        503,
        "Not ready",
        "GET /readyz: Redis or the broker did not answer within "
        "TASKGATE_READY_TIMEOUT_S; the checks member says which.",
    ),
    "queue-full": ProblemType(
        503,
        "Service unavailable",
        "The broker's bounded queue is full. Carries Retry-After.",
    ),
}


def problem_uri(slug: str) -> str:
    """The ``type`` URI of a problem slug."""
    return PROBLEM_BASE + slug
