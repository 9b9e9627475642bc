"""Per-process clients of the web app: Redis, the broker dispatcher, the watchers.

gunicorn forks its workers after loading the configuration; a ZeroMQ context or a
greenlet must not cross that fork. So nothing here is made at import time or in
:func:`app.create_app`: each process builds its own on first use, and a process
that finds clients made by its parent (``--preload``) builds fresh ones.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from app.catalog import TaskCatalog
from app.dispatch import Dispatcher
from app.records import RecordWriter
from app.watch import CompletionWatcher
from conf.settings import Settings
from worker.curve import CurveConfigError, client_keys
from worker.store import TaskStore, connect_redis


@dataclass(frozen=True, slots=True)
class Clients:
    """The clients one web process uses."""

    store: TaskStore
    records: RecordWriter
    catalog: TaskCatalog
    dispatcher: Dispatcher
    watcher: CompletionWatcher


class Services:
    """Builds :class:`Clients` lazily, once per process."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        try:
            # Read at start, so that a wrong key file stops the process at once.
            self._curve_keys = client_keys(settings)
        except CurveConfigError as exc:
            sys.exit(f"taskgate: {exc}")
        self._clients: Clients | None = None
        self._pid = 0

    def get(self) -> Clients:
        """This process's clients, made on first call."""
        if self._clients is None or self._pid != os.getpid():
            self._clients = self._build()
            self._pid = os.getpid()
        return self._clients

    def _build(self) -> Clients:
        settings = self._settings
        client = connect_redis(
            settings, settings.redis_pool_size, settings.redis_timeout_s
        )
        store = TaskStore(client, settings.result_ttl_s)
        return Clients(
            store=store,
            records=RecordWriter(store, settings.redis_timeout_s),
            catalog=TaskCatalog(
                store, settings.catalog_refresh_s, settings.task_type_ttl_s
            ),
            dispatcher=Dispatcher(
                settings.broker_frontends,
                settings.broker_timeout_s,
                curve_keys=self._curve_keys,
            ),
            watcher=CompletionWatcher(client),
        )
