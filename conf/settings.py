"""The one reader of the environment: every setting, its default, and its check.

Platform variables keep their usual names (``PORT``, ``WEB_CONCURRENCY``,
``REDIS_URL``); taskgate's own share the ``TASKGATE_`` prefix. Each process calls
:func:`load` once at start; a bad value stops it with one line naming the variable.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class Settings(BaseSettings):
    """Validated, read-only settings of one taskgate process."""

    model_config = SettingsConfigDict(
        env_prefix="TASKGATE_", frozen=True, populate_by_name=True, extra="ignore"
    )

    # Platform names, read without the prefix.
    port: int = Field(
        8000, ge=1, le=65535, validation_alias=AliasChoices("PORT", "port")
    )
    web_concurrency: PositiveInt = Field(
        2, validation_alias=AliasChoices("WEB_CONCURRENCY", "web_concurrency")
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        pattern=r"^(redis|rediss|unix)://",
        validation_alias=AliasChoices("REDIS_URL", "redis_url"),
    )

    # Where the broker listens; web processes and workers connect to the same
    # addresses. A ``tcp://*:port`` bind needs a host name on the connecting side,
    # so list the broker's reachable address here.
    broker_frontend: str = "tcp://127.0.0.1:5555"
    broker_backend: str = "tcp://127.0.0.1:5556"

    # HTTP waits. The cap stays under the 30 s after which Heroku-style routers
    # cut a request.
    wait_default_s: float = Field(20.0, ge=0)
    wait_max_s: float = Field(25.0, ge=0)
    retry_after_s: PositiveInt = 1
    max_body_bytes: PositiveInt = 1024 * 1024

    # How long the web side waits for the broker to accept a task before it
    # answers 503.
    broker_timeout_s: PositiveFloat = 2.0

    # Broker bounds: waiting tasks across all names, and their payload bytes.
    queue_limit: PositiveInt = 10_000
    queue_max_bytes: PositiveInt = 256 * 1024 * 1024

    heartbeat_interval_s: PositiveFloat = 1.0
    # Missed heartbeats after which the broker forgets a worker.
    heartbeat_liveness: PositiveInt = 3

    # Worker pool.
    task_modules: str = "worker.tasks"
    worker_processes: PositiveInt = Field(default_factory=lambda: os.cpu_count() or 1)
    shutdown_grace_s: float = Field(10.0, ge=0)

    # Redis task records.
    result_ttl_s: PositiveInt = 24 * 3600
    redis_timeout_s: PositiveFloat = 2.0
    redis_pool_size: PositiveInt = 64
    # How long the web process trusts its copy of the task catalog.
    catalog_refresh_s: PositiveFloat = 1.0
    # How long a task name stays accepted after the last worker serving it was
    # seen, so that restarting the workers does not turn requests into 404s.
    task_type_ttl_s: PositiveFloat = 60.0

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def task_module_names(self) -> list[str]:
        """Task modules the worker pool imports, in order."""
        return [name.strip() for name in self.task_modules.split(",") if name.strip()]

    @property
    def worker_liveness_s(self) -> float:
        """Silence after which a worker counts as dead."""
        return self.heartbeat_interval_s * self.heartbeat_liveness


def load() -> Settings:
    """Read the environment once; exit with a one-line message on a bad value."""
    try:
        settings = Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = _variable_name(str(error["loc"][0]) if error["loc"] else "?")
        sys.exit(f"taskgate: invalid setting {name}: {error['msg']}")

    if settings.wait_default_s > settings.wait_max_s:
        sys.exit(
            "taskgate: invalid setting TASKGATE_WAIT_DEFAULT_S: exceeds TASKGATE_WAIT_MAX_S"
        )
    return settings


def _variable_name(field: str) -> str:
    """Map a field (or the alias pydantic reports) back to its variable."""
    if field.isupper():
        return field
    if field in ("port", "web_concurrency", "redis_url"):
        return field.upper()
    return "TASKGATE_" + field.upper()
