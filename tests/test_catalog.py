import time

import pytest

from app.catalog import TaskCatalog
from worker.errors import (
    InvalidArgumentsError,
    StoreUnavailableError,
    UnknownTaskError,
)
from worker.store import TASK_TYPES_KEY


def test_catalog_knows_announced_tasks_and_checks_their_arguments(store):
    store.announce_task_types({"sleep": {"required": ["seconds"], "optional": []}})
    catalog = TaskCatalog(store, refresh_s=60, ttl_s=60)

    spec = catalog.spec("sleep")

    spec.check({"seconds": 1})
    with pytest.raises(InvalidArgumentsError):
        spec.check({})


def test_catalog_refuses_names_never_announced(store):
    catalog = TaskCatalog(store, refresh_s=60, ttl_s=60)

    with pytest.raises(UnknownTaskError):
        catalog.spec("nobody-serves-this")


def test_catalog_forgets_names_not_seen_within_the_ttl(store, redis_client):
    old = b'{"required": [], "seen_at": %f}' % (time.time() - 120)
    redis_client.hset(TASK_TYPES_KEY, "stale", old)
    catalog = TaskCatalog(store, refresh_s=60, ttl_s=60)

    with pytest.raises(UnknownTaskError):
        catalog.spec("stale")


def test_catalog_rereads_redis_only_after_the_refresh_interval(store):
    catalog = TaskCatalog(store, refresh_s=0.05, ttl_s=60)
    with pytest.raises(UnknownTaskError):
        catalog.spec("late")

    store.announce_task_types({"late": {}})
    with pytest.raises(UnknownTaskError):
        catalog.spec("late")  # still the cached table

    time.sleep(0.06)
    assert catalog.spec("late").required == ()


def test_catalog_never_judges_a_name_against_an_empty_table(store):
    """Concurrent first requests wait for one read instead of seeing no table."""
    import gevent

    store.announce_task_types({"echo": {}})
    catalog = TaskCatalog(store, refresh_s=60, ttl_s=60)
    reads = []
    original = store.read_task_types

    def slow_read():
        reads.append(1)
        gevent.sleep(0.05)  # another greenlet asks meanwhile
        return original()

    store.read_task_types = slow_read
    lookups = [gevent.spawn(catalog.spec, "echo") for _ in range(5)]
    gevent.joinall(lookups, raise_error=True)

    assert all(lookup.value.accepts_any is False for lookup in lookups)
    assert len(reads) == 1  # the others waited for the first read

    catalog._loaded_at -= 61  # due again; now one request refreshes, others wait not
    lookups = [gevent.spawn(catalog.spec, "echo") for _ in range(5)]
    gevent.joinall(lookups, raise_error=True)
    assert len(reads) == 2


def _redis_goes_down(store):
    def unavailable():
        raise StoreUnavailableError("Redis unavailable: connection refused")

    store.read_task_types = unavailable
    store.live_workers = unavailable


def test_a_stale_catalog_says_redis_unavailable_not_unknown_task(store):
    """After the TTL of an outage, 503 (store unavailable) rather than 404."""
    store.announce_task_types({"echo": {}})
    catalog = TaskCatalog(store, refresh_s=0.01, ttl_s=0.2)
    assert catalog.spec("echo").required == ()

    _redis_goes_down(store)
    time.sleep(0.02)
    assert catalog.spec("echo").required == ()  # last good read, still within TTL
    with pytest.raises(StoreUnavailableError):
        catalog.spec("never-announced")
    time.sleep(0.25)
    with pytest.raises(StoreUnavailableError):
        catalog.spec("echo")


def test_a_catalog_recovers_by_itself_when_redis_answers_again(store):
    original = (store.read_task_types, store.live_workers)
    store.announce_task_types({"echo": {}})
    catalog = TaskCatalog(store, refresh_s=0.01, ttl_s=0.1)
    catalog.spec("echo")
    _redis_goes_down(store)
    time.sleep(0.15)
    with pytest.raises(StoreUnavailableError):
        catalog.spec("echo")

    store.read_task_types, store.live_workers = original
    store.announce_task_types({"echo": {}})
    time.sleep(0.02)
    assert catalog.spec("echo").required == ()
    with pytest.raises(UnknownTaskError):
        catalog.spec("never-announced")
