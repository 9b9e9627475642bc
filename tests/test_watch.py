"""The pub/sub listeners of the web process: who wakes, and which channels they hear.

Each check runs in its own gevent-patched process (tests.green_watch_checks), as
the watcher does inside a gunicorn gevent worker, against a Redis of its own:
channels are server-wide, so the shared test Redis may have other subscribers.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tools import redis_server

# The CHECKS of tests.green_watch_checks; not imported here, as importing it
# patches this process.
CHECK_NAMES = ["change_channel_on_demand", "fan_out"]


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_watcher_check(tmp_path, name):
    port = redis_server.free_port()
    server = redis_server.start(port, tmp_path / "redis")
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.green_watch_checks",
                f"redis://127.0.0.1:{port}/0",
                name,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.terminate()
        server.wait(10)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ok {name}"
