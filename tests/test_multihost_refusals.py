"""Misconfigured CURVE clients and brokers stop at once, loudly, on loopback."""

import shutil

import pytest

from tests.helpers import wait_for
from tools import redis_server
from worker import curve, keys
from worker.curve import CurveConfigError
from worker.pool import EXIT_REFUSED

pytestmark = pytest.mark.slow


@pytest.fixture
def key_dir(tmp_path):
    """Key pairs for the broker, a listed worker and a stranger nobody listed."""
    made = tmp_path / "keys"
    assert keys.main([str(made), "broker", "worker", "stranger"]) == 0
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    shutil.copy(made / "worker.key", authorized / "worker.key")
    return made


@pytest.fixture
def curve_stack(make_stack, redis_server_instance, key_dir):
    """A CURVE broker running; the test starts the pools it wants."""
    stack = make_stack(
        redis_server_instance.url(5),
        TASKGATE_CURVE_BROKER_KEY=str(key_dir / "broker.key_secret"),
        TASKGATE_CURVE_AUTHORIZED_DIR=str(key_dir.parent / "authorized"),
    )
    stack.store.client.flushdb()
    stack.start_broker()
    # Clients get the broker's public certificate, not its secret one.
    stack.env["TASKGATE_CURVE_BROKER_KEY"] = str(key_dir / "broker.key")
    del stack.env["TASKGATE_CURVE_AUTHORIZED_DIR"]
    yield stack
    stack.stop_all()


@pytest.mark.parametrize(
    ("key_name", "expected"),
    [
        ("stranger", "refused this worker pool's CURVE handshake"),
        (None, "refused this worker pool's plain-text handshake"),
    ],
    ids=["unlisted-key", "plain-text"],
)
def test_a_pool_the_broker_refuses_stops_and_leaves_no_live_record(
    curve_stack, key_dir, key_name, expected
):
    if key_name is None:
        del curve_stack.env["TASKGATE_CURVE_BROKER_KEY"]
    else:
        curve_stack.env["TASKGATE_CURVE_KEY"] = str(key_dir / f"{key_name}.key_secret")

    refused = curve_stack.start_pool()
    wait_for(lambda: not refused.alive(), timeout_s=30, what="the refused pool to stop")

    assert refused.process.returncode == EXIT_REFUSED, refused.log()
    assert refused.log().count(expected) == 1, refused.log()
    assert "the broker refused its handshake" in refused.log()
    # Its record is gone, so /v1/workers and the dashboard do not list it.
    assert curve_stack.store.client.zcard("taskgate:workers") == 0


def test_a_listed_pool_keeps_running_beside_a_refused_one(curve_stack, key_dir):
    curve_stack.env["TASKGATE_CURVE_KEY"] = str(key_dir / "worker.key_secret")
    listed = curve_stack.start_pool()
    curve_stack.env["TASKGATE_CURVE_KEY"] = str(key_dir / "stranger.key_secret")
    refused = curve_stack.start_pool()

    wait_for(lambda: not refused.alive(), timeout_s=30, what="the refused pool to stop")
    wait_for(
        lambda: curve_stack.store.client.zcard("taskgate:workers") == 1,
        timeout_s=10,
        what="only the listed pool to be recorded",
    )
    assert listed.alive()
    assert "refused" not in listed.log()


def test_a_client_key_without_the_broker_key_is_refused_at_start(settings, key_dir):
    lone_key = settings.model_copy(
        update={"curve_key": str(key_dir / "worker.key_secret")}
    )

    with pytest.raises(CurveConfigError, match="TASKGATE_CURVE_BROKER_KEY is not"):
        curve.client_keys(lone_key)


def test_a_standby_broker_with_unusable_keys_stops_at_start(
    make_stack, redis_server_instance, key_dir
):
    stack = make_stack(
        redis_server_instance.url(5),
        # The public file where the secret one belongs.
        TASKGATE_CURVE_BROKER_KEY=str(key_dir / "broker.key"),
        TASKGATE_CURVE_AUTHORIZED_DIR=str(key_dir.parent / "authorized"),
    )
    first = stack.env["TASKGATE_BROKER_FRONTEND"]
    standby = f"tcp://127.0.0.1:{redis_server.free_port()}"
    stack.env["TASKGATE_BROKER_FRONTEND"] = f"{first},{standby}"
    backend = stack.env["TASKGATE_BROKER_BACKEND"]
    standby = f"tcp://127.0.0.1:{redis_server.free_port()}"
    stack.env["TASKGATE_BROKER_BACKEND"] = f"{backend},{standby}"
    stack.env["TASKGATE_BROKER_BIND_FRONTEND"] = first
    stack.env["TASKGATE_BROKER_BIND_BACKEND"] = backend

    broker = stack.start_broker()
    try:
        wait_for(lambda: not broker.alive(), timeout_s=20, what="the broker to stop")
        assert broker.process.returncode == 1
        assert "holds no secret key" in broker.log(), broker.log()
        assert "standing by" not in broker.log()
    finally:
        stack.stop_all()
