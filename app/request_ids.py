"""``X-Request-ID``: one id per request, on its answer and on its log lines.

A client's (or proxy's) id is kept when it is 1 to 128 characters of letters,
digits and ``-._:``; anything else is replaced by a fresh one rather than
refused, since a bad correlation id is no reason to fail a request, and copying
arbitrary text into logs would let a client forge log lines.
"""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, request

from conf.log_context import bind_request, bind_task, request_id

HEADER = "X-Request-ID"
SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def install_request_ids(app: Flask) -> None:
    """Bind each request's id (and task id from the path) before other handlers run."""

    @app.before_request
    def bind_ids() -> None:
        offered = request.headers.get(HEADER, "")
        bind_request(offered if SAFE_ID.match(offered) else uuid.uuid4().hex)
        task = (request.view_args or {}).get("task_id")
        if isinstance(task, str):
            bind_task(task)

    @app.after_request
    def echo_id(response: Response) -> Response:
        current = request_id.get()
        if current is not None:
            response.headers[HEADER] = current
        return response
