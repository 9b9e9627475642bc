"""``GET /readyz``: whether this web process can serve tasks now.

Ready means both dependencies answered within ``TASKGATE_READY_TIMEOUT_S`` (one
budget for both): Redis a ``PING`` on this process's pool, the broker a ZeroMQ
``ping`` sent through this process's dispatcher socket and answered with a ``pong``
through its reader greenlet. That is the path every task takes, so a broker whose
loop is stuck, or a socket that never connected, counts as not ready. Live workers
are not required: a broker without workers still queues tasks.

Like ``/healthz`` it needs no API key: probes carry none.
"""

from __future__ import annotations

import logging
import time

import gevent
import orjson
import redis
from flask import Blueprint, Response, current_app

from app.errors import problem
from app.services import Services
from conf.settings import Settings

logger = logging.getLogger(__name__)

readiness = Blueprint("readiness", __name__)


@readiness.get("/readyz")
def readyz() -> Response:
    """200 when Redis and the broker answered in time, else a 503 problem."""
    settings: Settings = current_app.config["TASKGATE_SETTINGS"]
    services: Services = current_app.extensions["taskgate"]
    clients = services.get()
    deadline = time.monotonic() + settings.ready_timeout_s

    checks = {"redis": "ok", "broker": "ok"}
    try:
        # redis-py drops a connection interrupted by the timeout, so none is
        # returned to the pool halfway through a reply.
        with gevent.Timeout(settings.ready_timeout_s):
            clients.store.client.ping()
    except (redis.RedisError, gevent.Timeout) as exc:
        checks["redis"] = f"no answer: {type(exc).__name__}"
    if not clients.dispatcher.ping(max(0.0, deadline - time.monotonic())):
        checks["broker"] = "no answer"

    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        logger.warning("not ready: %s", ", ".join(failing))
        return problem(
            503,
            "not-ready",
            "Not ready",
            f"{' and '.join(failing)} did not answer within "
            f"{settings.ready_timeout_s:g} s",
            headers={"Retry-After": str(settings.retry_after_s)},
            checks=checks,
        )
    return Response(
        orjson.dumps({"status": "ready", "checks": checks}),
        200,
        mimetype="application/json",
    )
