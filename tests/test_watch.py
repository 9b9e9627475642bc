"""Fan-out of the pub/sub listener: who wakes for which notification."""

from __future__ import annotations

from app.watch import CompletionWatcher
from worker.store import CHANGED_CHANNEL, FINISHED_CHANNEL


def test_changes_wake_followers_and_endings_wake_everyone(redis_client):
    watcher = CompletionWatcher(redis_client)
    try:
        waiter = watcher.watch("t1")
        follower = watcher.follow("t1")
        other = watcher.follow("t2")

        watcher._wake(CHANGED_CHANNEL.encode(), b"t1")
        assert follower.is_set() and not waiter.is_set() and not other.is_set()

        follower.clear()
        watcher._wake(FINISHED_CHANNEL.encode(), b"t1")
        assert follower.is_set() and waiter.is_set() and not other.is_set()
    finally:
        watcher.close()


def test_forgotten_events_leave_nothing_behind(redis_client):
    watcher = CompletionWatcher(redis_client)
    try:
        follower = watcher.follow("t1")
        waiter = watcher.watch("t1")
        watcher.unfollow("t1", follower)
        watcher.unwatch("t1", waiter)
        watcher.unfollow("t1", follower)  # twice is harmless

        watcher._wake(FINISHED_CHANNEL.encode(), b"t1")
        assert not follower.is_set() and not waiter.is_set()
        assert watcher._followers == {} and watcher._waiters == {}
    finally:
        watcher.close()
