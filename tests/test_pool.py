"""The worker pool as a real process, facing a scripted broker socket."""

from __future__ import annotations

import os
import signal
import time

import orjson
import pytest
import redis
import zmq

from tests.conftest import stack_env
from tests.helpers import ManagedProcess, flush_redis, python_args, wait_for
from worker import protocol
from worker.protocol import Command, Header, Message
from worker.store import TaskStore

pytestmark = pytest.mark.slow


class FakeBroker:
    """The backend ROUTER socket, driven by the test."""

    def __init__(self, address):
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(address)

    def receive(self, command, timeout_s=10.0):
        """The next message with ``command``, skipping heartbeats and others."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.socket.poll(50):
                identity, *frames = self.socket.recv_multipart()
                message = protocol.decode(frames)
                if message.header.command is command:
                    return identity, message
                if (
                    command is Command.READY
                    and message.header.command is Command.HEARTBEAT
                ):
                    # Its first announcement went out before the connection was
                    # up: ask again, as the real broker does.
                    disconnect = protocol.encode(Message(Header(Command.DISCONNECT)))
                    self.socket.send_multipart([identity, *disconnect])
        raise AssertionError(f"no {command} within {timeout_s}s")

    def submit(self, identity, task_id, name, payload, request_id="r1", attempt=1):
        header = Header(Command.SUBMIT, task_id, name, attempt, request_id)
        frames = protocol.encode(Message(header, b"web-1", payload))
        self.socket.send_multipart([identity, *frames])

    def close(self):
        self.socket.close(linger=0)
        self.context.term()


@pytest.fixture
def start_pool(redis_server_instance, tmp_path):
    """Start ``python -m worker`` facing a FakeBroker; stopped after the test."""
    started = []

    def start(redis_url=None, **overrides):
        redis_url = redis_url or redis_server_instance.url(2)
        settings = {"TASKGATE_WORKER_PROCESSES": "2", "TASKGATE_CANCEL_GRACE_S": "0.5"}
        env = stack_env(redis_url, **{**settings, **overrides})
        broker = FakeBroker(env["TASKGATE_BROKER_BACKEND"])
        process = ManagedProcess("pool", python_args("-m", "worker"), env, tmp_path)
        started.append((process, broker))
        identity, ready = broker.receive(Command.READY, timeout_s=30)
        return process, broker, identity, orjson.loads(ready.payload)

    yield start
    for process, broker in started:
        process.stop()
        broker.close()


@pytest.fixture
def open_store():
    """Open a TaskStore on a Redis URL; every client is closed after the test."""
    clients = []

    def open_(redis_url):
        clients.append(redis.Redis.from_url(redis_url, socket_timeout=5))
        return TaskStore(clients[-1], result_ttl_s=600)

    yield open_
    for client in clients:
        client.close()


@pytest.fixture
def pool(start_pool, open_store, redis_server_instance):
    redis_url = redis_server_instance.url(2)
    flush_redis(redis_url)
    return (*start_pool(), open_store(redis_url))


def test_pool_announces_its_tasks_and_capacity(pool):
    _, _, _, announcement, store = pool

    assert announcement["capacity"] == 2
    assert announcement["free"] == 2
    assert {"echo", "sleep", "tests.record"} <= set(announcement["tasks"])
    assert wait_for(lambda: "tests.record" in store.read_task_types())


def test_a_broker_that_does_not_know_the_pool_gets_a_plainly_logged_announcement(
    pool,
):
    process, broker, identity, _, _ = pool
    disconnect = protocol.encode(Message(Header(Command.DISCONNECT)))

    broker.socket.send_multipart([identity, *disconnect])

    broker.receive(Command.READY)
    log = wait_for(lambda: "announcing again" in process.log() and process.log())
    assert "does not know us" not in log
    assert "no record of this pool yet (normal when it started or restarted" in log


def test_pool_runs_a_task_writes_redis_then_replies_with_the_record(pool):
    _, broker, identity, _, store = pool
    store.create("t1", "echo", b'{"a": 1}')

    broker.submit(identity, "t1", "echo", b'{"a": 1}', request_id="42")
    _, reply = broker.receive(Command.REPLY)

    assert reply.header.task_id == "t1"
    assert reply.header.request_id == "42"
    assert reply.header.detail == "succeeded"
    assert reply.reply_to == b"web-1"
    record = orjson.loads(reply.payload)
    assert record["result"] == {"a": 1}
    assert store.get("t1")[b"status"] == b"succeeded"


def test_pool_skips_a_task_that_does_not_wait_for_this_attempt(pool):
    _, broker, identity, _, store = pool
    store.create("t1", "echo", b"{}")

    broker.submit(identity, "t1", "echo", b"{}", attempt=2)
    _, reply = broker.receive(Command.REPLY)

    assert reply.header.detail == "skipped"
    assert reply.header.request_id == ""
    assert store.get("t1")[b"status"] == b"queued"


def test_heartbeats_flow_while_children_compute(pool):
    _, broker, identity, _, store = pool
    for task_id in ("h1", "h2"):
        store.create(task_id, "hash", b'{"megabytes": 1024}')
        broker.submit(identity, task_id, "hash", b'{"megabytes": 1024}')

    def finished():
        return all(store.get(t)[b"status"] == b"succeeded" for t in ("h1", "h2"))

    # Both children hash a GiB; the parent must never fall silent for two
    # heartbeat intervals (0.25 s each in the test settings) meanwhile.
    beats = 0
    deadline = time.monotonic() + 60
    while not finished():
        assert time.monotonic() < deadline
        sender, _ = broker.receive(Command.HEARTBEAT, timeout_s=0.5)
        assert sender == identity
        beats += 1
    assert beats >= 2


def test_a_killed_child_fails_its_task_and_is_replaced(pool, tmp_path):
    _, broker, identity, _, store = pool
    pid_file = tmp_path / "pid"
    payload = orjson.dumps({"path": str(pid_file), "seconds": 30})
    store.create("doomed", "tests.pid_then_sleep", payload)
    broker.submit(identity, "doomed", "tests.pid_then_sleep", payload)

    child_pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text()))
    os.kill(child_pid, signal.SIGKILL)
    _, reply = broker.receive(Command.REPLY)

    assert reply.header.detail == "failed"
    error = orjson.loads(reply.payload)["error"]
    assert error["type"] == "WorkerLost"
    assert "-9" in error["message"]

    for number in range(3):
        task_id = f"after{number}"
        store.create(task_id, "echo", b'{"n": 1}')
        broker.submit(identity, task_id, "echo", b'{"n": 1}')
        assert broker.receive(Command.REPLY)[1].header.detail == "succeeded"


def test_sigterm_leaves_the_broker_and_exits_cleanly(pool):
    process, broker, _, _, _ = pool

    process.signal(signal.SIGTERM)

    broker.receive(Command.DISCONNECT)
    assert process.process.wait(15) == 0


def run_pid_task(
    broker,
    identity,
    store,
    tmp_path,
    task_id,
    seconds,
    name="tests.pid_then_sleep",
    max_attempts=1,
    time_limit_s=0.0,
):
    """Submit a task that writes its pid, and return that pid once it runs."""
    pid_file = tmp_path / f"{task_id}.pid"
    payload = orjson.dumps({"path": str(pid_file), "seconds": seconds})
    store.create(task_id, name, payload, max_attempts=max_attempts)
    header = Header(Command.SUBMIT, task_id, name, 1, "r1", time_limit_s=time_limit_s)
    broker.socket.send_multipart(
        [identity, *protocol.encode(Message(header, b"web-1", payload))]
    )
    return int(wait_for(lambda: pid_file.exists() and pid_file.read_text()))


def test_a_killed_child_with_attempts_left_hands_its_task_back(pool, tmp_path):
    _, broker, identity, _, store = pool
    child_pid = run_pid_task(
        broker, identity, store, tmp_path, "again", 30, max_attempts=3
    )

    os.kill(child_pid, signal.SIGKILL)
    _, reply = broker.receive(Command.REPLY)

    assert reply.header.detail == "requeued"
    assert reply.header.attempt == 2  # the attempt the broker must send next
    assert reply.header.request_id == ""  # nothing for the web process yet
    fields = store.get("again")
    assert (fields[b"status"], fields[b"attempts"]) == (b"queued", b"1")


def test_a_task_past_its_time_limit_is_killed_and_fails(pool, tmp_path):
    _, broker, identity, _, store = pool
    started = time.monotonic()
    child_pid = run_pid_task(
        broker, identity, store, tmp_path, "slow", 30, time_limit_s=1
    )

    _, reply = broker.receive(Command.REPLY)

    assert 0.9 < time.monotonic() - started < 5
    assert reply.header.detail == "failed"
    assert orjson.loads(reply.payload)["error"]["type"] == "TimeLimitExceeded"
    assert wait_for(lambda: not os.path.exists(f"/proc/{child_pid}"), timeout_s=5)


def test_cancelling_a_running_task_stops_it_and_reports_cancelled(pool, tmp_path):
    _, broker, identity, _, store = pool
    child_pid = run_pid_task(broker, identity, store, tmp_path, "doomed", 30)

    assert store.cancel("doomed").owner == identity.decode()
    broker.socket.send_multipart(
        [identity, *protocol.encode(Message(Header(Command.CANCEL, "doomed")))]
    )
    _, reply = broker.receive(Command.REPLY, timeout_s=5)

    assert reply.header.detail == "cancelled"
    assert reply.header.request_id == "r1"
    assert orjson.loads(reply.payload)["status"] == "cancelled"
    # The child stopped the task on its own and lives on for the next one.
    assert os.path.exists(f"/proc/{child_pid}")


def test_a_task_that_ignores_cancellation_is_killed_after_the_grace(pool, tmp_path):
    _, broker, identity, _, store = pool
    child_pid = run_pid_task(
        broker, identity, store, tmp_path, "stubborn", 30, name="tests.stubborn"
    )

    store.cancel("stubborn")
    broker.socket.send_multipart(
        [identity, *protocol.encode(Message(Header(Command.CANCEL, "stubborn")))]
    )
    _, reply = broker.receive(Command.REPLY, timeout_s=5)

    assert reply.header.detail == "cancelled"
    assert wait_for(lambda: not os.path.exists(f"/proc/{child_pid}"), timeout_s=5)


def test_shutdown_finishes_short_tasks_and_hands_back_long_ones(
    start_pool, open_store, tmp_path, redis_server_instance
):
    redis_url = redis_server_instance.url(3)
    flush_redis(redis_url)
    store = open_store(redis_url)
    process, broker, identity, _ = start_pool(
        redis_url, TASKGATE_SHUTDOWN_GRACE_S="1.5"
    )
    run_pid_task(broker, identity, store, tmp_path, "short", 0.7, max_attempts=3)
    run_pid_task(broker, identity, store, tmp_path, "long", 30, max_attempts=3)

    # Like honcho or a Procfile platform: TERM to every process of the group.
    process.signal(signal.SIGTERM)
    replies = {}
    while len(replies) < 2:
        _, reply = broker.receive(Command.REPLY, timeout_s=10)
        replies[reply.header.task_id] = reply
    broker.receive(Command.DISCONNECT)

    assert replies["short"].header.detail == "succeeded"
    assert replies["long"].header.detail == "requeued"
    assert store.get("short")[b"status"] == b"succeeded"
    assert store.get("long")[b"status"] == b"queued"
    assert process.process.wait(10) == 0


def test_results_wait_in_the_buffer_while_redis_stalls(
    start_pool, open_store, tmp_path
):
    from tools import redis_server

    port = redis_server.free_port()
    private = redis_server.start(port, tmp_path / "redis")
    try:
        redis_url = f"redis://127.0.0.1:{port}/0"
        store = open_store(redis_url)
        _, broker, identity, _ = start_pool(redis_url, TASKGATE_REDIS_TIMEOUT_S="0.3")
        run_pid_task(broker, identity, store, tmp_path, "buffered", 1)

        private.send_signal(signal.SIGSTOP)  # Redis hangs: every call times out
        time.sleep(2)
        private.send_signal(signal.SIGCONT)
        _, reply = broker.receive(Command.REPLY, timeout_s=10)

        assert reply.header.detail == "succeeded"
        assert store.get("buffered")[b"status"] == b"succeeded"
    finally:
        private.send_signal(signal.SIGCONT)
        private.terminate()
        private.wait(10)


def test_children_exit_when_the_pool_parent_is_killed(pool, tmp_path):
    process, broker, identity, _, store = pool
    child_pid = run_pid_task(broker, identity, store, tmp_path, "orphan", 60)

    os.kill(process.pid, signal.SIGKILL)

    assert wait_for(lambda: not os.path.exists(f"/proc/{child_pid}"), timeout_s=5)


@pytest.fixture
def green_pool(start_pool, open_store, redis_server_instance):
    redis_url = redis_server_instance.url(3)
    flush_redis(redis_url)
    store = open_store(redis_url)
    started = start_pool(
        redis_url,
        # A grace long enough that the parent's backstop never fires here: this
        # test is about the child stopping one greenlet by itself.
        TASKGATE_CANCEL_GRACE_S="5",
        TASKGATE_WORKER_MODE="gevent",
        TASKGATE_WORKER_PROCESSES="1",
        TASKGATE_WORKER_CONCURRENCY="50",
    )
    return (*started, store)


def test_gevent_mode_runs_many_waiting_tasks_at_once_in_one_process(green_pool):
    _, broker, identity, announcement, store = green_pool
    assert announcement["capacity"] == 50
    started = time.monotonic()
    for number in range(50):
        store.create(f"s{number}", "sleep", b'{"seconds": 1}')
        broker.submit(identity, f"s{number}", "sleep", b'{"seconds": 1}')

    replies = [broker.receive(Command.REPLY, timeout_s=10)[1] for _ in range(50)]

    assert {r.header.detail for r in replies} == {"succeeded"}
    assert {r.header.task_id for r in replies} == {f"s{n}" for n in range(50)}
    assert time.monotonic() - started < 5  # one after another would take 50 s


def test_gevent_mode_cancels_and_limits_one_task_without_harming_the_others(
    green_pool, tmp_path
):
    _, broker, identity, _, store = green_pool
    for task_id in ("keep", "cancel-me"):
        store.create(task_id, "sleep", b'{"seconds": 1.5}')
        broker.submit(identity, task_id, "sleep", b'{"seconds": 1.5}')
    store.create("too-long", "sleep", b'{"seconds": 30}')
    header = Header(Command.SUBMIT, "too-long", "sleep", 1, "r1", time_limit_s=0.5)
    broker.socket.send_multipart(
        [identity, *protocol.encode(Message(header, b"web-1", b'{"seconds": 30}'))]
    )
    wait_for(lambda: store.get("cancel-me")[b"status"] == b"running")

    store.cancel("cancel-me")
    broker.socket.send_multipart(
        [identity, *protocol.encode(Message(Header(Command.CANCEL, "cancel-me")))]
    )
    replies = {}
    while len(replies) < 3:
        _, reply = broker.receive(Command.REPLY, timeout_s=10)
        replies[reply.header.task_id] = reply

    assert replies["cancel-me"].header.detail == "cancelled"
    assert replies["too-long"].header.detail == "failed"
    assert (
        orjson.loads(replies["too-long"].payload)["error"]["type"]
        == "TimeLimitExceeded"
    )
    assert replies["keep"].header.detail == "succeeded"
