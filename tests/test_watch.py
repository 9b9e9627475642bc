"""The pub/sub listeners of the web process: who wakes, and which channels they hear.

Each check runs in its own gevent-patched process (tests.green_watch_checks) against
the test Redis, as the watcher does inside a gunicorn gevent worker.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

# The CHECKS of tests.green_watch_checks; not imported here, as importing it
# patches this process.
CHECK_NAMES = ["change_channel_on_demand", "fan_out"]


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_watcher_check(redis_server_instance, name):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.green_watch_checks",
            redis_server_instance.url(0),
            name,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ok {name}"
