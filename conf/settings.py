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

# Every duration is finite: an "inf" timeout would be a wait that never ends.
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(gt=0)]
ZMQ_ADDRESS = r"^(tcp|ipc|inproc)://[^\s,]+$"
# One or more addresses, comma-separated: clients connect to every broker listed.
ZMQ_ADDRESS_LIST = (
    r"^\s*(tcp|ipc|inproc)://[^\s,]+(\s*,\s*(tcp|ipc|inproc)://[^\s,]+)*\s*$"
)
MODULE_LIST = r"^\s*[A-Za-z_][\w.]*(\s*,\s*[A-Za-z_][\w.]*)*\s*,?\s*$"


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

    # Redis Sentinel: when set (``host:port`` list, comma-separated), clients ask
    # these sentinels for the master of redis_sentinel_master on each new
    # connection, and REDIS_URL gives only the scheme, password, database and
    # TLS options. Sentinels may have a password of their own.
    redis_sentinels: str = Field(
        "", pattern=r"^$|^\s*[^\s,:]+:\d+(\s*,\s*[^\s,:]+:\d+)*\s*$"
    )
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: str = ""

    # Where the broker listens; web processes and workers connect to the same
    # addresses. A ``tcp://*:port`` bind needs a host name on the connecting side,
    # so list the broker's reachable address here. With a standby broker, list
    # both brokers' addresses (comma-separated): clients connect to all, and only
    # the active broker listens.
    broker_frontend: str = Field("tcp://127.0.0.1:5555", pattern=ZMQ_ADDRESS_LIST)
    broker_backend: str = Field("tcp://127.0.0.1:5556", pattern=ZMQ_ADDRESS_LIST)
    # What this broker binds, when the lists above name more than one broker
    # (for example ``tcp://*:5555``); empty: the one address above.
    broker_bind_frontend: str = Field("", pattern=r"^$|" + ZMQ_ADDRESS)
    broker_bind_backend: str = Field("", pattern=r"^$|" + ZMQ_ADDRESS)
    # Standby brokers: how long the active broker's lease in Redis lasts. The
    # active one renews it every third of that and closes its sockets when it
    # could not renew for two thirds of it; a standby takes over once it expires.
    broker_lease_s: PositiveFloat = 3.0

    # CURVE encryption and authentication of every ZeroMQ link; off while
    # curve_broker_key is empty. Files are ZeroMQ certificates as
    # ``python -m worker.keys`` writes them. On the broker: its secret
    # certificate (``broker.key_secret``) and the directory of the public
    # certificates (``*.key``) of the web processes and workers it accepts. On
    # web processes and workers: the broker's public certificate
    # (``broker.key``) and their own secret certificate.
    curve_broker_key: str = ""
    curve_key: str = ""
    curve_authorized_dir: str = ""
    # The interface gunicorn listens on. Procfile platforms route to 0.0.0.0;
    # bin/run sets 127.0.0.1 so a laptop does not offer its API to the network.
    host: str = "0.0.0.0"

    # HTTP waits. The cap stays under the 30 s after which Heroku-style routers
    # cut a request.
    wait_default_s: NonNegativeFloat = 20.0
    wait_max_s: NonNegativeFloat = 25.0
    retry_after_s: PositiveInt = 1
    max_body_bytes: PositiveInt = 1024 * 1024
    # Shape limits of a JSON body, checked before anything is queued: nesting
    # depth, and values in all (object members plus array items, at any depth).
    max_json_depth: PositiveInt = 32
    max_json_items: PositiveInt = 100_000
    # Longest task name a request may use; the registry's syntax allows 64.
    max_task_name_chars: int = Field(64, ge=1, le=64)
    # How long an Idempotency-Key keeps naming the task it created.
    idempotency_ttl_s: PositiveInt = 24 * 3600
    # Bearer keys, comma-separated; empty means no authentication (a warning at
    # start). Each key is 16 to 256 visible ASCII characters without commas.
    api_keys: str = Field(
        "", pattern=r"^(\s*[!-+\--~]{16,256}\s*(,\s*[!-+\--~]{16,256}\s*)*,?\s*)?$"
    )
    # Longest life of one event stream, and the interval of its keep-alive comments.
    events_max_s: PositiveFloat = 3600.0
    events_keepalive_s: PositiveFloat = 15.0

    # How long the web side waits for the broker to accept a task before it
    # answers 503.
    broker_timeout_s: PositiveFloat = 5.0
    # How long GET /readyz gives Redis and the broker, together, to answer.
    ready_timeout_s: PositiveFloat = 1.0

    # Port of the broker's Prometheus metrics on TASKGATE_HOST; 0: none.
    broker_metrics_port: int = Field(0, ge=0, le=65535)
    # Port of a worker pool's Prometheus metrics on TASKGATE_HOST; 0: none.
    # Each pool on one host needs its own.
    worker_metrics_port: int = Field(0, ge=0, le=65535)

    # Broker bounds: waiting tasks across all names, and their payload bytes.
    queue_limit: PositiveInt = 10_000
    queue_max_bytes: PositiveInt = 256 * 1024 * 1024

    heartbeat_interval_s: PositiveFloat = 1.0
    # Missed heartbeats after which the broker forgets a worker.
    heartbeat_liveness: PositiveInt = 3

    # Worker pool.
    task_modules: str = Field("worker.tasks", pattern=MODULE_LIST)
    worker_processes: PositiveInt = Field(default_factory=lambda: os.cpu_count() or 1)
    shutdown_grace_s: NonNegativeFloat = 10.0
    # "process": one task at a time per worker process (CPU-bound work).
    # "gevent": each process runs up to worker_concurrency tasks in greenlets,
    # with the standard library patched to yield (I/O-bound work).
    worker_mode: Literal["process", "gevent"] = "process"
    worker_concurrency: PositiveInt = 100
    # Defaults for tasks that do not set their own at registration.
    max_attempts: PositiveInt = 3
    time_limit_s: PositiveFloat = 600.0
    # How long a cancelled task may take to stop before its process is killed.
    cancel_grace_s: NonNegativeFloat = 2.0
    # Results a pool keeps while Redis is unreachable, before it stops taking tasks.
    result_buffer: PositiveInt = 1000

    # Broker recovery: how often it looks in Redis for tasks nobody runs, and how
    # old a queued record must be before recovery may dispatch it (a younger one
    # may still be on its way from a web process).
    recovery_interval_s: PositiveFloat = 5.0
    recovery_min_age_s: NonNegativeFloat = 2.0

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
    # Where gunicorn's worker processes keep their Prometheus metrics, so that a
    # scrape of any one sums all. prometheus-client reads the same variable;
    # conf/gunicorn.conf.py makes a fresh directory when it is unset.
    prometheus_multiproc_dir: str = Field(
        "",
        validation_alias=AliasChoices(
            "PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"
        ),
    )
    # "text" for people, "json" for log platforms; a platform-style name, as the
    # issue asked, read also as TASKGATE_LOG_FORMAT.
    log_format: Literal["text", "json"] = Field(
        "text",
        validation_alias=AliasChoices(
            "LOG_FORMAT", "TASKGATE_LOG_FORMAT", "log_format"
        ),
    )

    @property
    def task_module_names(self) -> list[str]:
        """Task modules the worker pool imports, in order."""
        return [name.strip() for name in self.task_modules.split(",") if name.strip()]

    @property
    def api_key_list(self) -> list[str]:
        """The accepted bearer keys; empty when authentication is off."""
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def broker_frontends(self) -> list[str]:
        """Every broker frontend a web process connects to."""
        return _split(self.broker_frontend)

    @property
    def broker_backends(self) -> list[str]:
        """Every broker backend a worker pool connects to."""
        return _split(self.broker_backend)

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
        field = str(error["loc"][0]) if error["loc"] else "?"
        message = error["msg"]
        if error["type"] == "string_pattern_mismatch" and field in _EXPECTED:
            # Say what is wanted rather than show the regular expression.
            message = f"expected {_EXPECTED[field]}"
        sys.exit(f"taskgate: invalid setting {_variable_name(field)}: {message}")

    if settings.idempotency_ttl_s > settings.result_ttl_s:
        # A key must not outlive the record it names.
        sys.exit(
            "taskgate: invalid setting TASKGATE_IDEMPOTENCY_TTL_S: exceeds "
            "TASKGATE_RESULT_TTL_S"
        )
    if settings.wait_default_s > settings.wait_max_s:
        sys.exit(
            "taskgate: invalid setting TASKGATE_WAIT_DEFAULT_S: exceeds TASKGATE_WAIT_MAX_S"
        )
    return settings


# Plain words for patterns a reader cannot be asked to decode.
_EXPECTED = {
    "api_keys": "keys of 16-256 visible ASCII characters each (no spaces or "
    "commas), separated by commas",
}


def _split(addresses: str) -> list[str]:
    return [address.strip() for address in addresses.split(",") if address.strip()]


def _variable_name(field: str) -> str:
    """Map a field (or the alias pydantic reports) back to its variable."""
    if field.isupper():
        return field
    if field in (
        "port",
        "web_concurrency",
        "redis_url",
        "log_format",
        "prometheus_multiproc_dir",
    ):
        return field.upper()
    return "TASKGATE_" + field.upper()
