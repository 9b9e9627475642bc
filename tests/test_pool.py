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
from tests.helpers import ManagedProcess, python_args, wait_for
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
        raise AssertionError(f"no {command} within {timeout_s}s")

    def submit(self, identity, task_id, name, payload, request_id="r1", attempt=1):
        header = Header(Command.SUBMIT, task_id, name, attempt, request_id)
        frames = protocol.encode(Message(header, b"web-1", payload))
        self.socket.send_multipart([identity, *frames])

    def close(self):
        self.socket.close(linger=0)
        self.context.term()


@pytest.fixture
def pool(redis_server_instance, tmp_path):
    redis_url = redis_server_instance.url(2)
    redis.Redis.from_url(redis_url).flushdb()
    env = stack_env(redis_url, TASKGATE_WORKER_PROCESSES="2")
    broker = FakeBroker(env["TASKGATE_BROKER_BACKEND"])
    process = ManagedProcess("pool", python_args("-m", "worker"), env, tmp_path)
    store = TaskStore(redis.Redis.from_url(redis_url), result_ttl_s=600)
    identity, ready = broker.receive(Command.READY, timeout_s=30)
    yield process, broker, identity, orjson.loads(ready.payload), store
    process.stop()
    broker.close()


def test_pool_announces_its_tasks_and_capacity(pool):
    _, _, _, announcement, store = pool

    assert announcement["capacity"] == 2
    assert announcement["free"] == 2
    assert {"echo", "sleep", "tests.record"} <= set(announcement["tasks"])
    assert wait_for(lambda: "tests.record" in store.read_task_types())


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
