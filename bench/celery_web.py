"""The peer's web side: Flask in front of Celery, on the same routes as taskgate.

``POST /v1/tasks/echo`` calls the Celery task and waits for its result
(``.delay(...).get(timeout=...)``), answering 200 with a task-shaped body;
``?wait=0`` only queues it (``.delay()``) and answers 202, as taskgate does. The
same wrk scripts therefore drive both systems.
"""

from __future__ import annotations

import orjson
from flask import Flask, Response, request

from bench.celery_app import echo as echo_task

# As taskgate's TASKGATE_WAIT_DEFAULT_S: how long a synchronous call waits.
WAIT_S = 20.0

app = Flask(__name__)


@app.post("/v1/tasks/echo")
def echo() -> Response:
    """Run ``echo`` through Celery; wait for it unless ``?wait=0``."""
    arguments = orjson.loads(request.get_data(cache=False))
    result = echo_task.delay(**arguments)
    if request.args.get("wait") == "0":
        body = {"id": result.id, "name": "echo", "status": "queued"}
        headers = {"Location": f"/v1/tasks/{result.id}"}
        return Response(orjson.dumps(body), 202, headers, mimetype="application/json")

    value = result.get(timeout=WAIT_S)
    body = {"id": result.id, "name": "echo", "status": "succeeded", "result": value}
    return Response(orjson.dumps(body), 200, mimetype="application/json")
