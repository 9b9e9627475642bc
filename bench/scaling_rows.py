"""The CPU-bound scaling rows: taskgate's ``hash`` task on 1, 2 and N processes.

Each process count gets a fresh worker pool behind the same web processes and
broker, and wrk keeps two requests per worker process in flight so no process
waits for work. Efficiency is tasks/s over the single-process rate times the
process count (1.00 is perfectly linear). On a 2-core machine the web processes,
the broker, Redis and wrk share the cores with the workers, which caps it.
"""

from __future__ import annotations

import json
import logging

from bench import probe, wrk
from bench.http_rows import measure
from bench.plan import Plan
from bench.results import Row
from bench.taskgate import Taskgate

logger = logging.getLogger(__name__)

IN_FLIGHT_PER_PROCESS = 2
HASH_TIMEOUT_S = 60


def scaling_rows(taskgate: Taskgate, plan: Plan) -> list[Row]:
    """tasks/s of the hash task per worker process count, and the efficiency."""
    arguments = {"megabytes": plan.hash_megabytes}
    rows = []
    for processes in plan.scaling_processes:
        taskgate.restart_pool(processes)
        taskgate.wait_serving("hash", {"megabytes": 1})
        _check_hash(taskgate.base_url, arguments)
        row = Row(
            f"scaling@{processes}",
            f"taskgate hash {plan.hash_megabytes} MiB, {processes} worker process(es)",
            "tasks/s",
            baseline=f"scaling@{plan.scaling_processes[0]}",
            baseline_scale=processes / plan.scaling_processes[0],
        )
        row.notes.append("ratio = efficiency vs linear")
        load = wrk.Load(
            taskgate.base_url + "/v1/tasks/hash",
            "POST",
            json.dumps(arguments),
            IN_FLIGHT_PER_PROCESS * processes,
            plan.wrk_threads,
            plan.duration_s,
            HASH_TIMEOUT_S,
        )
        rows.append(measure(row, load, plan, meter=taskgate.meter()))
    return rows


def _check_hash(base_url: str, arguments: dict[str, int]) -> None:
    answer = probe.call("POST", base_url + "/v1/tasks/hash", arguments, HASH_TIMEOUT_S)
    body = probe.expect(answer, 200, "taskgate hash")
    result = body.get("result") or {}
    probe.expect_equal(
        result.get("megabytes"), arguments["megabytes"], "hash megabytes"
    )
    probe.expect_equal(len(result.get("sha256", "")), 64, "hash digest length")
