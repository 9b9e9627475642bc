import gevent
import pytest

from app.records import RecordWriter
from tools.redis_server import free_port
from worker.errors import StoreUnavailableError
from worker.store import NewTask, TaskStore, connect


def test_creates_that_arrive_during_a_write_share_the_next_transaction(store):
    batches = []
    original = store.create_many

    def counting(tasks):
        batches.append(len(tasks))
        gevent.sleep(0)  # as a real round trip does, let other requests run
        return original(tasks)

    store.create_many = counting
    writer = RecordWriter(store, timeout_s=2)
    requests = [
        gevent.spawn(writer.create, NewTask(f"t{n}", "echo", b"{}")) for n in range(50)
    ]
    gevent.joinall(requests, raise_error=True)

    # The first request writes its own record; the 49 that came meanwhile share one.
    assert batches == [1, 49]
    assert all(store.get(f"t{n}")[b"status"] == b"queued" for n in range(50))


def test_a_lone_create_is_written_at_once(store):
    writer = RecordWriter(store, timeout_s=2)
    writer.create(NewTask("solo", "echo", b'{"a": 1}', max_attempts=4, time_limit_s=9))

    fields = store.get("solo")
    assert (fields[b"max_attempts"], fields[b"time_limit_s"]) == (b"4", b"9")


def test_every_waiting_request_hears_that_redis_is_down():
    dead = TaskStore(
        connect(f"redis://127.0.0.1:{free_port()}/0", 2, 0.2), result_ttl_s=10
    )
    writer = RecordWriter(dead, timeout_s=0.2)
    requests = [
        gevent.spawn(writer.create, NewTask(f"t{n}", "echo", b"{}")) for n in range(5)
    ]
    gevent.joinall(requests)

    for request in requests:
        with pytest.raises(StoreUnavailableError):
            request.get()
