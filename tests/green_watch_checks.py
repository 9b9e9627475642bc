"""Checks of app.watch run in a gevent-patched process (see test_watch.py).

The watcher's listeners read Redis in greenlets, which only works where gevent
patched the socket module first, as gunicorn's gevent worker does. The pytest
process is not patched, so these run as ``python -m tests.green_watch_checks URL
NAME`` and print ``ok NAME`` when every assertion held.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import redis  # noqa: E402

from app import watch  # noqa: E402
from app.watch import CompletionWatcher  # noqa: E402
from worker.store import CHANGED_CHANNEL, FINISHED_CHANNEL  # noqa: E402


def subscribers(client: redis.Redis, channel: str) -> int:
    counts = dict(client.pubsub_numsub(channel))
    return int(counts[channel.encode()])


def wait_for(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def fan_out(client: redis.Redis) -> None:
    """Changes wake followers; endings wake waiters and followers; ids never mix."""
    watcher = CompletionWatcher(client)
    try:
        waiter = watcher.watch("t1")
        follower = watcher.follow("t1")
        other = watcher.follow("t2")

        watcher._wake_followers("t1")
        assert follower.is_set() and not waiter.is_set() and not other.is_set()

        follower.clear()
        watcher._wake_waiters("t1")
        assert follower.is_set() and waiter.is_set() and not other.is_set()

        watcher.unfollow("t1", follower)
        watcher.unwatch("t1", waiter)
        watcher.unfollow("t1", follower)  # twice is harmless
        watcher.unfollow("t2", other)
        assert watcher._followers == {} and watcher._waiters == {}
    finally:
        watcher.close()


def change_channel_on_demand(client: redis.Redis) -> None:
    """The change channel is subscribed only while a stream follows a task."""
    watch.CHANGES_IDLE_S = 0.2
    watcher = CompletionWatcher(client)
    try:
        wait_for(lambda: subscribers(client, FINISHED_CHANNEL) == 1, 5)
        assert subscribers(client, CHANGED_CHANNEL) == 0

        follower = watcher.follow("t1")
        # follow() returns once subscribed: a change published now is heard.
        assert subscribers(client, CHANGED_CHANNEL) == 1
        client.publish(CHANGED_CHANNEL, "t1")
        assert follower.wait(5)

        watcher.unfollow("t1", follower)
        # get_message returns each second at the latest, so the idle is noticed.
        wait_for(lambda: subscribers(client, CHANGED_CHANNEL) == 0, 5)
        assert subscribers(client, FINISHED_CHANNEL) == 1

        again = watcher.follow("t2")
        client.publish(CHANGED_CHANNEL, "t2")
        assert again.wait(5)
        waiter = watcher.watch("t3")
        client.publish(FINISHED_CHANNEL, "t3")
        assert waiter.wait(5)
    finally:
        watcher.close()


CHECKS = {"fan_out": fan_out, "change_channel_on_demand": change_channel_on_demand}

if __name__ == "__main__":
    url, name = sys.argv[1], sys.argv[2]
    CHECKS[name](redis.Redis.from_url(url, socket_timeout=5))
    print(f"ok {name}")
