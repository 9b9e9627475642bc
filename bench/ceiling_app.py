"""The ceiling row: a bare Flask endpoint answering like a finished echo task.

It parses the JSON body and returns a task-shaped JSON object of about the size
taskgate answers, with no Redis, no broker and no worker. Run under the very
gunicorn configuration of taskgate, it measures what Flask and gunicorn's gevent
worker alone can serve on this machine: no gateway built on them can go faster.
"""

from __future__ import annotations

import uuid

import orjson
from flask import Flask, Response, request

app = Flask(__name__)

# A fixed finished-task shape; only the id and the result change per request.
_TIMES = {
    "created_at": "2026-01-01T00:00:00.000Z",
    "started_at": "2026-01-01T00:00:00.001Z",
    "finished_at": "2026-01-01T00:00:00.002Z",
}


@app.post("/v1/tasks/echo")
def echo() -> Response:
    """Answer with the body as the result of a made-up finished task."""
    arguments = orjson.loads(request.get_data(cache=False))
    resource = {
        "id": uuid.uuid4().hex,
        "name": "echo",
        "status": "succeeded",
        **_TIMES,
        "attempts": 1,
        "progress": None,
        "result": arguments,
    }
    return Response(orjson.dumps(resource), 200, mimetype="application/json")
