"""The web side's ZeroMQ client under gevent, against a scripted green broker."""

import random
import time

import gevent
import pytest
import zmq.green as zmq

from app.dispatch import Dispatcher
from tools.redis_server import free_port
from worker import protocol
from worker.errors import BrokerUnavailableError, QueueFullError
from worker.protocol import Command, Header, Message


class ScriptedBroker:
    """A ROUTER that answers submits as the test says, in the order it says."""

    def __init__(self, context, answer):
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(self.address)
        self.received = []
        self._answer = answer
        self._loop = gevent.spawn(self._serve)

    def _serve(self):
        while True:
            identity, *frames = self.socket.recv_multipart()
            message = protocol.decode(frames)
            self.received.append(message)
            self._answer(self, identity, message)

    def send(self, identity, header, payload=b""):
        self.socket.send_multipart(
            [identity, *protocol.encode(Message(header, payload=payload))]
        )

    def close(self):
        self._loop.kill()
        self.socket.close(linger=0)


def accept(broker, identity, message):
    h = message.header
    broker.send(identity, Header(Command.ACCEPTED, h.task_id, h.name, 1, h.request_id))


def refuse(broker, identity, message):
    h = message.header
    broker.send(
        identity,
        Header(Command.REJECTED, h.task_id, h.name, 1, h.request_id, "queue_full"),
    )


def reply_of(message):
    h = message.header
    header = Header(Command.REPLY, h.task_id, h.name, 1, h.request_id, "succeeded")
    return header, b'{"id": "' + h.task_id.encode() + b'"}'


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.term()


@pytest.fixture
def scripted(context):
    made = []

    def make(answer):
        made.append(ScriptedBroker(context, answer))
        return made[-1]

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def dispatcher_for(context):
    made = []

    def make(address, accept_timeout_s=2.0):
        made.append(Dispatcher(address, accept_timeout_s, context))
        return made[-1]

    yield make
    for dispatcher in made:
        dispatcher.close()


def test_concurrent_requests_each_get_their_own_reply(scripted, dispatcher_for):
    held = []

    def hold_then_answer_shuffled(broker, identity, message):
        accept(broker, identity, message)
        held.append((identity, message))
        if len(held) == 200:
            random.shuffle(held)
            for who, msg in held:
                broker.send(who, *reply_of(msg))

    broker = scripted(hold_then_answer_shuffled)
    dispatcher = dispatcher_for(broker.address)

    def call(number):
        task_id = f"task-{number}"
        ticket = dispatcher.submit(task_id, "echo", b"{}")
        try:
            return task_id, dispatcher.wait_reply(ticket, 10).payload
        finally:
            dispatcher.release(ticket)

    calls = [gevent.spawn(call, number) for number in range(200)]
    gevent.joinall(calls, timeout=20, raise_error=True)

    results = [c.value for c in calls]
    assert len(results) == 200
    for task_id, payload in results:
        assert payload == b'{"id": "' + task_id.encode() + b'"}'
    assert dispatcher.waiting == 0


def test_a_late_reply_is_dropped_without_harm(scripted, dispatcher_for):
    pending = {}

    def answer_later(broker, identity, message):
        accept(broker, identity, message)
        pending[message.header.task_id] = (identity, message)

    broker = scripted(answer_later)
    dispatcher = dispatcher_for(broker.address)

    impatient = dispatcher.submit("slow", "echo", b"{}")
    assert dispatcher.wait_reply(impatient, 0.05) is None
    dispatcher.release(impatient)

    patient = dispatcher.submit("fast", "echo", b"{}")
    for task_id in ("slow", "fast"):
        identity, message = pending[task_id]
        broker.send(identity, *reply_of(message))

    assert dispatcher.wait_reply(patient, 5).payload == b'{"id": "fast"}'
    dispatcher.release(patient)
    assert not impatient.reply.ready()


def test_an_absent_broker_is_unavailable_within_the_accept_timeout(dispatcher_for):
    dispatcher = dispatcher_for(f"tcp://127.0.0.1:{free_port()}", accept_timeout_s=0.3)

    with pytest.raises(BrokerUnavailableError, match="not connected"):
        dispatcher.submit("t1", "echo", b"{}")
    assert dispatcher.waiting == 0


def test_the_first_submit_waits_for_the_connection_to_come_up(scripted, dispatcher_for):
    broker = scripted(accept)
    dispatcher = dispatcher_for(broker.address)

    ticket = dispatcher.submit("t1", "echo", b"{}")

    assert ticket.accepted.ready()
    dispatcher.release(ticket)


def test_a_silent_broker_is_unavailable_after_the_accept_timeout(
    scripted, dispatcher_for
):
    broker = scripted(lambda broker, identity, message: None)
    dispatcher = dispatcher_for(broker.address, accept_timeout_s=0.2)

    with pytest.raises(BrokerUnavailableError, match="in time"):
        dispatcher.submit("t1", "echo", b"{}")
    assert [m.header.task_id for m in broker.received] == ["t1"]


def test_a_refusing_broker_means_queue_full(scripted, dispatcher_for):
    broker = scripted(refuse)
    dispatcher = dispatcher_for(broker.address)

    with pytest.raises(QueueFullError, match="queue_full"):
        dispatcher.submit("t1", "echo", b"{}")


def test_submit_sends_the_payload_untouched_with_attempt_one(scripted, dispatcher_for):
    broker = scripted(accept)
    dispatcher = dispatcher_for(broker.address)

    ticket = dispatcher.submit("t1", "resize", b'{"w":  1}')
    dispatcher.release(ticket)

    sent = broker.received[0]
    assert sent.header.command is Command.SUBMIT
    assert (sent.header.name, sent.header.attempt) == ("resize", 1)
    assert sent.header.request_id == ticket.request_id
    assert sent.payload == b'{"w":  1}'


def test_a_waiting_submit_returns_with_the_reply_in_one_wake(scripted, dispatcher_for):
    def accept_and_reply(broker, identity, message):
        accept(broker, identity, message)
        broker.send(identity, *reply_of(message))

    broker = scripted(accept_and_reply)
    dispatcher = dispatcher_for(broker.address)

    started = time.monotonic()
    ticket = dispatcher.submit("t1", "echo", b"{}", reply_by=started + 5)
    took_s = time.monotonic() - started

    assert ticket.reply.ready()
    assert dispatcher.wait_reply(ticket, 0).payload == b'{"id": "t1"}'
    assert ticket.acknowledged is not None  # noted, without waking the request
    assert took_s < 2
    dispatcher.release(ticket)


def test_a_waiting_submit_without_reply_returns_accepted_at_its_reply_by(
    scripted, dispatcher_for
):
    broker = scripted(accept)
    dispatcher = dispatcher_for(broker.address, accept_timeout_s=5)

    started = time.monotonic()
    ticket = dispatcher.submit("t1", "echo", b"{}", reply_by=started + 0.3)
    took_s = time.monotonic() - started

    assert not ticket.reply.ready()
    assert ticket.answer().header.command is Command.ACCEPTED
    assert 0.25 <= took_s < 2  # slept to reply_by, not to the accept timeout
    dispatcher.release(ticket)


def test_a_waiting_submit_wakes_at_once_for_a_rejection(scripted, dispatcher_for):
    broker = scripted(refuse)
    dispatcher = dispatcher_for(broker.address, accept_timeout_s=5)

    started = time.monotonic()
    with pytest.raises(QueueFullError):
        dispatcher.submit("t1", "echo", b"{}", reply_by=started + 5)
    assert time.monotonic() - started < 2


def test_a_late_acceptance_after_reply_by_still_counts(scripted, dispatcher_for):
    def accept_late(broker, identity, message):
        gevent.spawn_later(0.3, accept, broker, identity, message)

    broker = scripted(accept_late)
    dispatcher = dispatcher_for(broker.address, accept_timeout_s=5)

    started = time.monotonic()
    ticket = dispatcher.submit("t1", "echo", b"{}", reply_by=started + 0.05)

    assert ticket.accepted.ready()  # it woke for the acceptance once past reply_by
    assert time.monotonic() - started < 2
    dispatcher.release(ticket)


def test_the_acceptance_tells_how_many_tasks_wait_before(scripted, dispatcher_for):
    def accept_behind_three(broker, identity, message):
        h = message.header
        broker.send(
            identity, Header(Command.ACCEPTED, h.task_id, h.name, 1, h.request_id, "3")
        )

    broker = scripted(accept_behind_three)
    dispatcher = dispatcher_for(broker.address)

    ticket = dispatcher.submit("t1", "echo", b"{}")
    assert ticket.ahead == 3
    dispatcher.release(ticket)
