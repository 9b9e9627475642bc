"""Task records in Redis: key names, the status enum, and every read and write.

Redis is the source of truth. A record is a hash at ``taskgate:task:<id>``; the
ids of unfinished tasks sit in the sorted set ``taskgate:unfinished`` (scored by
creation time), so that recovery finds them without scanning keys. Transitions
that depend on the current state run as the Lua scripts of :mod:`worker.scripts`.

Record fields: ``id``, ``name``, ``status``, ``created_at``, ``started_at``,
``finished_at`` (epoch seconds), ``attempts`` (attempts started),
``max_attempts``, ``time_limit_s`` (the caller's cap, 0 for none), ``owner`` (the
worker pool running it), ``args`` (the request body), ``progress``, ``result``,
``error`` (JSON text) and ``traceback``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

import orjson
import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.connection import parse_url
from redis.exceptions import NoScriptError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from conf.settings import Settings
from worker import scripts
from worker.errors import StoreUnavailableError

logger = logging.getLogger(__name__)

PREFIX = "taskgate:"
UNFINISHED_KEY = PREFIX + "unfinished"
TASK_TYPES_KEY = PREFIX + "task-types"
FINISHED_CHANNEL = PREFIX + "finished"
# Ids of tasks that started, reported progress or went back to the queue.
CHANGED_CHANNEL = PREFIX + "changed"
# Listing indexes, scored by creation time: every task, per name, per status.
ALL_INDEX_KEY = PREFIX + "index:all"
# Live worker pools: one JSON record each (expiring), and their ids scored by
# their last heartbeat.
WORKERS_KEY = PREFIX + "workers"
# Expired entries a create drops from the oldest end of the indexes it touches.
TRIM_PER_CREATE = 4

# Redis errors that mean "not reachable right now", as opposed to a bug.
REDIS_DOWN_ERRORS = (redis.ConnectionError, redis.TimeoutError)

ScriptArg = bytes | str | int | float
# One script run: the script, its keys, its arguments.
ScriptCall = tuple[Script, list[str], list[ScriptArg]]


class TaskStatus(StrEnum):
    """Where a task is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True once the task can change no more."""
        return self not in (TaskStatus.QUEUED, TaskStatus.RUNNING)


def task_key(task_id: str) -> str:
    """The hash that holds one task's record."""
    return PREFIX + "task:" + task_id


def name_index_key(name: str) -> str:
    """The listing index of one task name."""
    return PREFIX + "index:name:" + name


def status_index_key(status: str) -> str:
    """The listing index of one status."""
    return PREFIX + "index:status:" + status


def idempotency_key(digest: str) -> str:
    """Where an Idempotency-Key (by its digest) names the task it created."""
    return PREFIX + "idempotency:" + digest


def worker_key(identity: str) -> str:
    """The expiring record of one worker pool."""
    return PREFIX + "worker:" + identity


class _BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool (asks the sentinels where the master is) that waits when full."""


def connect(
    url: str,
    pool_size: int,
    timeout_s: float,
    sentinels: str = "",
    sentinel_master: str = "",
    sentinel_password: str = "",
) -> redis.Redis:
    """One client per process; requests wait for a free connection, never fail.

    ``url`` may carry a password (``redis://:secret@host/0``) and TLS
    (``rediss://``, with ``?ssl_ca_certs=/path/ca.pem`` and the other ``ssl_*``
    options redis-py reads from a URL). With ``sentinels`` (``host:port`` list),
    the master of ``sentinel_master`` is looked up through them on every new
    connection, so a Redis failover needs no restart; the URL then gives
    everything but the host and port.
    """
    options: dict[str, Any] = {
        "max_connections": pool_size,
        "timeout": timeout_s,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": 30,
        # No retry: a call fails within ``timeout_s``. Connections dropped while
        # idle are caught by the health check before use instead.
        "retry": Retry(NoBackoff(), 0),
    }
    if not sentinels:
        pool = redis.BlockingConnectionPool.from_url(url, **options)
        return redis.Redis(connection_pool=pool)

    from_url = parse_url(url)  # type: ignore[no-untyped-call]
    for ignored in ("host", "port", "connection_class"):
        from_url.pop(ignored, None)
    manager = Sentinel(  # type: ignore[no-untyped-call]
        [_host_port(each) for each in sentinels.split(",") if each.strip()],
        sentinel_kwargs={
            "password": sentinel_password or None,
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
        },
    )
    client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
        sentinel_master,
        connection_pool_class=_BlockingSentinelPool,
        ssl=url.startswith("rediss://"),
        **from_url,
        **options,
    )
    return client


def connect_redis(settings: Settings, pool_size: int, timeout_s: float) -> redis.Redis:
    """:func:`connect` with the process's Redis settings (URL, Sentinel)."""
    return connect(
        settings.redis_url,
        pool_size,
        timeout_s,
        sentinels=settings.redis_sentinels,
        sentinel_master=settings.redis_sentinel_master,
        sentinel_password=settings.redis_sentinel_password,
    )


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a task attempt ended, as the worker reports it."""

    status: TaskStatus
    # JSON text of the result (succeeded) or of ``{"type", "message"}`` (failed).
    body: bytes
    traceback: str = ""


@dataclass(frozen=True, slots=True)
class NewTask:
    """A record to create: what the web process knows of a task it accepts."""

    task_id: str
    name: str
    args: bytes
    max_attempts: int = 1
    time_limit_s: float = 0.0
    idempotency: Idempotency | None = None


@dataclass(frozen=True, slots=True)
class Release:
    """What giving up an attempt did: ``queued``, ``failed`` or ``gone``."""

    outcome: str
    attempts: int


@dataclass(frozen=True, slots=True)
class Cancellation:
    """What cancelling found: the previous status and, if running, its owner."""

    previous: str
    owner: str = ""
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A client's Idempotency-Key, as digests, with how long it holds."""

    key_digest: str
    request_digest: str
    ttl_s: int


@dataclass(frozen=True, slots=True)
class Created:
    """What a create did: made ``task_id``, or found ``existing`` for the same key.

    ``existing`` is the stored ``<task id>:<request digest>`` of the first request.
    """

    created: bool
    existing: str = ""


@dataclass(frozen=True, slots=True)
class ListedPage:
    """One page of a listing, newest first, and where the next page starts."""

    records: list[dict[bytes, bytes]]
    next_cursor: tuple[float, str] | None


@dataclass(frozen=True, slots=True)
class UnfinishedTask:
    """An unfinished record, as recovery reads it."""

    task_id: str
    name: str
    status: str
    attempts: int
    owner: str
    args: bytes
    time_limit_s: float
    created_at: float


def error_json(kind: str, message: str) -> bytes:
    """The stored form of a task error."""
    return orjson.dumps({"type": kind, "message": message})


class TaskStore:
    """Reads and writes task records; every Redis outage becomes StoreUnavailableError."""

    def __init__(self, client: redis.Redis, result_ttl_s: int) -> None:
        self._client = client
        self._result_ttl_s = result_ttl_s
        self._create = client.register_script(scripts.CREATE)
        self._discard = client.register_script(scripts.DISCARD)
        self._start = client.register_script(scripts.START)
        self._progress = client.register_script(scripts.PROGRESS)
        self._finish = client.register_script(scripts.FINISH)
        self._release = client.register_script(scripts.RELEASE)
        self._cancel = client.register_script(scripts.CANCEL)

    @property
    def client(self) -> redis.Redis:
        """The underlying client, for callers that subscribe or ping."""
        return self._client

    def create(
        self,
        task_id: str,
        name: str,
        args: bytes,
        max_attempts: int = 1,
        time_limit_s: float = 0.0,
        idempotency: Idempotency | None = None,
    ) -> Created:
        """Write a ``queued`` record and index it, atomically.

        With ``idempotency``, the key is claimed in the same script, before the
        record exists: of simultaneous requests with one key exactly one creates.
        """
        task = NewTask(task_id, name, args, max_attempts, time_limit_s, idempotency)
        return self.create_many([task])[0]

    def create_many(self, tasks: list[NewTask]) -> list[Created]:
        """:meth:`create` for several tasks in one round trip, each one atomic."""
        now = repr(time.time())
        calls: list[ScriptCall] = []
        for task in tasks:
            idempotency = task.idempotency
            value = (
                f"{task.task_id}:{idempotency.request_digest}" if idempotency else ""
            )
            keys = [
                task_key(task.task_id),
                UNFINISHED_KEY,
                ALL_INDEX_KEY,
                name_index_key(task.name),
                status_index_key(TaskStatus.QUEUED),
                status_index_key(TaskStatus.SUCCEEDED),
                status_index_key(TaskStatus.FAILED),
                status_index_key(TaskStatus.CANCELLED),
                idempotency_key(idempotency.key_digest) if idempotency else "",
            ]
            args_: list[ScriptArg] = [
                task.task_id,
                task.name,
                now,
                task.max_attempts,
                repr(task.time_limit_s),
                task.args,
                value,
                idempotency.ttl_s if idempotency else 0,
                task_key(""),
                TRIM_PER_CREATE,
            ]
            calls.append((self._create, keys, args_))
        found = self._run_scripts(calls)
        return [
            Created(True) if row[0] == b"created" else Created(False, row[1].decode())
            for row in found
        ]

    def discard(
        self, task_id: str, name: str, idempotency: Idempotency | None = None
    ) -> None:
        """Remove a record the client was never told about (the broker refused it)."""
        keys = [
            task_key(task_id),
            UNFINISHED_KEY,
            ALL_INDEX_KEY,
            name_index_key(name),
            status_index_key(TaskStatus.QUEUED),
            idempotency_key(idempotency.key_digest) if idempotency else task_key(""),
        ]
        with _translate_errors():
            self._discard(keys=keys, args=[task_id])

    def list_page(
        self,
        index: str,
        cursor: tuple[float, str] | None,
        limit: int,
        keep: Callable[[dict[bytes, bytes]], bool],
        max_scanned: int,
    ) -> ListedPage:
        """Up to ``limit`` records from ``index``, newest first, that ``keep`` accepts.

        ``cursor`` is the (score, id) of the last entry the previous page
        scanned. At most ``max_scanned`` entries are read: a page can come back
        short with a cursor, when many entries were filtered out. Entries whose
        record expired are dropped from ``index`` on the way.
        """
        records: list[dict[bytes, bytes]] = []
        last: tuple[float, str] | None = cursor
        scanned = 0
        exhausted = False
        while len(records) < limit and scanned < max_scanned and not exhausted:
            batch = min(max_scanned - scanned, max(limit - len(records), 10) * 2)
            entries = self._entries_before(index, last, batch)
            exhausted = len(entries) < batch
            if not entries:
                break
            with _translate_errors():
                pipe = self._client.pipeline(transaction=False)
                for member, _ in entries:
                    pipe.hgetall(task_key(member))
                rows: list[dict[bytes, bytes]] = pipe.execute()
            expired = []
            for (member, score), fields in zip(entries, rows, strict=True):
                scanned += 1
                last = (score, member)
                if not fields:
                    expired.append(member)
                elif keep(fields):
                    records.append(fields)
                    if len(records) == limit:
                        exhausted = exhausted and member == entries[-1][0]
                        break
            if expired:
                with _translate_errors():
                    self._client.zrem(index, *expired)
        return ListedPage(records, None if exhausted else last)

    def queued_before(self, created_at: float) -> int:
        """How many queued tasks (of any name) were created before ``created_at``."""
        with _translate_errors():
            count: int = self._client.zcount(
                status_index_key(TaskStatus.QUEUED), "-inf", f"({created_at!r}"
            )
        return count

    def _entries_before(
        self, index: str, cursor: tuple[float, str] | None, count: int
    ) -> list[tuple[str, float]]:
        """Entries after ``cursor`` in newest-first order (score desc, id desc)."""
        top = "+inf" if cursor is None else repr(cursor[0])
        # Entries sharing the cursor's score come in descending id order; the
        # ones at or above the cursor's id were on earlier pages.
        skip = 0
        if cursor is not None:
            with _translate_errors():
                same: list[bytes] = self._client.zrangebyscore(  # type: ignore[assignment]
                    index, top, top
                )
            skip = sum(1 for member in same if member.decode() >= cursor[1])
        with _translate_errors():
            raw: list[tuple[bytes, float]] = self._client.zrevrangebyscore(  # type: ignore[assignment]
                index, top, "-inf", start=skip, num=count, withscores=True
            )
        return [(member.decode(), score) for member, score in raw]

    def get(self, task_id: str) -> dict[bytes, bytes] | None:
        """The raw record, or None if no such task exists (or it expired)."""
        with _translate_errors():
            fields = cast(dict[bytes, bytes], self._client.hgetall(task_key(task_id)))
        return fields or None

    def start(self, task_id: str, attempt: int, owner: str) -> bool:
        """Mark ``running`` by ``owner`` if the task still waits for this attempt."""
        return self.finish_and_start([], [(task_id, attempt)], owner)[1][0]

    def set_progress(self, task_id: str, attempt: int, progress: bytes) -> bool:
        """Store progress JSON if this attempt still owns the task."""
        with _translate_errors():
            stored = self._progress(
                keys=[task_key(task_id)],
                args=[attempt, progress, task_id, CHANGED_CHANNEL],
            )
        return bool(stored)

    def finish(
        self, task_id: str, attempt: int, outcome: Outcome
    ) -> dict[bytes, bytes] | None:
        """Write the final state if this attempt owns the task; return the new record.

        Returns None when the attempt no longer owns the task.
        """
        return self.finish_and_start([(task_id, attempt, outcome)], [], "")[0][0]

    def finish_and_start(
        self,
        outcomes: list[tuple[str, int, Outcome]],
        starts: list[tuple[str, int]],
        owner: str,
    ) -> tuple[list[dict[bytes, bytes] | None], list[bool]]:
        """:meth:`finish` and :meth:`start` for many tasks, in one round trip.

        A worker pool's loop turn both ends and starts tasks; one pipeline for
        both halves its waits on Redis. Each script stays atomic on its own.
        """
        now = repr(time.time())
        calls: list[ScriptCall] = []
        for task_id, attempt, outcome in outcomes:
            field = "result" if outcome.status is TaskStatus.SUCCEEDED else "error"
            finish_args: list[ScriptArg] = [
                attempt,
                outcome.status.value,
                now,
                field,
                outcome.body,
                self._result_ttl_s,
                outcome.traceback,
                task_id,
                FINISHED_CHANNEL,
            ]
            finish_keys = [
                task_key(task_id),
                UNFINISHED_KEY,
                status_index_key(TaskStatus.RUNNING),
                status_index_key(outcome.status),
            ]
            calls.append((self._finish, finish_keys, finish_args))
        for task_id, attempt in starts:
            start_args: list[ScriptArg] = [
                attempt,
                now,
                owner,
                task_id,
                CHANGED_CHANNEL,
            ]
            start_keys = [
                task_key(task_id),
                status_index_key(TaskStatus.QUEUED),
                status_index_key(TaskStatus.RUNNING),
            ]
            calls.append((self._start, start_keys, start_args))
        replies = self._run_scripts(calls)
        records = [
            dict(zip(flat[::2], flat[1::2], strict=True)) if flat else None
            for flat in replies[: len(outcomes)]
        ]
        return records, [bool(started) for started in replies[len(outcomes) :]]

    def _run_scripts(self, calls: list[ScriptCall]) -> list[Any]:
        """Run ``calls`` in one pipeline by their SHA1; the replies in order.

        redis-py's pipeline asks ``SCRIPT EXISTS`` before every execute that
        carries a script: a second round trip each time. Here ``EVALSHA`` goes
        out at once, and only when Redis lacks a script (it restarted, or its
        scripts were flushed) is the script loaded and the refused calls, which
        did not run, sent again.
        """
        if not calls:
            return []
        replies = self._evalsha_pipeline(calls)
        refused = [
            i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)
        ]
        if refused:
            with _translate_errors():
                for script in {id(calls[i][0]): calls[i][0] for i in refused}.values():
                    script.sha = self._client.script_load(script.script)
            again = self._evalsha_pipeline([calls[i] for i in refused])
            for i, reply in zip(refused, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _evalsha_pipeline(self, calls: list[ScriptCall]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        with _translate_errors():
            replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies

    def release(self, task_id: str, owner: str, error: bytes) -> Release:
        """Give up ``owner``'s running attempt: queue it again, or fail it with ``error``."""
        args: list[ScriptArg] = [
            owner,
            repr(time.time()),
            self._result_ttl_s,
            error,
            task_id,
            FINISHED_CHANNEL,
            CHANGED_CHANNEL,
        ]
        keys = [
            task_key(task_id),
            UNFINISHED_KEY,
            status_index_key(TaskStatus.RUNNING),
            status_index_key(TaskStatus.QUEUED),
            status_index_key(TaskStatus.FAILED),
        ]
        with _translate_errors():
            outcome, attempts = self._release(keys=keys, args=args)
        return Release(outcome.decode(), int(attempts))

    def cancel(self, task_id: str) -> Cancellation:
        """Cancel a queued or running task; report what it was."""
        args: list[ScriptArg] = [
            repr(time.time()),
            self._result_ttl_s,
            task_id,
            FINISHED_CHANNEL,
        ]
        with _translate_errors():
            found = self._cancel(
                keys=[
                    task_key(task_id),
                    UNFINISHED_KEY,
                    status_index_key(TaskStatus.QUEUED),
                    status_index_key(TaskStatus.RUNNING),
                    status_index_key(TaskStatus.CANCELLED),
                ],
                args=args,
            )
        previous = found[0].decode()
        if len(found) == 1:
            return Cancellation(previous)
        return Cancellation(previous, found[1].decode(), int(found[2]))

    def unfinished(
        self, after: float, limit: int
    ) -> list[tuple[UnfinishedTask, float]]:
        """Up to ``limit`` unfinished tasks created after ``after``, oldest first."""
        with _translate_errors():
            entries: list[tuple[bytes, float]] = self._client.zrangebyscore(  # type: ignore[assignment]
                UNFINISHED_KEY,
                f"({after!r}",
                "+inf",
                start=0,
                num=limit,
                withscores=True,
            )
            pipe = self._client.pipeline(transaction=False)
            for task_id, _ in entries:
                pipe.hmget(
                    task_key(task_id.decode()),
                    "name",
                    "status",
                    "attempts",
                    "owner",
                    "args",
                    "time_limit_s",
                    "created_at",
                )
            rows = pipe.execute()

        found = []
        for (task_id, score), row in zip(entries, rows, strict=True):
            name, status, attempts, owner, args, limit_s, created = row
            if status is None:
                continue  # expired or discarded between the two reads
            task = UnfinishedTask(
                task_id.decode(),
                (name or b"").decode(),
                status.decode(),
                int(attempts or 0),
                (owner or b"").decode(),
                args or b"{}",
                float(limit_s or 0),
                float(created or 0),
            )
            found.append((task, score))
        return found

    def announce_task_types(self, specs: dict[str, dict[str, Any]]) -> None:
        """Record the task names a worker pool serves, stamped with the time."""
        now = time.time()
        mapping = {
            name: orjson.dumps({**spec, "seen_at": now}) for name, spec in specs.items()
        }
        with _translate_errors():
            self._client.hset(TASK_TYPES_KEY, mapping=mapping)  # type: ignore[arg-type]

    def record_worker(self, identity: str, record: dict[str, Any], ttl_s: int) -> None:
        """Refresh a pool's record; it expires unless the next heartbeat renews it."""
        now = time.time()
        pipe = self._client.pipeline(transaction=True)
        pipe.set(
            worker_key(identity), orjson.dumps({**record, "seen_at": now}), ex=ttl_s
        )
        pipe.zadd(WORKERS_KEY, {identity: now})
        # Pools gone silent longer than a record lives drop out of the index.
        pipe.zremrangebyscore(WORKERS_KEY, "-inf", f"({now - ttl_s!r}")
        with _translate_errors():
            pipe.execute()

    def forget_worker(self, identity: str) -> None:
        """Remove a pool's record at a clean shutdown."""
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(worker_key(identity))
        pipe.zrem(WORKERS_KEY, identity)
        with _translate_errors():
            pipe.execute()

    def live_workers(self) -> list[dict[str, Any]]:
        """Records of the pools whose last heartbeat has not expired, newest first."""
        with _translate_errors():
            ids: list[bytes] = self._client.zrevrange(WORKERS_KEY, 0, -1)  # type: ignore[assignment]
            if not ids:
                return []
            raw: list[bytes | None] = self._client.mget(  # type: ignore[assignment]
                [worker_key(identity.decode()) for identity in ids]
            )
        return [orjson.loads(record) for record in raw if record is not None]

    def read_task_types(self) -> dict[str, dict[str, Any]]:
        """Every task type ever announced, with its ``seen_at`` time."""
        with _translate_errors():
            raw = cast(dict[bytes, bytes], self._client.hgetall(TASK_TYPES_KEY))
        return {name.decode(): orjson.loads(spec) for name, spec in raw.items()}

    def read_live_task_types(self, ttl_s: float) -> dict[str, dict[str, Any]]:
        """The task types some pool announced within the last ``ttl_s`` seconds."""
        oldest = time.time() - ttl_s
        return {
            name: spec
            for name, spec in self.read_task_types().items()
            if float(spec.get("seen_at", 0.0)) >= oldest
        }


def record_json(fields: dict[bytes, bytes]) -> bytes:
    """The public JSON form of a raw record (the task resource of the HTTP API)."""
    status = fields[b"status"].decode()
    resource: dict[str, Any] = {
        "id": fields[b"id"].decode(),
        "name": fields[b"name"].decode(),
        "status": status,
        "created_at": _iso_time(fields.get(b"created_at")),
        "started_at": _iso_time(fields.get(b"started_at")),
        "finished_at": _iso_time(fields.get(b"finished_at")),
        "attempts": int(fields.get(b"attempts", b"0")),
        "max_attempts": int(fields.get(b"max_attempts", b"1")),
        "progress": _fragment(fields.get(b"progress")),
    }
    if status == TaskStatus.SUCCEEDED:
        resource["result"] = _fragment(fields.get(b"result"))
    elif status == TaskStatus.FAILED:
        resource["error"] = _fragment(fields.get(b"error"))
    return orjson.dumps(resource)


def _iso_time(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    moment = datetime.fromtimestamp(float(raw), tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fragment(raw: bytes | None) -> orjson.Fragment | None:
    """Embed stored JSON text as it is, without decoding it again."""
    return None if raw is None else orjson.Fragment(raw)


@contextmanager
def _translate_errors() -> Iterator[None]:
    """Turn Redis connectivity errors into StoreUnavailableError."""
    try:
        yield
    except REDIS_DOWN_ERRORS as exc:
        raise StoreUnavailableError(f"Redis unavailable: {exc}") from exc
