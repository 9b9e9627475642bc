"""Every error answer is RFC 9457 problem details (``application/problem+json``).

Problem types of taskgate are relative URIs under ``/problems/``; plain HTTP errors
(unknown route, wrong method, body too large) use ``about:blank`` with the status's
reason phrase as title, as RFC 9457 suggests.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from app.metrics import count_unavailable
from app.problems import problem_uri
from worker.errors import (
    BrokerUnavailableError,
    InvalidArgumentsError,
    QueueFullError,
    TaskFinishedError,
    UnavailableError,
    UnknownTaskError,
)

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class RequestError(Exception):
    """A request the API refuses, with the problem to answer."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers


def problem(
    status: int,
    slug: str | None,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """Build a problem response; ``slug`` None means ``about:blank``."""
    body = {
        "type": problem_uri(slug) if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path,
        **extra,
    }
    return Response(orjson.dumps(body), status, headers=headers, mimetype=PROBLEM_JSON)


def _cause_of(exc: UnavailableError) -> str:
    if isinstance(exc, QueueFullError):
        return "queue_full"
    if isinstance(exc, BrokerUnavailableError):
        return "broker"
    return "redis"


def register_error_handlers(app: Flask, retry_after_s: int) -> None:
    """Map taskgate's exceptions and HTTP errors to problem responses."""

    @app.errorhandler(RequestError)
    def refused(exc: RequestError) -> Response:
        return problem(exc.status, exc.slug, exc.title, exc.detail, exc.headers)

    @app.errorhandler(UnknownTaskError)
    def unknown_task(exc: UnknownTaskError) -> Response:
        return problem(404, "unknown-task", "Unknown task", str(exc))

    @app.errorhandler(InvalidArgumentsError)
    def invalid_arguments(exc: InvalidArgumentsError) -> Response:
        return problem(422, "invalid-arguments", "Invalid task arguments", str(exc))

    @app.errorhandler(TaskFinishedError)
    def task_finished(exc: TaskFinishedError) -> Response:
        return problem(
            409,
            "task-finished",
            "Task already finished",
            str(exc),
            task_status=exc.status,
        )

    @app.errorhandler(UnavailableError)
    def unavailable(exc: UnavailableError) -> Response:
        slug = (
            "queue-full" if isinstance(exc, QueueFullError) else "service-unavailable"
        )
        logger.warning("answering 503: %s", exc)
        count_unavailable(_cause_of(exc))
        return problem(
            503,
            slug,
            "Service unavailable",
            str(exc),
            headers={"Retry-After": str(retry_after_s)},
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        response = problem(status, None, exc.name, exc.description or exc.name)
        # 405 must say which methods the resource allows.
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        logger.error(
            "unhandled error on %s %s", request.method, request.path, exc_info=exc
        )
        return problem(
            500,
            "internal-error",
            "Internal server error",
            "the server hit an unexpected error; it has been logged",
        )
