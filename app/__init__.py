"""The taskgate web app: :func:`create_app` builds it for gunicorn."""

from __future__ import annotations

import logging

import orjson
from flask import Flask

from app.auth import install_auth
from app.dashboard import dashboard
from app.docs import docs
from app.errors import register_error_handlers
from app.events import events
from app.listing import listing
from app.metrics import install_metrics
from app.openapi import build_spec
from app.readiness import readiness
from app.request_ids import install_request_ids
from app.routes import api
from app.services import Services
from app.stats import stats
from conf.logging import configure_logging
from conf.settings import Settings, load

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app. Clients for Redis and the broker are made per process, later."""
    settings = settings or load()
    configure_logging(settings.log_level, settings.log_format)

    app = Flask(__name__)
    app.config["TASKGATE_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["taskgate"] = Services(settings)
    # First, so that even a refused request has an id on its answer and logs.
    install_request_ids(app)
    install_metrics(app)
    install_auth(app, settings.api_key_list)
    app.register_blueprint(api)
    app.register_blueprint(listing)
    app.register_blueprint(events)
    app.register_blueprint(docs)
    app.register_blueprint(readiness)
    app.register_blueprint(stats)
    app.register_blueprint(dashboard)
    # Built once here, from the routes and settings in force; served as is.
    app.config["TASKGATE_OPENAPI"] = orjson.dumps(build_spec(app, settings))
    register_error_handlers(app, settings.retry_after_s)
    return app
