"""The contract, served: ``/openapi.json``, the ``/docs`` page and problem types.

The document is built once at start (see :mod:`app.openapi`), never per request.
The docs page is Swagger UI, with its scripts and styles served from the installed
``flask-openapi3-swagger`` package, so it works with no network access.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import orjson
from flask import Blueprint, Response, abort, current_app, send_from_directory

from app.errors import RequestError
from app.problems import PROBLEM_TYPES, problem_uri

docs = Blueprint("docs", __name__)

ASSETS = Path(str(resources.files("flask_openapi3_swagger") / "templates" / "swagger"))
ASSET_FILES = {
    "swagger-ui.css": "css",
    "swagger-ui-bundle.js": "js",
    "swagger-ui-standalone-preset.js": "js",
}
PAGE = b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>taskgate API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="docs"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#docs"});
  </script>
</body>
</html>
"""


@docs.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI 3.1 document, as built at start."""
    document: bytes = current_app.config["TASKGATE_OPENAPI"]
    return Response(document, 200, mimetype="application/json")


@docs.get("/docs")
def docs_page() -> Response:
    """Swagger UI on this server's document."""
    return Response(PAGE, 200, mimetype="text/html")


@docs.get("/docs/assets/<filename>")
def docs_asset(filename: str) -> Response:
    """One of the page's scripts or styles, from the installed package."""
    folder = ASSET_FILES.get(filename)
    if folder is None:
        abort(404)
    return send_from_directory(ASSETS / folder, filename, max_age=3600)


@docs.get("/problems/<slug>")
def problem_type(slug: str) -> Response:
    """What the problem type ``/problems/<slug>`` means."""
    kind = PROBLEM_TYPES.get(slug)
    if kind is None:
        raise RequestError(
            404, "unknown-problem-type", "No such problem type", "no such problem type"
        )
    body = {
        "type": problem_uri(slug),
        "status": kind.status,
        "title": kind.title,
        "description": kind.description,
    }
    return Response(orjson.dumps(body), 200, mimetype="application/json")
