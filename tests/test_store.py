import time

import orjson
import pytest
import redis

from tests.helpers import wait_for
from worker.errors import StoreUnavailableError
from worker.store import (
    ALL_INDEX_KEY,
    FINISHED_CHANNEL,
    UNFINISHED_KEY,
    Created,
    Idempotency,
    NewTask,
    Outcome,
    TaskStatus,
    TaskStore,
    connect,
    idempotency_key,
    name_index_key,
    record_json,
    status_index_key,
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

    assert not store.start("t1", attempt=2, owner="w1")
    assert store.start("t1", attempt=1, owner="w1")
    assert not store.start("t1", attempt=1, owner="w1")
    assert store.get("t1")[b"status"] == b"running"


def test_start_of_a_discarded_task_is_refused(store):
    store.create("t1", "echo", b"{}")
    store.discard("t1", "echo")

    assert not store.start("t1", attempt=1, owner="w1")
    assert store.get("t1") is None


def test_progress_is_stored_only_while_the_attempt_runs(store):
    store.create("t1", "echo", b"{}")
    assert not store.set_progress("t1", 1, b'{"current": 1}')

    store.start("t1", 1, "w1")
    assert store.set_progress("t1", 1, b'{"current": 2}')
    assert not store.set_progress("t1", 2, b'{"current": 3}')
    assert store.get("t1")[b"progress"] == b'{"current": 2}'


def test_finish_writes_result_expiry_index_and_notifies(store, redis_client):
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(FINISHED_CHANNEL)
    store.create("t1", "echo", b"{}")
    store.start("t1", 1, "w1")

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
    store.start("t1", 1, "w1")

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
    store.start("t1", 1, "w1")
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
        "max_attempts",
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
    store.start("t1", 1, "w1")
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


def test_start_records_the_owner_and_finish_clears_it(store):
    store.create("t1", "echo", b"{}")
    store.start("t1", 1, "pool-a")

    assert store.get("t1")[b"owner"] == b"pool-a"
    record = store.finish("t1", 1, SUCCESS)
    assert b"owner" not in record


def test_release_queues_a_lost_attempt_again_while_attempts_remain(store, redis_client):
    store.create("t1", "echo", b"{}", max_attempts=2)
    store.start("t1", 1, "pool-a")

    release = store.release("t1", "pool-a", b'{"type": "WorkerLost", "message": "m"}')

    assert (release.outcome, release.attempts) == ("queued", 1)
    assert store.get("t1")[b"status"] == b"queued"
    assert redis_client.zscore(UNFINISHED_KEY, "t1") is not None
    assert store.start("t1", 2, "pool-b")
    assert not store.finish("t1", 1, SUCCESS)  # the lost attempt's late result
    assert store.finish("t1", 2, SUCCESS)[b"status"] == b"succeeded"


def test_release_fails_the_task_on_its_last_attempt(store, redis_client):
    store.create("t1", "echo", b"{}", max_attempts=1)
    store.start("t1", 1, "pool-a")

    release = store.release(
        "t1", "pool-a", b'{"type": "WorkerLost", "message": "gone"}'
    )

    assert release.outcome == "failed"
    fields = store.get("t1")
    assert fields[b"status"] == b"failed"
    assert orjson.loads(fields[b"error"]) == {"type": "WorkerLost", "message": "gone"}
    assert redis_client.zscore(UNFINISHED_KEY, "t1") is None
    assert redis_client.ttl(task_key("t1")) > 0


def test_release_by_someone_not_the_owner_changes_nothing(store):
    store.create("t1", "echo", b"{}", max_attempts=3)
    store.start("t1", 1, "pool-a")

    assert store.release("t1", "pool-b", b"{}").outcome == "gone"
    assert store.get("t1")[b"status"] == b"running"
    assert store.release("missing", "pool-a", b"{}").outcome == "gone"


def test_release_of_a_task_never_started_keeps_it_queued(store):
    store.create("t1", "echo", b"{}")

    assert store.release("t1", "pool-a", b"{}") == store.release("t1", "x", b"{}")
    assert store.release("t1", "pool-a", b"{}").outcome == "queued"
    assert store.get("t1")[b"attempts"] == b"0"


def test_cancel_ends_queued_and_running_tasks_only(store, redis_client):
    store.create("queued", "echo", b"{}")
    store.create("running", "echo", b"{}")
    store.start("running", 1, "pool-a")
    store.create("done", "echo", b"{}")
    store.start("done", 1, "pool-a")
    store.finish("done", 1, SUCCESS)

    assert store.cancel("queued").previous == "queued"
    cancellation = store.cancel("running")
    assert (cancellation.previous, cancellation.owner) == ("running", "pool-a")
    assert store.cancel("done").previous == "succeeded"
    assert store.cancel("nope").previous == "missing"

    assert store.get("queued")[b"status"] == b"cancelled"
    assert not store.start("queued", 1, "pool-a")
    assert not store.finish("running", 1, SUCCESS)
    assert redis_client.zcard(UNFINISHED_KEY) == 0


def test_unfinished_lists_tasks_in_creation_order_in_batches(store):
    for number in range(5):
        store.create(f"t{number}", "echo", b'{"n": %d}' % number, time_limit_s=9)
    store.start("t1", 1, "pool-a")

    first = store.unfinished(float("-inf"), 3)
    rest = store.unfinished(first[-1][1], 3)

    assert [task.task_id for task, _ in first + rest] == ["t0", "t1", "t2", "t3", "t4"]
    running = first[1][0]
    assert (running.status, running.owner, running.attempts) == ("running", "pool-a", 1)
    assert first[0][0].args == b'{"n": 0}'
    assert first[0][0].time_limit_s == 9


def statuses_indexed(redis_client, task_id):
    return {
        status.value
        for status in TaskStatus
        if redis_client.zscore(status_index_key(status), task_id) is not None
    }


def test_status_indexes_follow_every_transition(store, redis_client):
    store.create("t1", "echo", b"{}", max_attempts=2)
    store.create("t2", "echo", b"{}")
    assert statuses_indexed(redis_client, "t1") == {"queued"}
    assert redis_client.zscore(ALL_INDEX_KEY, "t1") is not None
    assert redis_client.zscore(name_index_key("echo"), "t1") is not None

    store.start("t1", 1, "pool-a")
    assert statuses_indexed(redis_client, "t1") == {"running"}
    store.release("t1", "pool-a", b'{"type": "Lost", "message": ""}')
    assert statuses_indexed(redis_client, "t1") == {"queued"}
    store.start("t1", 2, "pool-b")
    store.finish("t1", 2, SUCCESS)
    assert statuses_indexed(redis_client, "t1") == {"succeeded"}

    store.cancel("t2")
    assert statuses_indexed(redis_client, "t2") == {"cancelled"}


def test_an_idempotency_key_creates_once_and_discard_frees_it(store, redis_client):
    key = Idempotency("k" * 64, "d" * 64, ttl_s=60)

    assert store.create("t1", "echo", b"{}", idempotency=key).created
    again = store.create("t2", "echo", b"{}", idempotency=key)
    assert again == Created(False, "t1:" + "d" * 64)
    assert store.get("t2") is None
    assert 0 < redis_client.ttl(idempotency_key("k" * 64)) <= 60

    store.discard("t1", "echo", key)
    assert store.get("t1") is None
    assert redis_client.zscore(ALL_INDEX_KEY, "t1") is None
    assert store.create("t3", "echo", b"{}", idempotency=key).created


def test_creates_trim_expired_entries_from_the_old_end(store, redis_client):
    store.create("old", "echo", b"{}")
    store.start("old", 1, "pool")
    store.finish("old", 1, SUCCESS)
    redis_client.delete(task_key("old"))  # as if it expired

    store.create("new", "echo", b"{}")

    for index in (ALL_INDEX_KEY, name_index_key("echo"), status_index_key("succeeded")):
        assert redis_client.zscore(index, "old") is None
    assert redis_client.zscore(ALL_INDEX_KEY, "new") is not None


def test_list_page_pages_through_equal_scores_without_loss(store, redis_client):
    for number in range(7):
        task_id = f"{number:032x}"
        store.create(task_id, "echo", b"{}")
        redis_client.zadd(ALL_INDEX_KEY, {task_id: 100.0})
    redis_client.zadd(ALL_INDEX_KEY, {"f" * 32: 200.0})  # record expired

    seen, cursor = [], None
    for _ in range(10):
        page = store.list_page(ALL_INDEX_KEY, cursor, 3, lambda _: True, 100)
        seen += [fields[b"id"].decode() for fields in page.records]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"{number:032x}" for number in reversed(range(7))]
    assert redis_client.zscore(ALL_INDEX_KEY, "f" * 32) is None


def test_live_task_types_leave_out_those_announced_too_long_ago(store, redis_client):
    store.announce_task_types({"fresh": {"doc": "now"}})
    stale = {"doc": "long ago", "seen_at": time.time() - 120}
    redis_client.hset("taskgate:task-types", "stale", orjson.dumps(stale))

    live = store.read_live_task_types(ttl_s=60)

    assert set(live) == {"fresh"}
    assert live["fresh"]["doc"] == "now"


def test_batched_scripts_load_themselves_again_after_a_script_flush(
    store, redis_client
):
    # Batches send EVALSHA without asking SCRIPT EXISTS first: a Redis that
    # lost its scripts (restart, SCRIPT FLUSH) must still run every call once.
    store.create_many([NewTask("t1", "echo", b"{}"), NewTask("t2", "echo", b"{}")])
    redis_client.script_flush()

    records, started = store.finish_and_start([], [("t1", 1), ("t2", 1)], "w1")
    assert records == []
    assert started == [True, True]
    assert store.get("t1")[b"attempts"] == b"1"  # ran once, not twice

    redis_client.script_flush()
    records, started = store.finish_and_start([("t1", 1, SUCCESS)], [("t2", 1)], "w1")
    assert records[0][b"status"] == b"succeeded"
    assert records[0][b"result"] == b'{"answer": 42}'
    assert started == [False]  # t2 already runs as attempt 1
    assert store.get("t2")[b"status"] == b"running"


def test_a_script_error_in_a_batch_is_raised(store, redis_client):
    redis_client.set(task_key("t1"), "not a hash")

    with pytest.raises(redis.ResponseError):
        store.start("t1", 1, "w1")
