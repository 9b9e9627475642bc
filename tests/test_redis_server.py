"""The private Redis of bin/run and the tests: one port, one data directory each."""

from __future__ import annotations

import pytest
import redis

from tests.conftest import stack_env
from tests.helpers import run_bin_run
from tools import redis_server

pytestmark = pytest.mark.slow


@pytest.fixture
def first(tmp_path):
    port = redis_server.free_port()
    process = redis_server.start(port, tmp_path / "first", durable=True)
    yield port, process
    process.terminate()
    process.wait(10)


def test_a_taken_port_is_refused_not_mistaken_for_our_server(first, tmp_path):
    port, _ = first

    with pytest.raises(redis_server.PortInUseError, match=f"port {port} "):
        redis_server.start(port, tmp_path / "second", durable=True)


def test_a_data_directory_serves_one_server_at_a_time(first, tmp_path):
    _, process = first
    other_port = redis_server.free_port()

    with pytest.raises(redis_server.DataDirInUseError, match="first"):
        redis_server.start(other_port, tmp_path / "first", durable=True)

    process.terminate()
    process.wait(10)
    again = redis_server.start(other_port, tmp_path / "first", durable=True)
    try:
        with redis.Redis(port=other_port, socket_timeout=5) as client:
            assert client.ping()
    finally:
        again.terminate()
        again.wait(10)


def test_bin_run_says_in_one_line_that_the_redis_port_is_taken(first):
    port, _ = first
    env = stack_env("unused")
    del env["REDIS_URL"]

    run, stdout, stderr = run_bin_run(env, "--redis-port", str(port))

    assert run.returncode != 0
    assert "embedded Redis at" not in stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert f"port {port} is in use" in lines[0]
    assert "--redis-port" in lines[0]
    assert "REDIS_URL" in lines[0]
