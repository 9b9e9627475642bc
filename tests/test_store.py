import time

import orjson
import pytest

from tests.helpers import wait_for
from worker.errors import StoreUnavailableError
from worker.store import (
    FINISHED_CHANNEL,
    UNFINISHED_KEY,
    Outcome,
    TaskStatus,
    TaskStore,
    connect,
    record_json,
    task_key,
)

SUCCESS = Outcome(TaskStatus.SUCCEEDED, b'{"answer": 42}')


def test_create_writes_a_queued_record_and_indexes_it(store, redis_client):
    store.create("t1", "echo", b'{"a": 1}')

    fields = store.get("t1")
    assert fields[b"status"] == b"queued"
    assert fields[b"attempts"] == b"0"
    assert fields[b"args"] == b'{"a": 1}'
    assert redis_client.zscore(UNFINISHED_KEY, "t1") is not None
    assert redis_client.ttl(task_key("t1")) == -1  # unfinished records never expire


def test_get_of_unknown_id_is_none(store):
    assert store.get("never") is None


def test_start_takes_only_the_expected_attempt_once(store):
    store.create("t1", "echo", b"{}")

    assert not store.start("t1", attempt=2)
    assert store.start("t1", attempt=1)
    assert not store.start("t1", attempt=1)
    assert store.get("t1")[b"status"] == b"running"


def test_start_of_a_discarded_task_is_refused(store):
    store.create("t1", "echo", b"{}")
    store.discard("t1")

    assert not store.start("t1", attempt=1)
    assert store.get("t1") is None


def test_progress_is_stored_only_while_the_attempt_runs(store):
    store.create("t1", "echo", b"{}")
    assert not store.set_progress("t1", 1, b'{"current": 1}')

    store.start("t1", 1)
    assert store.set_progress("t1", 1, b'{"current": 2}')
    assert not store.set_progress("t1", 2, b'{"current": 3}')
    assert store.get("t1")[b"progress"] == b'{"current": 2}'


def test_finish_writes_result_expiry_index_and_notifies(store, redis_client):
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(FINISHED_CHANNEL)
    store.create("t1", "echo", b"{}")
    store.start("t1", 1)

    record = store.finish("t1", 1, SUCCESS)

    assert record[b"status"] == b"succeeded"
    assert record[b"result"] == b'{"answer": 42}'
    assert 0 < redis_client.ttl(task_key("t1")) <= 600
    assert redis_client.zscore(UNFINISHED_KEY, "t1") is None
    message = wait_for(lambda: pubsub.get_message(timeout=0.1), timeout_s=5)
    assert message["data"] == b"t1"
    pubsub.close()


def test_finish_of_a_given_up_attempt_changes_nothing(store):
    store.create("t1", "echo", b"{}")
    store.start("t1", 1)

    assert store.finish("t1", 2, SUCCESS) is None
    assert store.get("t1")[b"status"] == b"running"

    store.finish(
        "t1", 1, Outcome(TaskStatus.FAILED, b'{"type": "E", "message": "m"}', "tb")
    )
    assert store.finish("t1", 1, SUCCESS) is None
    assert store.get("t1")[b"status"] == b"failed"
    assert store.get("t1")[b"traceback"] == b"tb"


def test_record_json_is_the_public_task_resource(store):
    before = time.time()
    store.create("t1", "echo", b'{"x": 1}')
    store.start("t1", 1)
    store.set_progress("t1", 1, b'{"current": 1, "total": 2, "message": null}')
    record = store.finish("t1", 1, SUCCESS)

    resource = orjson.loads(record_json(record))

    assert set(resource) == {
        "id",
        "name",
        "status",
        "created_at",
        "started_at",
        "finished_at",
        "attempts",
        "progress",
        "result",
    }
    assert resource["id"] == "t1"
    assert resource["status"] == "succeeded"
    assert resource["attempts"] == 1
    assert resource["result"] == {"answer": 42}
    assert resource["progress"] == {"current": 1, "total": 2, "message": None}
    assert resource["created_at"].endswith("Z")
    assert resource["created_at"] <= resource["started_at"] <= resource["finished_at"]
    assert resource["created_at"][:4] == time.strftime("%Y", time.gmtime(before))


def test_record_json_of_a_failure_carries_the_error_but_not_the_traceback(store):
    store.create("t1", "fail", b"{}")
    store.start("t1", 1)
    error = Outcome(
        TaskStatus.FAILED, b'{"type": "RuntimeError", "message": "m"}', "secret tb"
    )
    record = store.finish("t1", 1, error)

    resource = orjson.loads(record_json(record))

    assert resource["error"] == {"type": "RuntimeError", "message": "m"}
    assert "result" not in resource
    assert b"secret tb" not in record_json(record)


def test_task_types_round_trip_with_their_time(store):
    store.announce_task_types({"echo": {"required": [], "accepts_any": True}})

    types = store.read_task_types()

    assert types["echo"]["accepts_any"] is True
    assert abs(types["echo"]["seen_at"] - time.time()) < 5


def test_store_reports_an_unreachable_redis_as_unavailable():
    from tools.redis_server import free_port

    client = connect(f"redis://127.0.0.1:{free_port()}/0", pool_size=2, timeout_s=0.5)
    dead = TaskStore(client, result_ttl_s=10)
    started = time.monotonic()

    with pytest.raises(StoreUnavailableError):
        dead.create("t1", "echo", b"{}")
    with pytest.raises(StoreUnavailableError):
        dead.get("t1")
    # Bounded by the timeout and one retry, not by a long backoff schedule.
    assert time.monotonic() - started < 3
