"""Wake long-polling requests when a task finishes, without polling Redis.

Workers publish each finished task's id on one Redis channel. One listener
greenlet per web process subscribes to it and wakes the requests waiting for that
id. A wake-up is only a hint: the waiting request reads the record from Redis
afterwards, and its own deadline bounds the wait if a message is missed while the
listener reconnects.
"""

from __future__ import annotations

import logging

import gevent
import redis
from gevent.event import Event

from worker.store import FINISHED_CHANNEL, REDIS_DOWN_ERRORS

logger = logging.getLogger(__name__)

RECONNECT_MAX_S = 5.0


class CompletionWatcher:
    """Fans ``finished`` notifications out to the requests waiting for them."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._waiters: dict[str, set[Event]] = {}
        self._listener = gevent.spawn(self._listen_forever)

    def watch(self, task_id: str) -> Event:
        """An event set when ``task_id`` finishes; call :meth:`unwatch` after."""
        event = Event()
        self._waiters.setdefault(task_id, set()).add(event)
        return event

    def unwatch(self, task_id: str, event: Event) -> None:
        """Forget a waiter."""
        waiters = self._waiters.get(task_id)
        if waiters is None:
            return
        waiters.discard(event)
        if not waiters:
            del self._waiters[task_id]

    def close(self) -> None:
        """Stop listening."""
        self._listener.kill(block=False)

    def _listen_forever(self) -> None:
        backoff_s = 0.1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(FINISHED_CHANNEL)
                backoff_s = 0.1
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._wake(message["data"])
            except REDIS_DOWN_ERRORS as exc:
                logger.warning(
                    "finished-task listener lost Redis, retrying in %.1fs: %s",
                    backoff_s,
                    exc,
                )
            finally:
                pubsub.close()
            gevent.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)

    def _wake(self, data: bytes) -> None:
        for event in self._waiters.get(data.decode(), ()):
            event.set()
