"""CURVE on loopback: the key command, the broker's door, and a whole stack with keys."""

import contextlib
import logging
import shutil
import socket
import time

import gevent
import pytest
import requests
import zmq
import zmq.auth
import zmq.green

from app.dispatch import Dispatcher
from tests.helpers import wait_for
from worker import curve, keys, protocol
from worker.broker import Broker
from worker.curve import ClientKeys, CurveConfigError
from worker.protocol import Command, Header, Message


@pytest.fixture
def key_dir(tmp_path):
    """Key pairs for the broker, a listed web, a listed worker and a stranger."""
    made = tmp_path / "keys"
    assert keys.main([str(made), "broker", "web", "worker", "stranger"]) == 0
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    for name in ("web", "worker"):
        shutil.copy(made / f"{name}.key", authorized / f"{name}.key")
    return made


@pytest.fixture
def curve_settings(settings, key_dir):
    return settings.model_copy(
        update={
            "curve_broker_key": str(key_dir / "broker.key_secret"),
            "curve_authorized_dir": str(key_dir.parent / "authorized"),
        }
    )


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def curve_broker(curve_settings, store, context):
    instance = Broker(curve_settings, store, context)
    yield instance
    instance.close()


def client_of(key_dir, name):
    server_public, _ = zmq.auth.load_certificate(key_dir / "broker.key")
    public, secret = zmq.auth.load_certificate(key_dir / f"{name}.key_secret")
    return ClientKeys(server_public, public, secret)


@pytest.fixture
def dealer(context):
    """Make DEALER clients of the broker; all are closed after the test."""
    made = []

    def make(address, keys_or_none, identity):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, identity)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        curve.secure_client(sock, keys_or_none)
        sock.connect(address)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        sock.close(linger=0)


def ping(sock, broker, timeout_s=2.0):
    """Ping through ``sock``; True if the pong came back within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    sent = False
    while time.monotonic() < deadline:
        if not sent:
            try:
                sock.send_multipart(
                    protocol.encode(Message(Header(Command.PING, request_id="p"))),
                    flags=zmq.NOBLOCK,
                )
                sent = True
            except zmq.Again:
                pass  # no completed (accepted) connection to queue it on
        broker.poll_once(10)
        if sock.poll(0):
            answer = protocol.decode(sock.recv_multipart())
            return answer.header.command is Command.PONG
    return False


def refusals(caplog, text):
    return [r for r in caplog.records if text in r.getMessage()]


def test_keys_command_writes_a_loadable_pair_and_never_overwrites(tmp_path, capsys):
    assert keys.main([str(tmp_path), "host-1"]) == 0
    public, secret = zmq.auth.load_certificate(tmp_path / "host-1.key_secret")
    only_public, none = zmq.auth.load_certificate(tmp_path / "host-1.key")

    assert len(public) == 40 and len(secret) == 40
    assert only_public == public and none is None
    assert (tmp_path / "host-1.key_secret").stat().st_mode & 0o077 == 0
    with pytest.raises(SystemExit, match="exists already"):
        keys.main([str(tmp_path), "host-1"])


def test_curve_settings_name_the_missing_piece(curve_settings, key_dir):
    with pytest.raises(CurveConfigError, match="TASKGATE_CURVE_KEY is empty"):
        curve.client_keys(curve_settings)
    public_only = curve_settings.model_copy(
        update={"curve_broker_key": str(key_dir / "broker.key")}
    )
    with pytest.raises(CurveConfigError, match="holds no secret key"):
        curve.server_keys(public_only)
    no_dir = curve_settings.model_copy(update={"curve_authorized_dir": ""})
    with pytest.raises(CurveConfigError, match="AUTHORIZED_DIR"):
        curve.server_keys(no_dir)


def test_broker_accepts_listed_keys_on_both_sockets(curve_broker, dealer, key_dir):
    web = dealer(curve_broker.frontend_address, client_of(key_dir, "web"), b"web-1")
    worker = dealer(
        curve_broker.backend_address, client_of(key_dir, "worker"), b"pool-1"
    )
    announcement = b'{"capacity": 1, "free": 1, "tasks": ["echo"]}'
    worker.send_multipart(
        protocol.encode(Message(Header(Command.READY), payload=announcement))
    )

    assert ping(web, curve_broker)
    wait_for(
        lambda: curve_broker.poll_once(10) or curve_broker.stats().live_pools == 1,
        timeout_s=2,
        what="the worker to register",
    )


def test_broker_refuses_unlisted_and_plain_peers_logging_each_once(
    curve_broker, dealer, key_dir, caplog
):
    caplog.set_level(logging.WARNING)
    address = curve_broker.frontend_address
    stranger = dealer(address, client_of(key_dir, "stranger"), b"stranger")
    plain = dealer(address, None, b"plain")
    listed = dealer(address, client_of(key_dir, "web"), b"web-1")

    # ZeroMQ does not retry a refused handshake: each refused peer makes one
    # attempt, and the listed one is served all along.
    for _ in range(5):
        assert ping(listed, curve_broker)
    assert not ping(stranger, curve_broker, timeout_s=0.5)
    assert not ping(plain, curve_broker, timeout_s=0.5)

    stranger_key = zmq.auth.load_certificate(key_dir / "stranger.key")[0].decode()
    unlisted = refusals(caplog, "key is not authorized")
    assert len(unlisted) == 1
    assert stranger_key in unlisted[0].getMessage()
    assert "127.0.0.1" in unlisted[0].getMessage()
    wait_for(lambda: refusals(caplog, "handshake failed"), what="the plain refusal")
    assert len(refusals(caplog, "handshake failed")) == 1


# A ZMTP 3.0 greeting offering the NULL (plain-text) mechanism, as a ZeroMQ
# socket without CURVE sends it: signature, version, mechanism, as-server, filler.
PLAIN_GREETING = (
    b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + bytes(32)
)


def slow_plain_attempt(address, source, delay_s=0.1):
    """A plain-text peer from ``source`` that greets ``delay_s`` after connecting.

    The pause makes sure the broker read the peer's address before refusing it
    (a ZeroMQ socket is refused within a millisecond; see worker.handshakes).
    """
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), 2, (source, 0)) as peer:
        time.sleep(delay_s)
        peer.sendall(PLAIN_GREETING)
        peer.settimeout(2)
        with contextlib.suppress(OSError):
            while peer.recv(4096):
                pass  # until the broker closes the connection


def dealer_attempt(context, address, source):
    """One plain-text ZeroMQ DEALER connection from ``source``, then closed.

    ZeroMQ gives up on a connection whose handshake the broker refused, so a
    client "reconnecting" is a new socket, as a restarted process would make.
    """
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address.replace("tcp://", f"tcp://{source}:0;"))
    time.sleep(0.02)
    sock.close(linger=0)


def naming(caplog, source):
    text = f"(not CURVE, or the wrong broker key) address={source} "
    return refusals(caplog, text)


def test_plain_peers_are_logged_once_per_ip_while_a_listed_client_is_served(
    curve_broker, dealer, key_dir, caplog
):
    caplog.set_level(logging.WARNING)
    address = curve_broker.frontend_address
    listed = dealer(address, client_of(key_dir, "web"), b"web-1")
    sources = ("127.0.0.2", "127.0.0.3")

    for _ in range(4):  # each peer reconnects, from a new port each time
        for source in sources:
            slow_plain_attempt(address, source)
            assert ping(listed, curve_broker)
    time.sleep(0.3)

    for source in sources:
        lines = naming(caplog, source)
        assert len(lines) == 1, caplog.text
        assert f"socket={address}" in lines[0].getMessage()
        assert "HANDSHAKE_FAILED_PROTOCOL" in lines[0].getMessage()
    assert not naming(caplog, "127.0.0.1")


def test_fast_plain_zeromq_peers_are_never_logged_twice_nor_misnamed(
    curve_broker, dealer, key_dir, context, caplog
):
    caplog.set_level(logging.WARNING)
    address = curve_broker.frontend_address
    listed = dealer(address, client_of(key_dir, "web"), b"web-1")
    sources = ("127.0.0.4", "127.0.0.5")

    for _ in range(10):
        for source in sources:
            dealer_attempt(context, address, source)
            assert ping(listed, curve_broker)
    time.sleep(0.3)

    # Whether an attempt is named depends on a race (see worker.handshakes);
    # what must hold: a peer is named at most once, only by its own address,
    # and the others are counted as one line naming none.
    for source in sources:
        assert len(naming(caplog, source)) <= 1, caplog.text
    lines = refusals(caplog, "handshake failed")
    named = [line for line in lines if "address=unknown" not in line.getMessage()]
    assert all(
        any(f"address={source} " in line.getMessage() for source in sources)
        for line in named
    ), caplog.text
    assert len(lines) - len(named) <= 1
    assert lines, "no refusal logged"


def test_a_closed_broker_drops_its_clients_connections(
    curve_settings, store, context, dealer, key_dir
):
    broker = Broker(curve_settings, store, context)
    listed = dealer(broker.frontend_address, client_of(key_dir, "web"), b"web-1")
    monitor = listed.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    assert ping(listed, broker)

    # A standby that steps down must not leave its clients' connections open
    # (the monitor of refused peers must not hold the sockets' closing up).
    broker.close()

    assert monitor.poll(3000), "the client's connection is still open"
    listed.disable_monitor()
    monitor.close(linger=0)


def test_a_key_listed_after_start_is_accepted_without_broker_restart(
    curve_broker, dealer, key_dir
):
    address = curve_broker.frontend_address
    stranger_keys = client_of(key_dir, "stranger")
    refused = dealer(address, stranger_keys, b"early")
    assert not ping(refused, curve_broker, timeout_s=0.3)

    shutil.copy(key_dir / "stranger.key", key_dir.parent / "authorized")
    # ZeroMQ does not retry a handshake the server refused: the client connects
    # anew (a restarted process). The directory is read again at most once a
    # second, when an unknown key shows up.
    time.sleep(1.0)
    listed = dealer(address, stranger_keys, b"late")

    assert ping(listed, curve_broker)


@pytest.mark.slow
def test_whole_stack_runs_tasks_with_curve_on(
    redis_server_instance, make_stack, key_dir
):
    authorized = key_dir.parent / "authorized"
    stack = make_stack(
        redis_server_instance.url(3),
        TASKGATE_CURVE_BROKER_KEY=str(key_dir / "broker.key_secret"),
        TASKGATE_CURVE_AUTHORIZED_DIR=str(authorized),
    )
    # The broker reads its secret certificate; the clients the public one.
    stack.start_broker()
    stack.env["TASKGATE_CURVE_BROKER_KEY"] = str(key_dir / "broker.key")
    stack.env["TASKGATE_CURVE_KEY"] = str(key_dir / "worker.key_secret")
    stack.start_pool()
    stack.env["TASKGATE_CURVE_KEY"] = str(key_dir / "web.key_secret")
    try:
        stack.start_web()
        wait_for(
            lambda: "echo" in stack.store.read_task_types(),
            timeout_s=30,
            what="workers to announce their tasks",
        )
        answer = requests.post(
            stack.url("/v1/tasks/echo"), json={"marker": "curve"}, timeout=30
        )

        assert answer.status_code == 200, stack.logs()
        assert answer.json()["status"] == "succeeded"
        assert answer.json()["result"] == {"marker": "curve"}
    finally:
        stack.stop_all()


def test_web_dispatcher_with_an_unlisted_key_says_it_was_refused(
    curve_broker, key_dir, caplog
):
    green = zmq.green.Context()
    dispatcher = Dispatcher(
        curve_broker.frontend_address, 0.5, green, client_of(key_dir, "stranger")
    )
    try:
        deadline = time.monotonic() + 5
        while "refused this web process" not in caplog.text:
            assert time.monotonic() < deadline, "no refusal logged"
            gevent.sleep(0.02)

        assert not dispatcher.ping(0.3)
    finally:
        dispatcher.close()
        green.term()
    assert caplog.text.count("refused this web process's CURVE handshake") == 1
