"""Wake long-polls and event streams when a task changes, without polling Redis.

Workers publish each finished task's id on one Redis channel, and the id of a task
that started, reported progress or went back to the queue on another. One
listener greenlet per web process, on one pub/sub connection, subscribes to both
and wakes the requests waiting for that id: long-polls only when it finished,
event streams on any change. A wake-up is only a hint: the woken request reads the
record from Redis afterwards, and its own deadline bounds the wait if a message is
missed while the listener reconnects.
"""

from __future__ import annotations

import logging

import gevent
import redis
from gevent.event import Event

from worker.store import CHANGED_CHANNEL, FINISHED_CHANNEL, REDIS_DOWN_ERRORS

logger = logging.getLogger(__name__)

RECONNECT_MAX_S = 5.0


class CompletionWatcher:
    """Fans ``finished`` notifications out to the requests waiting for them."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._waiters: dict[str, set[Event]] = {}
        self._followers: dict[str, set[Event]] = {}
        self._listener = gevent.spawn(self._listen_forever)

    def watch(self, task_id: str) -> Event:
        """An event set when ``task_id`` finishes; call :meth:`unwatch` after."""
        event = Event()
        self._waiters.setdefault(task_id, set()).add(event)
        return event

    def unwatch(self, task_id: str, event: Event) -> None:
        """Forget a waiter."""
        _forget(self._waiters, task_id, event)

    def follow(self, task_id: str) -> Event:
        """An event set on every change of ``task_id``; call :meth:`unfollow` after."""
        event = Event()
        self._followers.setdefault(task_id, set()).add(event)
        return event

    def unfollow(self, task_id: str, event: Event) -> None:
        """Forget a follower."""
        _forget(self._followers, task_id, event)

    def close(self) -> None:
        """Stop listening."""
        self._listener.kill(block=False)

    def _listen_forever(self) -> None:
        backoff_s = 0.1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(FINISHED_CHANNEL, CHANGED_CHANNEL)
                backoff_s = 0.1
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._wake(message["channel"], message["data"])
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

    def _wake(self, channel: bytes, data: bytes) -> None:
        task_id = data.decode()
        if channel == FINISHED_CHANNEL.encode():
            for event in self._waiters.get(task_id, ()):
                event.set()
        for event in self._followers.get(task_id, ()):
            event.set()


def _forget(table: dict[str, set[Event]], task_id: str, event: Event) -> None:
    events = table.get(task_id)
    if events is None:
        return
    events.discard(event)
    if not events:
        del table[task_id]
