"""The command line as a subprocess against a real stack."""

from __future__ import annotations

import io
import json
import re
import subprocess

import pytest

from client.cli import parse_argument
from client.progress import ProgressBar, describe
from tests.helpers import ROOT, python_args

pytestmark = pytest.mark.slow


def cli(stack, *args, timeout_s=60):
    env = {"TASKGATE_URL": stack.base_url, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        python_args("-m", "client", *args),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_cli_run_prints_the_result_and_draws_progress(stack):
    done = cli(stack, "run", "countdown", "steps=3", "interval_s=0.4", "--wait", "30")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"steps": 3}
    counts = set(re.findall(r" (\d+)/3 ", done.stderr))
    assert len(counts - {"3"}) >= 2, done.stderr  # the bar moved while the task ran
    assert done.stderr.rstrip().splitlines()[-1].startswith("succeeded")


def test_cli_unknown_task_prints_one_line_and_fails(stack):
    done = cli(stack, "run", "no-such-task")

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "404 Unknown task" in done.stderr


def test_cli_run_wait_timeout_exits_3_and_names_the_task(stack):
    done = cli(stack, "run", "sleep", "seconds=3", "--wait", "0.3")

    assert done.returncode == 3
    task_id = done.stderr.rsplit("show ", 1)[1].strip()
    assert cli(stack, "cancel", task_id).returncode == 0


def test_cli_show_list_and_workers(stack):
    ran = cli(stack, "run", "echo", "tag=cli-listed")
    assert json.loads(ran.stdout) == {"tag": "cli-listed"}

    listed = cli(stack, "list", "--name", "echo", "--status", "succeeded")
    assert listed.returncode == 0
    task_id = listed.stdout.split()[0]
    shown = cli(stack, "show", task_id)
    assert json.loads(shown.stdout)["id"] == task_id
    workers = cli(stack, "workers")
    assert workers.returncode == 0 and "echo" in workers.stdout


def test_cli_parse_argument_reads_json_values_else_strings():
    assert parse_argument("n=3") == ("n", 3)
    assert parse_argument("xs=[1, 2]") == ("xs", [1, 2])
    assert parse_argument("word=hello") == ("word", "hello")
    assert parse_argument("empty=") == ("empty", "")


def test_cli_progress_line_shows_bar_and_counts():
    task = {"status": "running", "progress": {"current": 1, "total": 4, "message": "x"}}

    line = describe(task)

    assert line.startswith("running [") and line.endswith(" 1/4 x")
    assert describe({"status": "queued", "progress": None}) == "queued"


def test_cli_failed_task_names_its_id(stack):
    done = cli(stack, "run", "fail", "message=boom")

    assert done.returncode == 1
    assert "500 Task failed: RuntimeError: boom (task " in done.stderr


def test_cli_progress_bar_redraws_in_place_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    bar = ProgressBar(screen)
    bar.update({"status": "running", "progress": {"current": 1, "total": 2}})
    bar.update({"status": "running", "progress": {"current": 1, "total": 2}})
    bar.update({"status": "succeeded", "progress": None})
    bar.close()

    frames = screen.getvalue().split("\r")[1:]
    assert len(frames) == 2  # the unchanged state was not drawn again
    assert frames[1].rstrip(" \n") == "succeeded" and frames[1].endswith("\n")
