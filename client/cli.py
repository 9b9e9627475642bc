"""``python -m client``: run, show, list and cancel tasks, and list workers.

The base URL comes from ``--url`` or ``TASKGATE_URL``, the key from ``--key`` or
``TASKGATE_API_KEY``. Exit codes: 0 done, 1 a problem answer or an unreachable
server (one line on stderr), 2 a usage error, 3 ``run`` gave up waiting (the
task goes on; its id is on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from client.api import Client, result_of
from client.errors import ProblemError, TaskgateError, WaitTimeoutError
from client.progress import ProgressBar

DEFAULT_URL = "http://127.0.0.1:8000"
# How often `run` asks for news of a task's progress, in seconds.
PROGRESS_POLL_S = 0.25
EXIT_PROBLEM = 1
EXIT_WAIT_TIMEOUT = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, call the API, print the answer; return the exit code."""
    options = _parser().parse_args(argv)
    client = Client(options.url, api_key=options.key or None, timeout_s=options.timeout)
    try:
        with client:
            return int(options.command(client, options))
    except WaitTimeoutError as exc:
        sys.stderr.write(f"taskgate: {exc}; follow it with: show {exc.task_id}\n")
        return EXIT_WAIT_TIMEOUT
    except ProblemError as exc:
        task = f" (task {exc.task_id})" if exc.task_id else ""
        sys.stderr.write(f"taskgate: {exc}{task}\n")
        return EXIT_PROBLEM
    except TaskgateError as exc:
        sys.stderr.write(f"taskgate: {exc}\n")
        return EXIT_PROBLEM


def run_task(client: Client, options: argparse.Namespace) -> int:
    """Submit, draw progress on stderr while waiting, print the result on stdout."""
    bar = ProgressBar(sys.stderr)
    try:
        task = client.submit(options.name, **dict(options.arguments))
        bar.update(task)
        final = client.wait(
            task["id"], options.wait, on_update=bar.update, poll_s=PROGRESS_POLL_S
        )
    finally:
        bar.close()
    _print_json(result_of(final))
    return 0


def show_task(client: Client, options: argparse.Namespace) -> int:
    """Print one task resource."""
    _print_json(client.get(options.task_id))
    return 0


def list_tasks(client: Client, options: argparse.Namespace) -> int:
    """Print one line per task, newest first, and the cursor of the next page."""
    page = client.list(options.name, options.status, options.limit, options.cursor)
    for task in page["tasks"]:
        _print(
            f"{task['id']}  {task['status']:<9}  {task['created_at']}  {task['name']}"
        )
    if page.get("next_cursor"):
        _print(f"next page: --cursor {page['next_cursor']}")
    return 0


def cancel_task(client: Client, options: argparse.Namespace) -> int:
    """Cancel a task and print it."""
    _print_json(client.cancel(options.task_id))
    return 0


def list_workers(client: Client, options: argparse.Namespace) -> int:
    """Print one line per live worker pool."""
    for pool in client.workers():
        tasks = ",".join(pool.get("tasks", []))
        _print(
            f"{pool['id']}  {pool.get('host')}:{pool.get('pid')}  "
            f"processes={pool.get('processes')}  busy={len(pool.get('current_tasks', []))}"
            f"  done={pool.get('tasks_done')}  tasks={tasks}"
        )
    return 0


def parse_argument(text: str) -> tuple[str, Any]:
    """``key=value``: the value as JSON when it is JSON (``3``, ``[1]``), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m client", description="Call a taskgate API."
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("TASKGATE_URL", DEFAULT_URL),
        help="base URL of the API (TASKGATE_URL; default %(default)s)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("TASKGATE_API_KEY"),
        help="bearer key (TASKGATE_API_KEY)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds each HTTP exchange may take beyond its wait",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a task, show progress, print its result")
    run.add_argument("name")
    run.add_argument("arguments", nargs="*", type=parse_argument, metavar="key=value")
    run.add_argument("--wait", type=float, default=60.0, help="seconds to wait")
    run.set_defaults(command=run_task)

    show = commands.add_parser("show", help="print a task")
    show.add_argument("task_id", metavar="ID")
    show.set_defaults(command=show_task)

    listing = commands.add_parser("list", help="list tasks, newest first")
    listing.add_argument("--name")
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int)
    listing.add_argument("--cursor")
    listing.set_defaults(command=list_tasks)

    cancel = commands.add_parser("cancel", help="cancel a task")
    cancel.add_argument("task_id", metavar="ID")
    cancel.set_defaults(command=cancel_task)

    workers = commands.add_parser("workers", help="list live worker pools")
    workers.set_defaults(command=list_workers)
    return parser


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")


def _print_json(value: Any) -> None:
    _print(json.dumps(value, indent=2, ensure_ascii=False))
