"""The web side's client with two brokers listed: it reaches the listening one."""

import gevent
import pytest
import zmq.green as zmq

from app.dispatch import Dispatcher
from tests.test_dispatch import ScriptedBroker, accept
from tools.redis_server import free_port


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.term()


@pytest.fixture
def closing():
    made = []
    yield made.append
    for each in reversed(made):
        each.close()


def test_dispatcher_sends_only_to_the_broker_that_listens(context, closing):
    silent = f"tcp://127.0.0.1:{free_port()}"  # a standby: nothing listens
    active = ScriptedBroker(context, accept)
    closing(active)
    dispatcher = Dispatcher([silent, active.address], 2.0, context)
    closing(dispatcher)

    for index in range(5):
        ticket = dispatcher.submit(f"t{index}", "echo", b"{}")
        dispatcher.release(ticket)

    assert [m.header.task_id for m in active.received] == [f"t{i}" for i in range(5)]


def test_dispatcher_sends_a_submit_again_when_its_broker_went_silent(context, closing):
    dropped = []

    def drop_first_then_accept(broker, identity, message):
        if not dropped:
            dropped.append(message)  # as if the broker died with it
            return
        accept(broker, identity, message)

    broker = ScriptedBroker(context, drop_first_then_accept)
    closing(broker)
    standby = f"tcp://127.0.0.1:{free_port()}"
    dispatcher = Dispatcher([broker.address, standby], 3.0, context)
    closing(dispatcher)

    started = gevent.get_hub().loop.now()
    ticket = dispatcher.submit("t1", "echo", b"{}")
    waited_s = gevent.get_hub().loop.now() - started

    assert ticket.accepted.ready()
    assert [m.header.task_id for m in broker.received] == ["t1", "t1"]
    assert 0.9 <= waited_s < 2.0
