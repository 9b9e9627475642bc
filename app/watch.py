"""Wake long-polls and event streams when a task changes, without polling Redis.

Workers publish each finished task's id on one Redis channel, and the id of a task
that started, reported progress or went back to the queue on another. Each web
process listens with one greenlet per channel: the finished channel always (it
wakes long-polls and synchronous calls whose reply did not come), the change
channel only while an event stream follows a task, since every task publishes
there as it starts and most web processes serve no stream at all. A wake-up is
only a hint: the woken request reads the record from Redis afterwards, and its
own deadline bounds the wait if a message is missed while a listener reconnects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent
import redis
from gevent.event import Event

from worker.store import CHANGED_CHANNEL, FINISHED_CHANNEL, REDIS_DOWN_ERRORS

logger = logging.getLogger(__name__)

RECONNECT_MAX_S = 5.0
# How long a new follower waits for the change channel's subscription, so it
# misses no change made after it asked; past this it relies on its own re-reads.
SUBSCRIBE_WAIT_S = 1.0
# The change listener stops once no stream has followed a task for this long.
CHANGES_IDLE_S = 2.0


class CompletionWatcher:
    """Fans task notifications out to the requests waiting for them."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._waiters: dict[str, set[Event]] = {}
        self._followers: dict[str, set[Event]] = {}
        self._no_followers_since: float | None = time.monotonic()
        self._finished_listener = gevent.spawn(
            self._listen_forever, FINISHED_CHANNEL, self._wake_waiters, Event(), None
        )
        self._changes_listener: gevent.Greenlet | None = None
        self._changes_subscribed = Event()

    def watch(self, task_id: str) -> Event:
        """An event set when ``task_id`` finishes; call :meth:`unwatch` after."""
        event = Event()
        self._waiters.setdefault(task_id, set()).add(event)
        return event

    def unwatch(self, task_id: str, event: Event) -> None:
        """Forget a waiter."""
        _forget(self._waiters, task_id, event)

    def follow(self, task_id: str) -> Event:
        """An event set on every change of ``task_id``; call :meth:`unfollow` after.

        Starts the change listener if none runs, and waits (briefly) until it
        is subscribed.
        """
        event = Event()
        self._followers.setdefault(task_id, set()).add(event)
        self._no_followers_since = None
        if self._changes_listener is None or self._changes_listener.dead:
            self._changes_subscribed = Event()
            self._changes_listener = gevent.spawn(
                self._listen_forever,
                CHANGED_CHANNEL,
                self._wake_followers,
                self._changes_subscribed,
                self._changes_unwanted,
            )
        self._changes_subscribed.wait(SUBSCRIBE_WAIT_S)
        return event

    def unfollow(self, task_id: str, event: Event) -> None:
        """Forget a follower."""
        _forget(self._followers, task_id, event)
        if not self._followers:
            self._no_followers_since = time.monotonic()

    def close(self) -> None:
        """Stop listening."""
        self._finished_listener.kill(block=False)
        if self._changes_listener is not None:
            self._changes_listener.kill(block=False)

    def _changes_unwanted(self) -> bool:
        """Whether the change listener should stop: nobody followed for a while."""
        since = self._no_followers_since
        if since is None or time.monotonic() - since < CHANGES_IDLE_S:
            return False
        # Cleared before the listener's last I/O, so a follow() from now on
        # starts a fresh one instead of waiting on this one.
        self._changes_listener = None
        return True

    def _listen_forever(
        self,
        channel: str,
        wake: Callable[[str], None],
        subscribed: Event,
        unwanted: Callable[[], bool] | None,
    ) -> None:
        backoff_s = 0.1
        while True:
            pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(channel)
                backoff_s = 0.1
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        if message["type"] == "message":
                            wake(message["data"].decode())
                        elif message["type"] == "subscribe":
                            subscribed.set()
                    if unwanted is not None and unwanted():
                        return
            except REDIS_DOWN_ERRORS as exc:
                logger.warning(
                    "listener of %s lost Redis, retrying in %.1fs: %s",
                    channel,
                    backoff_s,
                    exc,
                )
            finally:
                pubsub.close()
            gevent.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)

    def _wake_waiters(self, task_id: str) -> None:
        """A task finished: wake its long-polls and its event streams."""
        for event in self._waiters.get(task_id, ()):
            event.set()
        self._wake_followers(task_id)

    def _wake_followers(self, task_id: str) -> None:
        for event in self._followers.get(task_id, ()):
            event.set()


def _forget(table: dict[str, set[Event]], task_id: str, event: Event) -> None:
    events = table.get(task_id)
    if events is None:
        return
    events.discard(event)
    if not events:
        del table[task_id]
