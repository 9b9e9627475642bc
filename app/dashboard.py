"""``GET /dashboard``: a live page of workers, queues, throughput and tasks.

Plain HTML, CSS and JavaScript shipped in ``app/static/dashboard`` (served by
Flask's static route; no build step, nothing fetched from elsewhere). The page
polls the JSON API every second or so: ``/v1/workers``, ``/v1/stats`` and
``/v1/tasks``. The page itself needs no key; when ``TASKGATE_API_KEYS`` is set
the script asks for one and sends it as ``Authorization: Bearer`` on each call.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app

dashboard = Blueprint("dashboard", __name__)


@dashboard.get("/dashboard")
def dashboard_page() -> Response:
    """The dashboard's HTML; its script and styles come from ``/static/dashboard``."""
    response = current_app.send_static_file("dashboard/index.html")
    # The page is small and changes with deployments: always revalidate.
    response.cache_control.no_cache = True
    return response
