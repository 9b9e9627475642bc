"""``bin/run``'s runner (tools.stack) as a real process: it leaves nothing behind.

Each test starts ``python -m tools.stack`` on free ports against the session's
Redis, then makes honcho fail to stop the stack, and checks that no web, broker
or worker process outlives tools.stack.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from tests.conftest import stack_env
from tests.helpers import ManagedProcess, python_args, run_bin_run, wait_for

pytestmark = pytest.mark.slow


def _echoes(url: str) -> bool:
    try:
        response = requests.post(url, json={}, params={"wait": "2"}, timeout=5)
    except requests.ConnectionError:
        return False
    return response.status_code == 200


@pytest.fixture
def running_stack(
    redis_server_instance, tmp_path: Path
) -> Iterator[tuple[ManagedProcess, list[psutil.Process]]]:
    """tools.stack once a task has run, and every process under it then."""
    env = stack_env(redis_server_instance.url(6), TASKGATE_WORKER_PROCESSES="2")
    stack = ManagedProcess("stack", python_args("-m", "tools.stack"), env, tmp_path)
    started: list[psutil.Process] = []
    try:
        echo = f"http://127.0.0.1:{env['PORT']}/v1/tasks/echo"
        wait_for(lambda: _echoes(echo), timeout_s=60, interval_s=0.2, what="a task")
        for process in psutil.Process(stack.pid).children(recursive=True):
            process.info = {"cmdline": " ".join(process.cmdline())}
            started.append(process)
        yield stack, started
    finally:
        stack.stop()
        for process in started:  # a failed test leaves no orphan either
            if process.is_running():
                process.kill()


def _honcho(stack: ManagedProcess) -> psutil.Process:
    (honcho,) = [
        child
        for child in psutil.Process(stack.pid).children()
        if "honcho" in child.cmdline()
    ]
    return honcho


def _assert_all_stopped(stack: ManagedProcess, started: list[psutil.Process]) -> None:
    stack.process.wait(40)
    names = {process.pid: process.info["cmdline"] for process in started}
    _, alive = psutil.wait_procs(started, timeout=5)
    assert [names[process.pid] for process in alive] == []
    assert any("gunicorn" in name for name in names.values())
    assert any("worker.broker" in name for name in names.values())


def test_a_killed_honcho_leaves_no_process_running(running_stack):
    stack, started = running_stack
    _honcho(stack).kill()

    _assert_all_stopped(stack, started)


def test_a_stuck_honcho_on_ctrl_c_leaves_no_process_running(running_stack):
    """As with ``bin/run | tee``: tee is gone, honcho never TERMs its children."""
    stack, started = running_stack
    _honcho(stack).suspend()  # it neither stops the others nor exits

    os.kill(stack.pid, signal.SIGINT)

    _assert_all_stopped(stack, started)


def test_a_bad_setting_stops_bin_run_in_one_line_before_anything_starts(
    redis_server_instance,
):
    env = stack_env(redis_server_instance.url(6), PORT="abc")
    run, stdout, stderr = run_bin_run(env)

    assert run.returncode == 1
    assert stdout == ""
    (line,) = stderr.strip().splitlines()
    assert line.startswith("taskgate: invalid setting PORT: ")
