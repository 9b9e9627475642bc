"""The broker in-process, driven turn by turn, with real ZeroMQ peers on loopback."""

import time

import orjson
import pytest
import zmq

from worker import protocol
from worker.broker import Broker
from worker.protocol import Command, Header, Message


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def peer(context):
    """Make DEALER peers; all are closed after the test."""
    made = []

    def make(address, identity):
        made.append(Peer(context, address, identity))
        return made[-1]

    yield make
    for one in made:
        one.socket.close(linger=0)


@pytest.fixture
def fast_settings(settings):
    """Recovery scans often and takes queued records at any age."""
    return settings.model_copy(
        update={"recovery_interval_s": 0.05, "recovery_min_age_s": 0}
    )


@pytest.fixture
def broker(fast_settings, store, context):
    instance = Broker(fast_settings, store, context)
    yield instance
    instance.close()


class Peer:
    """A DEALER standing in for a web process or a worker pool."""

    def __init__(self, context, address, identity):
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IDENTITY, identity)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(address)

    def send(self, header, payload=b"", reply_to=b""):
        self.socket.send_multipart(protocol.encode(Message(header, reply_to, payload)))

    def receive(self, broker, timeout_s=2.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            broker.poll_once(10)
            if self.socket.poll(0):
                return protocol.decode(self.socket.recv_multipart())
        raise AssertionError("no message arrived")

    def silent(self, broker, for_s=0.2):
        deadline = time.monotonic() + for_s
        while time.monotonic() < deadline:
            broker.poll_once(10)
            assert not self.socket.poll(0), protocol.decode(
                self.socket.recv_multipart()
            )
        return True


def ready(peer, broker, tasks=("echo",), capacity=1, running=(), draining=False):
    announcement = {
        "capacity": capacity,
        "free": capacity - len(running),
        "tasks": list(tasks),
        "running": [list(r) for r in running],
        "draining": draining,
    }
    peer.send(Header(Command.READY), orjson.dumps(announcement))
    pump(broker)


def pump(broker, turns=20):
    for _ in range(turns):
        broker.poll_once(5)


def submit(web, task_id, name="echo", request_id=None):
    web.send(
        Header(Command.SUBMIT, task_id, name, 1, request_id or task_id), b'{"n": 1}'
    )


def test_submit_is_accepted_and_handed_to_one_worker(broker, settings, peer):
    web = peer(settings.broker_frontend, b"web-1")
    first = peer(settings.broker_backend, b"w1")
    second = peer(settings.broker_backend, b"w2")
    ready(first, broker)
    ready(second, broker)

    submit(web, "t1")

    assert web.receive(broker).header.command is Command.ACCEPTED
    task = first.receive(broker)
    assert task.header.task_id == "t1"
    assert task.reply_to == b"web-1"
    assert task.payload == b'{"n": 1}'
    assert second.silent(broker)


def test_idle_workers_are_used_least_recently_used_first(broker, settings, peer):
    web = peer(settings.broker_frontend, b"web-1")
    workers = [peer(settings.broker_backend, f"w{i}".encode()) for i in range(3)]
    for worker in workers:
        ready(worker, broker)

    for number in range(3):
        submit(web, f"a{number}")
    got = [worker.receive(broker).header.task_id for worker in workers]
    assert got == ["a0", "a1", "a2"]

    # Free them in the order w2, w0, w1: that is the order they serve next.
    for index in (2, 0, 1):
        reply = Header(Command.REPLY, got[index], "echo", 1, "", "succeeded")
        workers[index].send(reply, reply_to=b"web-1")
        pump(broker)
    for number in range(3):
        submit(web, f"b{number}")
    pump(broker)
    assert workers[2].receive(broker).header.task_id == "b0"
    assert workers[0].receive(broker).header.task_id == "b1"
    assert workers[1].receive(broker).header.task_id == "b2"


def test_tasks_wait_for_a_worker_that_serves_their_name(broker, settings, peer):
    web = peer(settings.broker_frontend, b"web-1")
    other = peer(settings.broker_backend, b"other")
    ready(other, broker, tasks=("resize",))

    submit(web, "t1", name="echo")
    assert web.receive(broker).header.command is Command.ACCEPTED
    assert other.silent(broker)
    assert broker.waiting == 1

    echo_worker = peer(settings.broker_backend, b"echoer")
    ready(echo_worker, broker)
    assert echo_worker.receive(broker).header.task_id == "t1"
    assert broker.waiting == 0


def test_a_worker_gets_no_more_tasks_than_its_free_slots(broker, settings, peer):
    web = peer(settings.broker_frontend, b"web-1")
    worker = peer(settings.broker_backend, b"w1")
    ready(worker, broker, capacity=2)

    for number in range(3):
        submit(web, f"t{number}")
    pump(broker)

    assert worker.receive(broker).header.task_id == "t0"
    assert worker.receive(broker).header.task_id == "t1"
    assert worker.silent(broker)
    worker.send(
        Header(Command.REPLY, "t0", "echo", 1, "", "succeeded"), reply_to=b"web-1"
    )
    assert worker.receive(broker).header.task_id == "t2"


def test_a_full_queue_rejects_new_tasks(settings, store, context, peer):
    bounded = Broker(settings.model_copy(update={"queue_limit": 2}), store, context)
    try:
        web = peer(settings.broker_frontend, b"web-1")
        for number in range(3):
            submit(web, f"t{number}")
        answers = [web.receive(bounded).header for _ in range(3)]
    finally:
        bounded.close()

    assert [a.command for a in answers] == [
        Command.ACCEPTED,
        Command.ACCEPTED,
        Command.REJECTED,
    ]
    assert answers[2].detail == "queue_full"
    assert answers[2].request_id == "t2"
    # With no worker yet, each acceptance counts the tasks queued before it.
    assert [a.detail for a in answers[:2]] == ["0", "1"]


def test_replies_reach_only_the_web_process_that_asked(broker, settings, peer):
    web_a = peer(settings.broker_frontend, b"web-a")
    web_b = peer(settings.broker_frontend, b"web-b")
    worker = peer(settings.broker_backend, b"w1")
    ready(worker, broker, capacity=2)
    submit(web_a, "ta", request_id="7")
    submit(web_b, "tb", request_id="7")
    for web in (web_a, web_b):
        accepted = web.receive(broker).header
        assert accepted.command is Command.ACCEPTED
        assert accepted.detail == "0"  # went to the worker at once
    tasks = {
        m.header.task_id: m for m in (worker.receive(broker), worker.receive(broker))
    }

    header = tasks["tb"].header
    reply = Header(Command.REPLY, "tb", "echo", 1, header.request_id, "succeeded")
    worker.send(reply, payload=b'{"record": "b"}', reply_to=tasks["tb"].reply_to)

    answer = web_b.receive(broker)
    assert answer.header.command is Command.REPLY
    assert answer.header.task_id == "tb"
    assert answer.payload == b'{"record": "b"}'
    assert web_a.silent(broker)


def test_a_reply_without_request_id_frees_the_slot_but_is_not_forwarded(
    broker, settings, peer
):
    web = peer(settings.broker_frontend, b"web-1")
    worker = peer(settings.broker_backend, b"w1")
    ready(worker, broker)
    submit(web, "t1")
    submit(web, "t2")
    assert worker.receive(broker).header.task_id == "t1"

    worker.send(
        Header(Command.REPLY, "t1", "echo", 1, "", "skipped"), reply_to=b"web-1"
    )

    assert worker.receive(broker).header.task_id == "t2"
    assert web.receive(broker).header.command is Command.ACCEPTED
    assert web.receive(broker).header.command is Command.ACCEPTED
    assert web.silent(broker)


def test_an_unknown_worker_is_asked_to_announce_itself(broker, settings, peer):
    stranger = peer(settings.broker_backend, b"stranger")

    stranger.send(Header(Command.HEARTBEAT))

    assert stranger.receive(broker).header.command is Command.DISCONNECT


def test_a_silent_worker_is_forgotten_and_gets_no_tasks(broker, settings, peer):
    web = peer(settings.broker_frontend, b"web-1")
    worker = peer(settings.broker_backend, b"w1")
    ready(worker, broker)

    time.sleep(settings.worker_liveness_s + 0.1)
    pump(broker)
    submit(web, "t1")

    assert web.receive(broker).header.command is Command.ACCEPTED
    assert worker.silent(broker)
    assert broker.waiting == 1
    # Its next heartbeat is answered with a request to announce itself again.
    worker.send(Header(Command.HEARTBEAT))
    assert worker.receive(broker).header.command is Command.DISCONNECT


def test_a_heartbeating_worker_stays_known(broker, settings, peer):
    web = peer(settings.broker_frontend, b"web-1")
    worker = peer(settings.broker_backend, b"w1")
    ready(worker, broker)

    deadline = time.monotonic() + settings.worker_liveness_s * 2
    while time.monotonic() < deadline:
        worker.send(Header(Command.HEARTBEAT))
        pump(broker, turns=5)
        time.sleep(settings.heartbeat_interval_s / 2)
    submit(web, "t1")

    assert worker.receive(broker).header.task_id == "t1"


def test_a_task_for_a_vanished_worker_goes_to_the_next_one(broker, settings, peer):
    web = peer(settings.broker_frontend, b"web-1")
    gone = peer(settings.broker_backend, b"gone")
    ready(gone, broker)
    gone.socket.close(linger=0)
    pump(broker, turns=40)
    survivor = peer(settings.broker_backend, b"survivor")
    ready(survivor, broker)

    submit(web, "t1")

    assert survivor.receive(broker).header.task_id == "t1"


def test_a_leaving_worker_is_forgotten(broker, settings, peer):
    web = peer(settings.broker_frontend, b"web-1")
    worker = peer(settings.broker_backend, b"w1")
    ready(worker, broker)

    worker.send(Header(Command.DISCONNECT))
    pump(broker)
    submit(web, "t1")

    assert web.receive(broker).header.command is Command.ACCEPTED
    assert worker.silent(broker)


# Reliability: the broker and recovery against the real store -----------------


def wait_for_task(peer, broker, timeout_s=3.0):
    """The next submit a worker peer receives, skipping other commands."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        peer.send(Header(Command.HEARTBEAT))  # stay alive while waiting
        try:
            message = peer.receive(broker, timeout_s=0.1)
        except AssertionError:
            continue
        if message.header.command is Command.SUBMIT:
            return message
    raise AssertionError("no task arrived")


def start_running(store, task_id, owner, max_attempts=3):
    store.create(task_id, "echo", b'{"n": 1}', max_attempts=max_attempts)
    assert store.start(task_id, 1, owner)


def test_a_requeued_reply_queues_the_task_again_with_its_attempt(
    broker, settings, peer
):
    web = peer(settings.broker_frontend, b"web-1")
    worker = peer(settings.broker_backend, b"w1")
    ready(worker, broker)
    submit(web, "t1")
    first = wait_for_task(worker, broker)

    reply = Header(Command.REPLY, "t1", "echo", 2, "", "requeued")
    worker.send(reply, reply_to=first.reply_to)
    again = wait_for_task(worker, broker)

    assert again.header.task_id == "t1"
    assert again.header.attempt == 2
    assert again.payload == b'{"n": 1}'
    assert again.reply_to == b"web-1"


def test_a_forgotten_workers_running_task_goes_to_another_worker(
    broker, settings, store, peer
):
    web = peer(settings.broker_frontend, b"web-1")
    lost = peer(settings.broker_backend, b"lost")
    ready(lost, broker)
    store.create("t1", "echo", b'{"n": 1}', max_attempts=3)
    submit(web, "t1", request_id="r1")
    task = wait_for_task(lost, broker)
    assert store.start("t1", task.header.attempt, "lost")

    survivor = peer(settings.broker_backend, b"survivor")
    ready(survivor, broker)
    lost.send(Header(Command.DISCONNECT))
    again = wait_for_task(survivor, broker)

    assert (again.header.task_id, again.header.attempt) == ("t1", 2)
    assert again.header.request_id == "r1"
    assert store.get("t1")[b"status"] == b"queued"


def test_a_lost_last_attempt_fails_and_the_waiting_request_hears_it(
    broker, settings, store, peer
):
    web = peer(settings.broker_frontend, b"web-1")
    lost = peer(settings.broker_backend, b"lost")
    ready(lost, broker)
    store.create("t1", "echo", b'{"n": 1}', max_attempts=1)
    submit(web, "t1", request_id="r1")
    assert web.receive(broker).header.command is Command.ACCEPTED
    assert store.start("t1", wait_for_task(lost, broker).header.attempt, "lost")

    time.sleep(settings.worker_liveness_s + 0.1)  # the pool falls silent
    answer = web.receive(broker)

    assert answer.header.command is Command.REPLY
    assert answer.header.detail == "failed"
    assert orjson.loads(answer.payload)["error"]["type"] == "WorkerLost"


def test_recovery_dispatches_queued_records_the_broker_never_saw(
    broker, store, settings, peer
):
    store.create("orphan", "echo", b'{"from": "redis"}', time_limit_s=7)
    worker = peer(settings.broker_backend, b"w1")
    ready(worker, broker)

    task = wait_for_task(worker, broker, timeout_s=settings.worker_liveness_s + 2)

    assert task.header.task_id == "orphan"
    assert task.header.attempt == 1
    assert task.header.time_limit_s == 7
    assert task.payload == b'{"from": "redis"}'


def test_recovery_reclaims_running_records_of_owners_it_does_not_know(
    broker, store, settings, peer
):
    start_running(store, "stranded", owner="a-pool-that-died")
    worker = peer(settings.broker_backend, b"w1")
    ready(worker, broker)

    task = wait_for_task(worker, broker, timeout_s=settings.worker_liveness_s + 2)

    assert (task.header.task_id, task.header.attempt) == ("stranded", 2)
    assert store.start("stranded", 2, "w1")


def test_recovery_leaves_tasks_of_live_workers_alone(broker, store, settings, peer):
    worker = peer(settings.broker_backend, b"w1")
    start_running(store, "busy", owner="w1")
    ready(worker, broker, capacity=2, running=[("busy", "echo", 1)])

    deadline = time.monotonic() + settings.worker_liveness_s + 0.5
    while time.monotonic() < deadline:
        worker.send(Header(Command.HEARTBEAT))
        assert worker.silent(broker, for_s=0.1)
    assert store.get("busy")[b"status"] == b"running"


def test_a_restarted_broker_adopts_what_pools_say_they_run(
    fast_settings, store, context, peer
):
    # A fresh broker never saw the task, as after a restart.
    restarted = Broker(fast_settings, store, context)
    try:
        worker = peer(fast_settings.broker_backend, b"w1")
        start_running(store, "t1", owner="w1")
        ready(worker, restarted, capacity=1, running=[("t1", "echo", 1)])
        assert restarted.knows("t1")

        other = peer(fast_settings.broker_backend, b"w2")
        ready(other, restarted)
        worker.send(Header(Command.DISCONNECT))
        again = wait_for_task(other, restarted)
    finally:
        restarted.close()

    assert (again.header.task_id, again.header.attempt) == ("t1", 2)
    assert again.payload == b'{"n": 1}'  # read back from Redis


def test_a_draining_worker_gets_no_new_tasks(broker, settings, peer):
    web = peer(settings.broker_frontend, b"web-1")
    worker = peer(settings.broker_backend, b"w1")
    ready(worker, broker, capacity=2, draining=True)

    submit(web, "t1")

    assert worker.silent(broker)
    assert broker.waiting == 1


def test_cancel_drops_a_queued_task_and_forwards_a_running_one(broker, settings, peer):
    web = peer(settings.broker_frontend, b"web-1")
    worker = peer(settings.broker_backend, b"w1")
    ready(worker, broker)
    submit(web, "running")
    submit(web, "waiting")
    assert wait_for_task(worker, broker).header.task_id == "running"
    assert broker.waiting == 1

    web.send(Header(Command.CANCEL, "waiting"))
    web.send(Header(Command.CANCEL, "running", detail="w1"))

    assert worker.receive(broker).header == Header(Command.CANCEL, "running")
    assert broker.waiting == 0


def test_a_submit_for_a_task_recovery_queued_joins_it(broker, store, settings, peer):
    store.create("t1", "echo", b'{"n": 1}')
    pump(broker)
    time.sleep(settings.worker_liveness_s + 0.1)
    pump(broker)  # recovery queues it: no worker serves echo yet
    assert broker.knows("t1")
    web = peer(settings.broker_frontend, b"web-1")

    submit(web, "t1", request_id="r7")
    assert web.receive(broker).header.command is Command.ACCEPTED
    worker = peer(settings.broker_backend, b"w1")
    ready(worker, broker)

    task = wait_for_task(worker, broker)
    assert (task.header.task_id, task.header.request_id) == ("t1", "r7")
    assert task.reply_to == b"web-1"
    assert broker.waiting == 0


def test_task_and_reply_frames_pass_through_unchanged(broker, settings, peer):
    # The broker reads headers to route, but forwards the frames it received:
    # the worker gets the web's header bytes, the web the worker's.
    web = peer(settings.broker_frontend, b"web-1")
    worker = peer(settings.broker_backend, b"w1")
    ready(worker, broker)
    submit_frame = protocol.encode_header(
        Header(Command.SUBMIT, "t1", "echo", 1, "9", time_limit_s=2.5)
    )
    web.socket.send_multipart([submit_frame, b"", b'{"x":  1}'])
    assert web.receive(broker).header.command is Command.ACCEPTED

    worker_frames = worker.socket.recv_multipart()
    assert worker_frames == [submit_frame, b"web-1", b'{"x":  1}']

    reply_frame = protocol.encode_header(
        Header(Command.REPLY, "t1", "echo", 1, "9", "succeeded")
    )
    worker.socket.send_multipart([reply_frame, b"web-1", b'{"record": 1}'])
    deadline = time.monotonic() + 2
    while not web.socket.poll(0) and time.monotonic() < deadline:
        broker.poll_once(10)
    assert web.socket.recv_multipart() == [reply_frame, b"", b'{"record": 1}']
